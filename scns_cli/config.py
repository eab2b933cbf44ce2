"""Where the server is and who we are: `SCNS_*` variables, else the config file, else defaults.

The file is `$XDG_CONFIG_HOME/scns/config.toml` (`~/.config/scns/config.toml` without it):

    url = "https://scns.example.org"
    token = "..."
    account = "project_alpha"    # the default of submit --account
    partition = "default"        # the default of submit --partition
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scns_cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"  # where `./just up` serves the API
DEFAULT_PARTITION = "default"  # the partition of the nodes `./just up` starts
KEYS = ("url", "token", "account", "partition")
ENVIRONMENT = {key: f"SCNS_{key.upper()}" for key in KEYS}
DEFAULTS = {"url": DEFAULT_URL, "token": None, "account": None, "partition": DEFAULT_PARTITION}


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "scns" / "config.toml"


@dataclass
class Config:
    url: str
    token: str | None
    account: str | None
    partition: str
    path: Path
    sources: dict[str, str] = field(default_factory=dict)  # key -> "SCNS_URL", "config file" or "default"
    warnings: list[str] = field(default_factory=list)

    def shown(self) -> dict[str, object]:
        """What `scns config` prints: the token masked."""
        token = self.token
        masked = f"{token[:4]}…{token[-4:]}" if token and len(token) > 12 else ("…" if token else None)
        return {"config_file": str(self.path), "config_file_exists": self.path.exists(),
                **{key: {"value": masked if key == "token" else getattr(self, key), "from": self.sources[key]}
                   for key in KEYS}}


def read_file(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as error:
        raise CliError(f"config file {path}: not valid TOML ({error})") from None
    except OSError as error:
        raise CliError(f"config file {path}: {error.strerror or error}") from None
    unknown = sorted(set(document) - set(KEYS))
    if unknown:
        raise CliError(f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    for key, value in document.items():
        if not isinstance(value, str):
            raise CliError(f"config file {path}: {key} must be a string")
    return document


def load(env: Mapping[str, str] = os.environ) -> Config:
    """The environment wins over the file, the file over the defaults."""
    path = config_path(env)
    document = read_file(path)
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        if env.get(ENVIRONMENT[key]):
            values[key], sources[key] = env[ENVIRONMENT[key]], ENVIRONMENT[key]
        elif document.get(key):
            values[key], sources[key] = document[key], "config file"
        else:
            values[key], sources[key] = DEFAULTS[key], "default"
    warnings = []
    if "token" in document:
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                warnings.append(f"config file {path} holds a token but others may read it: chmod 600 {path}")
        except OSError:
            pass
    return Config(url=values["url"], token=values["token"], account=values["account"], partition=values["partition"],
                  path=path, sources=sources, warnings=warnings)


def write_value(path: Path, key: str, value: str | None) -> None:
    """Set (or with None remove) one key of the config file, keeping the others; mode 600 (it may
    hold a token)."""
    if key not in KEYS:
        raise CliError(f"unknown config key {key!r} (known: {', '.join(KEYS)})")
    document = read_file(path)
    if value is None:
        document.pop(key, None)
    else:
        document[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{name} = {toml_string(document[name])}\n" for name in KEYS if name in document)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(value, ensure_ascii=True)
