"""What every service's `__main__` does: configure logging, run until SIGTERM/SIGINT, exit cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from shared.bus import LogBehindReadModel
from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging
from shared.telemetry import Telemetry


def run_service(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]], with_metrics: bool = False) -> None:
    """Run `main(settings, stop)` until it returns; SIGTERM/SIGINT set `stop`."""
    configure_logging(name)
    try:
        settings = load_settings()
    except ConfigError as error:
        sys.exit(f"{name}: {error}")

    async def guarded() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(settings, stop)

    telemetry = Telemetry(f"scns-{name}", with_metrics=with_metrics)
    try:
        asyncio.run(guarded())
    except (ConnectionError, ConfigError, LogBehindReadModel) as error:
        sys.exit(f"{name}: {error}")
    finally:
        telemetry.shutdown()  # what is still buffered is exported


async def until_stopped(stop: asyncio.Event, *tasks: Awaitable[None]) -> None:
    """Run the service's loops until `stop` is set or one of them fails (which is then raised)."""
    running = [asyncio.ensure_future(task) for task in tasks]
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *running], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper:
                task.result()
    finally:
        for task in [stopper, *running]:
            task.cancel()
        await asyncio.gather(stopper, *running, return_exceptions=True)
