"""The stack as `up` runs it, from a job's side: under root, a job runs as the stack's job user
and reaches none of the stack's secrets or state (NATS credentials, the admin token, the
database's password and files, the executor's journal)."""

from __future__ import annotations

import os

import pytest

from shared.stack import JOB_USER

from .helpers import job, submit, until_state

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as another user only under a root executor")]


async def test_a_job_runs_as_the_job_user_and_reaches_none_of_the_stacks_secrets(api, stack):
    home = stack.config.home
    secrets = [home / "nats-credentials" / "admin.json", home / "admin-token", home / "pg-password",
               stack.postgres.data_dir / "PG_VERSION", stack.config.executor_state_dir / "jobs"]
    script = "id -un; id -u\n" + "".join(f"[ -r '{path}' ] && echo 'reached {path}'\n" for path in secrets)
    job_id = await submit(api, job(stack, script))
    detail = await until_state(api, job_id, {"COMPLETED", "FAILED"})
    user, uid, *reached = detail["job_log"]["stdout"].splitlines()
    assert (user, uid) == (JOB_USER, str(os.stat(stack.config.work_dir / "e2e" / f"{job_id}.out").st_uid))
    assert uid != "0"
    assert reached == []  # each path printed here was readable by the job
    assert all(path.exists() for path in secrets)  # (they are there: the job was refused, not misled)
