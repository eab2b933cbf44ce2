"""Where a job's files may be: inside the configured job roots."""

from __future__ import annotations

import os.path
import posixpath


def resolve_output_path(cwd: str, path: str, job_id: int) -> str:
    """An output file's absolute path: relative to the cwd, with Slurm's %j as the job id."""
    expanded = path.replace("%j", str(job_id))
    return posixpath.normpath(posixpath.join(cwd, expanded))


def within_roots(path: str, roots: list[str]) -> bool:
    """Whether `path`, with `..` and symlinks resolved, lies inside one of the (resolved) roots."""
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)
