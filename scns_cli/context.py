"""What a command runs with: its streams, the environment, the configuration and the API client."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from scns_cli import config as configuration
from scns_cli.client import Api
from scns_cli.render import Style


def colour_wanted(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (to anything) or TERM=dumb."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and "NO_COLOR" not in env and env.get("TERM") != "dumb"


@dataclass
class Context:
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    json: bool = False
    _config: configuration.Config | None = None
    _api: Api | None = None

    @property
    def config(self) -> configuration.Config:
        if self._config is None:
            self._config = configuration.load(self.env)
            for warning in self._config.warnings:
                self.warn(warning)
        return self._config

    @property
    def api(self) -> Api:
        if self._api is None:
            config = self.config
            hint = "SCNS_TOKEN" if config.sources["token"] != "config file" else f"`token` in {config.path}"
            self._api = Api(config.url, config.token, token_hint=hint)
        return self._api

    @property
    def style(self) -> Style:
        return Style(colour_wanted(self.stdout, self.env))

    @property
    def interactive(self) -> bool:
        """Whether stdout is a terminal (tables fit its width, redraws clear it)."""
        return isatty(self.stdout)

    def width(self) -> int | None:
        """The terminal's width when stdout is one (tables are cut to it), else None (never cut)."""
        return shutil.get_terminal_size().columns if self.interactive else None

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def warn(self, text: str) -> None:
        print(f"scns: warning: {text}", file=self.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"scns: {text}", file=self.stderr, flush=True)

    def emit_json(self, document: Any, lines: bool = False) -> None:
        """Pretty JSON; one line per document when `lines` (streams: NDJSON)."""
        text = json.dumps(document, ensure_ascii=False, indent=None if lines else 2)
        print(text, file=self.stdout, flush=True)


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
