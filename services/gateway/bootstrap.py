"""Wires the gateway: settings to the Litestar app (with its request headers), served by uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from services.gateway.app import create_asgi_app
from shared.config import ConfigError, load_settings
from shared.logs import configure_logging
from shared.telemetry import Tracing


def main() -> None:
    configure_logging("gateway")
    tracing = Tracing("scns-gateway")
    try:
        settings = load_settings()
        app = create_asgi_app(settings, traced=tracing.enabled)
    except (ConfigError, ValueError) as error:
        sys.exit(f"gateway: {error}")
    try:
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False)
    finally:
        tracing.shutdown()
