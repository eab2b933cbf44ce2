"""Requests and waits shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

from shared.stack import Stack, StackConfig

from ..conftest import eventually

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
ACCOUNT = "project_alpha"


def job(stack, script: str, *, time_limit: str = "10", cpus: int = 1, name: str = "test_job",
        account: str = ACCOUNT, **fields) -> dict:
    return {
        "job": {
            "account": account, "name": name, "partition": "default",
            "current_working_directory": str(stack.config.work_dir / "e2e"),
            "standard_output": "%j.out", "standard_error": "%j.err", "time_limit": time_limit,
            "cpus_per_task": cpus, **fields,
        },
        "script": script,
    }


async def submit(api, body: dict, **headers) -> str:
    response = await api.post("/jobs/submit", json=body, headers=headers)
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    # Acknowledged means queryable: never a 404, not even before the projection has it.
    assert (await api.get(f"/jobs/query/{job_id}", headers=headers)).status_code == 200
    return job_id


async def until_state(api, job_id: str, states: set[str], timeout: float = 60.0, **headers) -> dict:
    async def check():
        response = await api.get(f"/jobs/query/{job_id}", headers=headers)  # a 503 while a dependency restarts
        return response.json() if response.status_code == 200 and response.json()["state"] in states else None

    return await eventually(check, timeout, what=f"job {job_id} to reach {states}")


def running_stack(config: StackConfig) -> Iterator[Stack]:
    """A fixture's stack: started, then stopped; and every service did its work within its NATS
    permissions — a missing grant shows up only as a permission violation in its log (and a
    retry or a timeout), so the logs are looked at once it has stopped."""
    stack = Stack(config).start()
    yield stack
    stack.stop()
    refused = [f"{log.name}: {line}" for log in stack.logs.glob("*.log") if log.name != "nats-server.log"
               for line in log.read_text(errors="replace").splitlines() if "permissions violation" in line.lower()]
    assert not refused, "\n".join(refused[:20])
