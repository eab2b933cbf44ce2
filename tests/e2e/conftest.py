from __future__ import annotations

import httpx
import pytest

from shared.bus import JetStreamEventLog
from shared.embedded import free_port
from shared.stack import Stack, StackConfig

from .helpers import running_stack


@pytest.fixture(scope="session")
def stack(scratch) -> Stack:
    """The whole stack, as `up` runs it, with a 2-CPU node and a short kill grace period."""
    config = StackConfig(home=scratch / "stack", nats_port=free_port(), pg_port=free_port(), api_port=free_port(),
                         total_cpus=2, total_memory_mb=8192, kill_grace_seconds=2.0,
                         extra_env={"PROJECTION_STALL_SECONDS": "2", "HEARTBEAT_SECONDS": "0.5",
                                    "NODE_TIMEOUT_SECONDS": "3"})
    yield from running_stack(config)


@pytest.fixture
async def api(stack: Stack) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.config.api_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
async def log(stack: Stack) -> JetStreamEventLog:
    events = await stack.event_log("e2e-test")
    yield events
    await events.close()
