"""Where a job's files may be: inside the configured job roots."""

from __future__ import annotations

import os
import posixpath
import stat


def resolve_output_path(cwd: str, path: str, job_id: int) -> str:
    """An output file's absolute path: relative to the cwd, with Slurm's %j as the job id."""
    expanded = path.replace("%j", str(job_id))
    return posixpath.normpath(posixpath.join(cwd, expanded))


def within_roots(path: str, roots: list[str]) -> bool:
    """Whether `path`, with `..` and symlinks resolved, lies inside one of the (resolved) roots.

    Most paths need no full resolution (`realpath`: a system call for every component from `/`,
    three times a submit): under a root, with no `..`, a path whose existing components below the
    root are no symlinks resolves to itself. Anything else is resolved. (The executor checks again,
    symlink-safely, when the job starts: this check gives the client a clear 422, it is not the guard.)
    """
    return _plainly_inside(path, roots) or _resolved_inside(path, roots)


def _resolved_inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)


def _plainly_inside(path: str, roots: list[str]) -> bool:
    """True when `path` is its own resolution and lies inside a root; False when that is unsure."""
    if not posixpath.isabs(path) or ".." in path.split("/"):
        return False  # a `..` after a symlink goes up from the link's target, not from its folder
    path = posixpath.normpath(path)  # only `.` and repeated slashes go: they resolve to nothing
    for root in roots:  # resolved already: no symlink in them
        base = root.rstrip("/")
        if path == root:
            return True
        if not path.startswith(base + "/"):
            continue
        current = base
        for name in path[len(base) + 1:].split("/"):
            current = f"{current}/{name}"
            try:
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    return False
            except FileNotFoundError:
                return True  # nothing below exists, so there is nothing below to resolve
            except OSError:
                return False  # e.g. a file where a folder should be: the full answer decides
        return True
    return False
