"""scns output: Slurm's state codes and durations, tables with and without colour, --format,
times (pure)."""

from datetime import datetime, timedelta, timezone

import pytest

from scns_cli.render import (
    Column,
    Field,
    Style,
    elapsed_time,
    format_line,
    max_rss,
    parse_format,
    parse_states,
    parse_when,
    run_seconds,
    strip_ansi,
    table,
    total_cpu,
    used_time,
)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def test_states_take_long_names_and_codes():
    assert parse_states("pd,R") == ["PENDING", "RUNNING"]
    assert parse_states("CD,F,CA,TO,OOM,NF") == ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                                                  "NODE_FAIL"]
    assert parse_states("all")[0] == "PENDING" and len(parse_states("all")) == 8
    assert parse_states(None) is None
    with pytest.raises(ValueError, match="unknown job state"):
        parse_states("SLEEPING")


@pytest.mark.parametrize("seconds, shown", [(0, "0:00"), (5, "0:05"), (65, "1:05"), (3600, "1:00:00"),
                                            (90061, "1-01:01:01")])
def test_used_time_is_squeues(seconds, shown):
    assert used_time(seconds) == shown


def test_elapsed_is_saccts():
    assert elapsed_time(3) == "00:00:03" and elapsed_time(90061) == "1-01:01:01"


def test_max_rss_and_total_cpu_as_sacct_shows_them():
    assert (max_rss(51234), max_rss(None)) == ("51234K", "")
    assert (total_cpu(0.012), total_cpu(75.5), total_cpu(3725), total_cpu(None)) == (
        "00:00.012", "01:15.500", "01:02:05", "")
    assert (total_cpu(59.9996), total_cpu(3599.9996)) == ("01:00.000", "01:00:00")  # never 00:60.000


def test_run_seconds_from_start_to_end_or_now():
    assert run_seconds({"start_time": None}, NOW) == 0
    assert run_seconds({"start_time": "2026-11-28T11:59:00Z", "end_time": None}, NOW) == 60
    assert run_seconds({"start_time": "2026-11-28T11:00:00Z", "end_time": "2026-11-28T11:00:30.5Z"}, NOW) == 30.5


def test_a_plain_table_has_no_colour_and_aligns():
    columns = [Column("JOBID", right=True), Column("NAME"), Column("ST")]
    text = table(columns, [["7", "hello", "R"], ["1234", "x", "PD"]], Style(False),
                 colours=[None, None, Style(False).bold])
    assert text.splitlines() == ["JOBID  NAME   ST", "    7  hello  R", " 1234  x      PD"]
    assert "\x1b" not in text


def test_a_coloured_table_aligns_like_the_plain_one():
    columns = [Column("NAME"), Column("ST")]
    rows = [["hello", "R"], ["x", "PD"]]
    style = Style(True)
    coloured = table(columns, rows, style, colours=[None, lambda text: style.state(text, "RUNNING")])
    assert "\x1b[" in coloured
    assert strip_ansi(coloured) == table(columns, rows, Style(False))


def test_a_terminal_width_cuts_shrinkable_columns():
    columns = [Column("JOBID"), Column("NAME", shrink=True), Column("ST")]
    text = table(columns, [["1", "a-very-long-job-name-indeed", "R"]], Style(False), width=20)
    assert all(len(line) <= 20 for line in text.splitlines()) and "…" in text


def test_squeue_format_fields():
    parts = parse_format("%.5i %3j|%t %%", "ijt")
    assert parts[0] == Field("i", 5, True) and isinstance(parts[1], str)
    values = {"i": "42", "j": "longname", "t": "R"}
    assert format_line(parts, values.__getitem__) == "   42 lon|R %"
    with pytest.raises(ValueError, match="%Z"):
        parse_format("%i %Z", "ijt")
    with pytest.raises(ValueError, match="not a field"):
        parse_format("%-3j", "ijt")
    with pytest.raises(ValueError, match="no field"):
        parse_format("plain", "ijt")


def test_times_as_sacct_takes_them():
    local = NOW.astimezone()
    assert parse_when("now", NOW) == local
    assert parse_when("now-1hour", NOW) == local - timedelta(hours=1)
    assert parse_when("now-90", NOW) == local - timedelta(seconds=90)
    assert parse_when("today", NOW) == local.replace(hour=0, minute=0, second=0, microsecond=0)
    assert parse_when("2026-11-28T10:00:00Z", NOW) == datetime(2026, 11, 28, 10, tzinfo=timezone.utc)
    assert parse_when("2026-11-28", NOW).tzinfo is not None
    assert parse_when("08:30", NOW).hour == 8
    with pytest.raises(ValueError, match="not a time"):
        parse_when("yesterday-ish", NOW)
