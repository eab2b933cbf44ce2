import pytest

from shared.paths import resolve_output_path, within_roots
from shared.slurm_formats import FormatError, format_elapsed, format_limit, parse_memory_mb, parse_time_limit


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("0", 0), ("UNLIMITED", 0), ("infinite", 0), ("1:30", 5400), ("1:30:15", 5415),
    ("2-3", 2 * 86400 + 3 * 3600), ("2-3:04", 2 * 86400 + 3 * 3600 + 240), ("1-0:0:5", 86405),
])
def test_time_limit_grammar(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", ["-5", "+5", "1_0", "1:60", "1:00:60", "1-24", "abc", "", "1:2:3:4", "1.5"])
def test_time_limit_rejects(text):
    with pytest.raises(FormatError):
        parse_time_limit(text)


@pytest.mark.parametrize("seconds, shown", [
    (1800, "30:00"), (300, "5:00"), (3, "0:03"), (5400, "1:30:00"), (86400, "1-00:00:00"), (0, "UNLIMITED"),
])
def test_limit_display(seconds, shown):
    assert format_limit(seconds) == shown


def test_elapsed_display():
    assert format_elapsed(0) == "0-00:00:00"
    assert format_elapsed(320) == "0-00:05:20"
    assert format_elapsed(90061) == "1-01:01:01"


@pytest.mark.parametrize("text, mb", [("1G", 1024), ("512", 512), ("512m", 512), ("2048K", 2), ("1t", 1048576)])
def test_memory(text, mb):
    assert parse_memory_mb(text) == mb


def test_memory_rejects_garbage():
    with pytest.raises(FormatError):
        parse_memory_mb("1.5G")


def test_output_paths_and_roots():
    assert resolve_output_path("/w/job", "out-%j.txt", 12) == "/w/job/out-12.txt"
    assert resolve_output_path("/w/job", "/w/logs/x", 12) == "/w/logs/x"
    assert within_roots("/w/job/../job2", ["/w"])
    assert not within_roots("/w/../etc", ["/w"])
    assert not within_roots("/wx", ["/w"])
