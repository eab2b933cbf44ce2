"""An executor node installs `scns-conductor[executor]` only: none of the gateway's or projector's stack."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = {"litestar", "uvicorn", "psycopg", "psycopg_pool"}


def test_the_executor_imports_nothing_of_the_server_side():
    probe = (
        "import sys, services.executor.bootstrap; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {SERVER_SIDE!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_executor_extra_names_only_what_the_executor_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    executor_deps = project["dependencies"] + project["optional-dependencies"]["executor"]
    names = {dep.split("[")[0].split("=")[0].split(">")[0].replace("-", "_") for dep in executor_deps}
    assert not names & SERVER_SIDE and "psutil" in names and "nats_py" in names
    for dep in executor_deps:
        assert "==" in dep, f"{dep} is not pinned"
