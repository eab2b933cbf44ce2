"""The pure cores import no I/O: no asyncio, NATS, Litestar, psycopg, psutil, subprocess or clock."""

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"asyncio", "nats", "litestar", "psycopg", "psycopg_pool", "psutil", "subprocess", "time", "socket",
             "random", "os"}
CORE_FILES = sorted(Path(__file__).resolve().parents[2].glob("services/*/core/*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_core_module_imports_nothing_impure(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path} imports {imported & FORBIDDEN}"
    assert "datetime.now" not in path.read_text()


def test_there_are_cores_to_check():
    assert len(CORE_FILES) >= 5
