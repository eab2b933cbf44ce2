"""Wires the gateway: settings to the Litestar app (with its request headers), served by uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from services.gateway.app import create_asgi_app
from shared.config import ConfigError, load_settings
from shared.logs import configure_logging
from shared.telemetry import Telemetry


def main() -> None:
    configure_logging("gateway")
    telemetry = Telemetry("scns-gateway", with_metrics=True)
    try:
        settings = load_settings()
        app = create_asgi_app(settings, traced=telemetry.traced, metered=telemetry.metered)
    except (ConfigError, ValueError) as error:
        sys.exit(f"gateway: {error}")
    try:
        # Open /events streams never end by themselves: a stop gives them a few seconds, not forever.
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=3)
    finally:
        telemetry.shutdown()
