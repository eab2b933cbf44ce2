"""The check that a submitted path resolves inside the job roots answers as resolving the path
would, and resolves nothing for a plain path."""

import os

import pytest

from shared import paths
from shared.paths import within_roots


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "jobs" / "deep").mkdir(parents=True)
    (root / "jobs" / "file").write_text("")
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "inner").symlink_to(root / "jobs")
    (root / "jobs" / "up").symlink_to(root / "jobs" / "deep")
    return tmp_path, [os.path.realpath(root)]


CASES = ["root", "root/", "root/jobs", "root/jobs/deep/x", "root/jobs/new/dir/out-0.txt", "root/./jobs//deep",
         "root/escape", "root/escape/sub", "root/inner/deep", "root/jobs/up/..", "root/jobs/up/../../..",
         "root/jobs/deep/../../../outside", "root/jobs/file/x", "rootx", "outside", "root/../root/jobs", ""]


@pytest.mark.parametrize("case", CASES)
def test_the_answer_is_that_of_resolving_the_path(tree, case):
    base, roots = tree
    path = f"{base}/{case}"
    assert within_roots(path, roots) == paths._resolved_inside(path, roots)


def test_symlinks_out_of_the_roots_are_refused(tree):
    base, roots = tree
    assert not within_roots(f"{base}/root/escape/sub", roots)
    assert not within_roots(f"{base}/root/jobs/up/../../../outside", roots)
    assert within_roots(f"{base}/root/inner/deep", roots)  # a link that stays inside is fine


def test_a_plain_path_is_not_resolved(tree, monkeypatch):
    base, roots = tree

    def refuse(path, roots):
        raise AssertionError(f"resolved {path}")

    monkeypatch.setattr(paths, "_resolved_inside", refuse)
    for case in ("root/jobs", "root/jobs/deep/out-0.txt", "root/jobs/new/dir/x", "root"):
        assert within_roots(f"{base}/{case}", roots)
