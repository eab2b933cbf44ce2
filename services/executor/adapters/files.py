"""A job's folders and output files, made and opened one path component at a time, never
through a symlink: the executor runs as root, and a job could otherwise point a folder or an
output file of its own at another user's file between the check of a path and its use."""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import stat
from dataclasses import dataclass

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SEARCH, _WRITE = 0o1, 0o2  # the permission bits of "other"; shifted for owner and group


class UnsafePath(ValueError):
    """A job's path leaves the job roots, goes through a symlink, or names a file that is not the job's."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Whom a job's files belong to: the OS user its account is mapped to."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def permits(mode: int, file_uid: int, file_gid: int, owner: Owner, wanted: int) -> bool:
    """Whether `owner` has the `wanted` bits (_SEARCH, _WRITE) on a file of that mode and owners,
    as the kernel decides it without ACLs (root may do anything)."""
    if owner.uid == 0:
        return True
    if file_uid == owner.uid:
        return mode >> 6 & wanted == wanted
    if file_gid == owner.gid or file_gid in owner.groups:
        return mode >> 3 & wanted == wanted
    return mode & wanted == wanted


def components(path: str, roots: list[str]) -> tuple[str, list[str]]:
    """The job root holding `path` (absolute; `..` resolved lexically) and the names below it."""
    if not posixpath.isabs(path):
        raise UnsafePath(f"{path} is not an absolute path")
    normal = posixpath.normpath(path)
    for root in sorted(roots, key=len, reverse=True):
        if normal == root or normal.startswith(root.rstrip("/") + "/"):
            return root, [name for name in normal[len(root):].split("/") if name]
    raise UnsafePath(f"{path} is outside the job roots")


def make_workdir(path: str, roots: list[str], owner: Owner, umask: int) -> int:
    """Open the job's working directory (made, with its missing parents, for `owner`): its descriptor."""
    root, names = components(path, roots)
    return _walk(root, names, path, owner, umask)


def open_output(path: str, roots: list[str], owner: Owner, umask: int) -> int:
    """Open an output file for writing (emptied, or made for `owner` with the umask), its missing
    folders made for `owner`: its descriptor. An existing file must be a regular file of `owner`
    with no other name (a hard link to someone else's file is refused)."""
    root, names = components(path, roots)
    if not names:
        raise UnsafePath(f"output file {path} is a job root")
    folder = _walk(root, names[:-1], path, owner, umask)
    try:
        try:
            file = os.open(names[-1], os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        except FileNotFoundError:
            _require(os.fstat(folder), owner, _SEARCH | _WRITE, path)
            file = os.open(names[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                           0o666 & ~umask, dir_fd=folder)
            _give(file, owner)
            return file
        except OSError as error:
            raise _unsafe(error, f"output file {path}") from error
        try:
            _check_own_file(file, owner, f"output file {path}")
            os.ftruncate(file, 0)
            fcntl.fcntl(file, fcntl.F_SETFL, fcntl.fcntl(file, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except BaseException:
            os.close(file)
            raise
        return file
    finally:
        os.close(folder)


def open_log(path: str, roots: list[str], owner: Owner) -> int:
    """Open a job's output file for reading, only if it is a regular file of `owner`: its descriptor."""
    root, names = components(path, roots)
    if not names:
        raise UnsafePath(f"{path} is a job root")
    folder = _walk(root, names[:-1], path, owner, umask=None)
    try:
        file = os.open(names[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError as error:
        raise _unsafe(error, path) from error
    finally:
        os.close(folder)
    try:
        _check_own_file(file, owner, path)
    except BaseException:
        os.close(file)
        raise
    return file


def _walk(root: str, names: list[str], shown: str, owner: Owner, umask: int | None) -> int:
    """Descend from `root` through `names` without following a symlink; make the missing folders
    for `owner` when a umask is given. Each folder passed must let `owner` through."""
    folder = os.open(root, _DIRECTORY)
    try:
        _require(os.fstat(folder), owner, _SEARCH, shown)
        for name in names:
            child = _enter(folder, name, shown, owner, umask)
            os.close(folder)
            folder = child
            _require(os.fstat(folder), owner, _SEARCH, shown)
        return folder
    except BaseException:
        os.close(folder)
        raise


def _enter(folder: int, name: str, shown: str, owner: Owner, umask: int | None) -> int:
    try:
        return os.open(name, _DIRECTORY, dir_fd=folder)
    except FileNotFoundError:
        if umask is None:
            raise
    except OSError as error:
        raise _unsafe(error, shown) from error
    _require(os.fstat(folder), owner, _SEARCH | _WRITE, shown)
    os.mkdir(name, 0o777 & ~umask, dir_fd=folder)
    try:
        child = os.open(name, _DIRECTORY, dir_fd=folder)
    except OSError as error:  # replaced by a symlink since it was made
        raise _unsafe(error, shown) from error
    try:
        _check_just_made(child, shown)
        _give(child, owner)
    except BaseException:
        os.close(child)
        raise
    return child


def _check_just_made(folder: int, shown: str) -> None:
    """The folder opened is the one just made (ours, empty): the job may have renamed another
    folder into its place between the mkdir and the open, which must not be given to it."""
    status = os.fstat(folder)
    if status.st_uid != os.geteuid() or os.listdir(folder):
        raise UnsafePath(f"{shown}: a folder made for the job was replaced before it was opened: refused")


def _unsafe(error: OSError, shown: str) -> OSError:
    """ELOOP (a final symlink under O_NOFOLLOW), ENOTDIR (a symlink or file where a folder should
    be) and ENXIO (a FIFO or socket) say the path is not what it seems; other errors are kept."""
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return UnsafePath(f"{shown} goes through a symlink or a non-folder: refused")
    if error.errno == errno.ENXIO:
        return UnsafePath(f"{shown} is not a regular file: refused")
    return error


def _require(status: os.stat_result, owner: Owner, wanted: int, shown: str) -> None:
    if not permits(status.st_mode, status.st_uid, status.st_gid, owner, wanted):
        need = "write to" if wanted & _WRITE else "enter"
        raise UnsafePath(f"{shown}: the job's user (uid {owner.uid}) may not {need} a folder on its way")


def _check_own_file(file: int, owner: Owner, shown: str) -> None:
    status = os.fstat(file)
    if not stat.S_ISREG(status.st_mode) or status.st_uid != owner.uid or status.st_nlink != 1:
        raise UnsafePath(f"{shown} exists and is not a regular file of the job's user (uid {owner.uid})")


def _give(descriptor: int, owner: Owner) -> None:
    """A folder or file made for the job belongs to the job's user (already so when that is us)."""
    if owner.uid != os.geteuid():
        os.fchown(descriptor, owner.uid, owner.gid)


def in_memory_file(name: str, text: str) -> int:
    """A read-only descriptor of `text` held in memory (memfd) for a job to read through
    /proc/self/fd (its script, its environment): never on a disk, so there is no path another
    process could open and nothing to remove, and no inode made and freed per job."""
    descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        with open(descriptor, "w", encoding="utf-8", closefd=False) as file:
            file.write(text)
        os.fchmod(descriptor, 0o444)  # what a job's user opens it for: reading
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor
