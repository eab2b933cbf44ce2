"""The executor's walk to a job's folders and files: never through a symlink, never outside the
job roots, never onto another user's file (run as root, the executor would otherwise follow them)."""

import os
import stat

import pytest

from services.executor.adapters.files import Owner, UnsafePath, components, make_workdir, open_log, open_output, permits

UMASK = 0o077


@pytest.fixture
def root(tmp_path):
    return str(tmp_path.resolve())


@pytest.fixture
def me():
    return Owner(os.geteuid(), os.getegid(), tuple(os.getgroups()))


def test_components_refuse_what_leaves_the_roots():
    assert components("/jobs/a/b", ["/jobs"]) == ("/jobs", ["a", "b"])
    assert components("/jobs/a/../b", ["/jobs"]) == ("/jobs", ["b"])
    assert components("/jobs", ["/jobs"]) == ("/jobs", [])
    for escape in ("/jobs/../etc/passwd", "/etc/passwd", "/jobsmore/x", "relative/x"):
        with pytest.raises(UnsafePath):
            components(escape, ["/jobs"])


def test_permissions_as_the_kernel_decides_them_without_acls():
    alice = Owner(1000, 1000, (1000, 50))
    assert permits(0o700, 1000, 0, alice, 0o3) and not permits(0o500, 1000, 0, alice, 0o3)
    assert permits(0o070, 0, 50, alice, 0o3) and not permits(0o700, 0, 50, alice, 0o1)
    assert permits(0o1777, 0, 0, alice, 0o3) and not permits(0o755, 0, 0, alice, 0o2)
    assert not permits(0o077, 1000, 1000, alice, 0o1)  # the owner's bits count, not the group's or others'
    assert permits(0o000, 5, 5, Owner(0, 0), 0o3)


def test_the_workdir_and_output_are_made_for_the_job_with_the_umask(root, me):
    os.close(make_workdir(f"{root}/a/b", [root], me, UMASK))
    assert stat.S_IMODE(os.stat(f"{root}/a/b").st_mode) == 0o700
    descriptor = open_output(f"{root}/a/b/logs/out.txt", [root], me, UMASK)
    os.write(descriptor, b"hello")
    os.close(descriptor)
    status = os.stat(f"{root}/a/b/logs/out.txt")
    assert stat.S_IMODE(status.st_mode) == 0o600 and status.st_uid == me.uid
    again = open_output(f"{root}/a/b/logs/out.txt", [root], me, UMASK)  # an existing file of the job: emptied
    os.close(again)
    assert os.path.getsize(f"{root}/a/b/logs/out.txt") == 0
    with open(open_log(f"{root}/a/b/logs/out.txt", [root], me), "rb") as file:
        assert file.read() == b""


@pytest.mark.parametrize("opener", ["output", "log"])
def test_a_final_symlink_is_never_followed(root, me, tmp_path, opener):
    victim = tmp_path / "victim.txt"
    victim.write_text("secret")
    os.symlink(victim, f"{root}/out.txt")
    with pytest.raises(UnsafePath, match="out.txt"):
        if opener == "output":
            open_output(f"{root}/out.txt", [root], me, UMASK)
        else:
            open_log(f"{root}/out.txt", [root], me)
    assert victim.read_text() == "secret"


@pytest.mark.parametrize("what", ["workdir", "output", "log"])
def test_a_symlinked_folder_on_the_way_is_refused(root, me, tmp_path, what):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "out.txt").write_text("secret")
    os.mkdir(f"{root}/job")
    os.symlink(elsewhere, f"{root}/job/sub")
    with pytest.raises(UnsafePath, match="symlink"):
        if what == "workdir":
            make_workdir(f"{root}/job/sub/deeper", [root], me, UMASK)
        elif what == "output":
            open_output(f"{root}/job/sub/out.txt", [root], me, UMASK)
        else:
            open_log(f"{root}/job/sub/out.txt", [root], me)
    assert (elsewhere / "out.txt").read_text() == "secret" and not (elsewhere / "deeper").exists()


def test_a_hard_link_or_a_fifo_is_not_an_output_file(root, me, tmp_path):
    (tmp_path / "other").write_text("secret")
    os.link(tmp_path / "other", f"{root}/linked")
    os.mkfifo(f"{root}/fifo")
    for name in ("linked", "fifo"):
        with pytest.raises(UnsafePath, match="not a regular file"):
            open_output(f"{root}/{name}", [root], me, UMASK)
        with pytest.raises(UnsafePath):
            open_log(f"{root}/{name}", [root], me)
    assert (tmp_path / "other").read_text() == "secret"


def test_a_file_of_another_user_is_neither_written_nor_read(root, me):
    os.chmod(root, 0o755)
    with open(f"{root}/theirs", "w") as file:
        file.write("secret")
    someone_else = Owner(me.uid + 1, me.gid + 1)
    with pytest.raises(UnsafePath, match="not a regular file of the job's user"):
        open_log(f"{root}/theirs", [root], someone_else)
    with pytest.raises(UnsafePath, match="not a regular file of the job's user"):
        open_output(f"{root}/theirs", [root], someone_else, UMASK)
    with open(f"{root}/theirs") as file:
        assert file.read() == "secret"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes folders for another user")
def test_root_makes_the_folders_and_files_for_the_jobs_user_and_respects_its_permissions(root):
    os.chmod(root, 0o1777)
    nobody = Owner(65534, 65534)
    os.close(make_workdir(f"{root}/job", [root], nobody, UMASK))
    descriptor = open_output(f"{root}/job/out.txt", [root], nobody, UMASK)
    os.close(descriptor)
    for path in (f"{root}/job", f"{root}/job/out.txt"):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (65534, 65534)
    os.mkdir(f"{root}/roots-own", 0o700)  # not the job user's to enter, though root could
    with pytest.raises(UnsafePath, match="may not enter"):
        make_workdir(f"{root}/roots-own/job", [root], nobody, UMASK)
    os.chmod(f"{root}/roots-own", 0o755)  # to enter, not to write to
    with pytest.raises(UnsafePath, match="may not write"):
        open_output(f"{root}/roots-own/out.txt", [root], nobody, UMASK)
    assert os.listdir(f"{root}/roots-own") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes folders for another user")
@pytest.mark.parametrize("put_in_place", ["a-folder-with-files", "another-users-folder"])
def test_a_folder_renamed_into_place_of_one_just_made_is_not_given_to_the_job(root, monkeypatch, put_in_place):
    os.chmod(root, 0o1777)
    nobody, daemon = Owner(65534, 65534), 1
    other = f"{root}/other"
    os.mkdir(other, 0o700)
    if put_in_place == "a-folder-with-files":
        open(f"{other}/secret", "w").close()  # root's, with contents
    else:
        os.chown(other, daemon, daemon)  # another user's (empty)
    real_mkdir = os.mkdir

    def mkdir_then_swapped(path, mode=0o777, *, dir_fd=None):
        real_mkdir(path, mode, dir_fd=dir_fd)
        if path == "job":  # the job wins the race: its folder replaces the one just made
            os.rename(other, f"{root}/job")

    monkeypatch.setattr(os, "mkdir", mkdir_then_swapped)
    with pytest.raises(UnsafePath, match="replaced"):
        make_workdir(f"{root}/job", [root], nobody, UMASK)
    assert os.stat(f"{root}/job").st_uid == (0 if put_in_place == "a-folder-with-files" else daemon)
