"""Whether a submitted path resolves inside the job roots, cheaply in the usual case.

`shared.paths.within_roots` resolves the whole path (`realpath`: a system call for every component
from `/`, in Python), three times a submit. Most paths need less: under a resolved root, with no
`..`, a path whose existing components below the root are no symlinks resolves to itself. Anything
else is resolved as before, so the answer is always `within_roots`'. (The executor checks again,
symlink-safely, when the job starts: this check gives the client a clear 422, it is not the guard.)
"""

from __future__ import annotations

import os
import posixpath
import stat

from shared.paths import within_roots


def within_roots_quickly(path: str, roots: list[str]) -> bool:
    return _plainly_inside(path, roots) or within_roots(path, roots)


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
