"""The subcommands: each takes the parsed arguments and a Context and returns the exit status."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from scns_cli import config as configuration
from scns_cli.client import ServerEvent
from scns_cli.context import Context, isatty
from scns_cli.errors import ApiError, CliError
from scns_cli.render import (
    ACTIVE_STATES,
    STATE_BY_CODE,
    STATE_CODES,
    TERMINAL_STATES,
    Column,
    duration_seconds,
    elapsed_time,
    format_line,
    local_time,
    max_rss,
    parse_format,
    parse_states,
    parse_timestamp,
    parse_when,
    run_seconds,
    split_list,
    table,
    total_cpu,
    used_time,
)
from scns_cli.script import OPTION_KEYS, Submission, build_submission, wrap_script
from scns_cli.view import JobFilter, QueueView, end_of, exit_status, is_end, summary_of_query
from shared.paths import resolve_output_path

CONFIRM_ABOVE = 5  # cancel asks before cancelling more jobs than this
MAX_REASONS = 100  # queue reads the reason of at most this many pending jobs (one query each)
WAIT_SAFETY_POLL_S = 30.0  # submit --wait also checks the query this often, should an event be missed
WATCH_REASONS_EVERY_S = 2.0  # queue --watch reads the pending jobs' reasons again at most this often
LOG_POLL_S = (0.25, 2.0)  # logs -f: first and longest interval between reads (no event carries output)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def job_ids(values: Iterable[str]) -> list[str]:
    ids = split_list(list(values))
    for job_id in ids:
        if not job_id.isdigit():
            raise CliError(f"{job_id!r} is not a job id (a whole number)")
    return ids


def states_option(text: str | None, allowed: Iterable[str] | None = None) -> list[str] | None:
    try:
        states = parse_states(text)
    except ValueError as error:
        raise CliError(str(error)) from None
    if states is not None and allowed is not None and (others := [state for state in states if state not in allowed]):
        raise CliError(f"{', '.join(others)}: not among the states this command takes ({' '.join(allowed)})")
    return states


# ---- submit ------------------------------------------------------------------------------------

class Progress:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, stream, total: int, enabled: bool) -> None:
        self.stream, self.total, self.enabled, self.done = stream, total, enabled, 0
        self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // max(1, self.total)
        self.stream.write(f"\rsubmitting [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        self.stream.flush()

    def step(self) -> None:
        self.done += 1
        self.draw()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def read_scripts(args, ctx: Context) -> list[tuple[str, str, str]]:
    """(source, text, default job name) of each script to submit."""
    if args.wrap is not None:
        if args.scripts:
            raise CliError("give script files or --wrap, not both")
        return [("--wrap", wrap_script(args.wrap), "wrap")]
    paths = args.scripts or ["-"]
    if paths == ["-"] and not args.scripts and isatty(ctx.stdin):
        raise CliError("no script: give a file (or - to read one from stdin), or --wrap COMMAND")
    scripts = []
    for path in paths:
        if path == "-":
            scripts.append(("<stdin>", ctx.stdin.read(), "sbatch"))
            continue
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                scripts.append((path, handle.read(), os.path.basename(path)))
        except OSError as error:
            raise CliError(f"{path}: {error.strerror or error}") from None
    return scripts


def submit(args, ctx: Context) -> int:
    config = ctx.config
    options = {key: getattr(args, key) for key in OPTION_KEYS}
    cwd = os.getcwd()
    submissions: list[Submission] = []
    for source, text, name in read_scripts(args, ctx):
        submissions.append(build_submission(text, source, options, cwd=cwd, environ=ctx.env, default_name=name,
                                            default_account=config.account, default_partition=config.partition))
    for submission in submissions:
        for warning in submission.warnings:
            ctx.warn(warning)
    if args.dry_run:
        ctx.emit_json([submission.body for submission in submissions] if len(submissions) > 1
                      else submissions[0].body)
        return 0
    api = ctx.api
    progress = Progress(ctx.stderr, len(submissions), len(submissions) > 1 and isatty(ctx.stderr))
    submitted: list[tuple[Submission, str]] = []
    try:
        for submission in submissions:
            try:
                submitted.append((submission, api.submit(submission.body)))
            except CliError as error:
                where = f"{submission.source}: " if len(submissions) > 1 or submission.source != "--wrap" else ""
                error.args = (f"{where}{error}" + (f" ({len(submitted)} submitted before it: "
                                                    f"{' '.join(job_id for _, job_id in submitted)})"
                                                    if submitted else ""),)
                raise
            progress.step()
    finally:
        progress.finish()
        if not ctx.json:
            for submission, job_id in submitted:
                if args.parsable:
                    ctx.out(job_id)
                else:
                    ctx.out(f"Submitted batch job {job_id}" + (f" ({submission.source})" if len(submissions) > 1
                                                               else ""))
    results = [{"job_id": job_id, "source": submission.source} for submission, job_id in submitted]
    status = 0
    if args.wait:
        ends = wait_for_jobs(ctx, [int(job_id) for _, job_id in submitted])
        for result in results:
            state, exit_code = ends[int(result["job_id"])]
            result.update(state=state, exit_code=exit_code, exit_status=exit_status(state, exit_code))
            status = max(status, result["exit_status"])
            if not ctx.json and not args.parsable:
                ctx.note(f"job {result['job_id']} ended {state}, exit code {exit_code}")
    if ctx.json:
        ctx.emit_json({"jobs": results})
    return status


def event_reader(ctx: Context, after: int | None) -> queue.Queue:
    """The event stream, read by a thread into a queue (an exception ends it, put into the queue)."""
    events: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for event in ctx.api.follow(after):
                events.put(event)
        except BaseException as error:  # handed to the reader's owner
            events.put(error)

    threading.Thread(target=read, name="scns-events", daemon=True).start()
    return events


def wait_for_jobs(ctx: Context, ids: list[int]) -> dict[int, tuple[str, str]]:
    """Block until every job has ended; (state, exit code) of each. Follows the event stream from
    the first job's submission (so nothing is missed); should the stream be unavailable, or an
    event somehow be missed, the query is read every WAIT_SAFETY_POLL_S (every second or so once
    the stream has failed)."""
    api = ctx.api
    remaining = set(ids)
    ends: dict[int, tuple[str, str]] = {}
    events = event_reader(ctx, min(ids) - 1)
    stream_ok = True
    interval = WAIT_SAFETY_POLL_S
    read_at = time.monotonic()
    while remaining:
        try:  # (events of other jobs keep coming: the safety read is due by the clock, not by a quiet stream)
            item = events.get(timeout=max(0.0, read_at + interval - time.monotonic()))
        except queue.Empty:
            item = None
        if isinstance(item, BaseException):
            if isinstance(item, ApiError) and item.http_status in (401, 403):
                raise item
            if isinstance(item, KeyboardInterrupt):
                raise item
            if stream_ok:
                ctx.warn(f"the event stream is unavailable ({item}); reading the jobs' state instead")
            stream_ok, interval = False, 1.0
        elif isinstance(item, ServerEvent):
            if item.job_id in remaining and is_end(item.type):
                ends[item.job_id] = end_of(item.type, item.data)
                remaining.discard(item.job_id)
            if time.monotonic() < read_at + interval:
                continue
        read_at = time.monotonic()
        for job_id in sorted(remaining):
            answer = api.job(job_id)
            if answer["state"] in TERMINAL_STATES:
                ends[job_id] = (answer["state"], answer["detail"]["exit_code"])
                remaining.discard(job_id)
        if not stream_ok:
            interval = min(interval * 1.5, 5.0)
    return ends


# ---- queue -------------------------------------------------------------------------------------

QUEUE_FIELDS = {
    # letter: (header, value of a job row)
    "i": ("JOBID", lambda job, now: str(job["job_id"])),
    "P": ("PARTITION", lambda job, now: job["partition"]),
    "j": ("NAME", lambda job, now: job["name"]),
    "a": ("ACCOUNT", lambda job, now: job["account"]),
    "u": ("USER", lambda job, now: job["account"]),
    "t": ("ST", lambda job, now: STATE_CODES.get(job["state"], job["state"])),
    "T": ("STATE", lambda job, now: job["state"]),
    "M": ("TIME", lambda job, now: used_time(run_seconds(job, now))),
    "C": ("CPUS", lambda job, now: str(job.get("allocated_cpus", ""))),
    "D": ("NODES", lambda job, now: "1"),
    "N": ("NODELIST", lambda job, now: job.get("node_list") or ""),
    "R": ("NODELIST(REASON)", lambda job, now: node_or_reason(job)),
    "r": ("REASON", lambda job, now: job.get("reason") or "None"),
    "V": ("SUBMIT_TIME", lambda job, now: local_time(job.get("submit_time"))),
    "S": ("START_TIME", lambda job, now: local_time(job.get("start_time")) if job.get("start_time") else "N/A"),
    "e": ("END_TIME", lambda job, now: local_time(job.get("end_time")) if job.get("end_time") else "N/A"),
    "X": ("EXIT_CODE", lambda job, now: job.get("exit_code", ":")),
}
QUEUE_COLUMNS = "iPjatMCR"  # JOBID PARTITION NAME ACCOUNT ST TIME CPUS NODELIST(REASON)
QUEUE_FORMAT_HELP = ", ".join(f"%{letter} {header}" for letter, (header, _) in QUEUE_FIELDS.items())


def node_or_reason(job: dict[str, Any]) -> str:
    if job.get("node_list"):
        return job["node_list"]
    if job.get("state") == "PENDING":
        return f"({job.get('reason') or 'None'})"
    return ""


def queue_filter(args) -> JobFilter:
    states = states_option(args.states) or list(ACTIVE_STATES)
    return JobFilter(states=states, accounts=split_list(args.accounts), partitions=split_list(args.partitions),
                     names=split_list(args.names), job_ids=job_ids(args.jobs or []))


def list_jobs(ctx: Context, selection: JobFilter, explicit_states: bool) -> list[dict[str, Any]]:
    """The jobs of the selection: each asked-for id read directly (so a finished one is shown when
    no state is asked for), else GET /jobs once per state x account x partition asked for."""
    api = ctx.api
    if selection.job_ids:
        rows = [summary_of_query(api.job(job_id)) for job_id in selection.job_ids]
        if not explicit_states:
            selection = JobFilter(states=(), accounts=selection.accounts, partitions=selection.partitions,
                                  names=selection.names, job_ids=selection.job_ids)
        return [row for row in rows if selection.matches(row)]
    found: dict[int, dict[str, Any]] = {}
    for state in selection.states or [None]:
        for account in selection.accounts or [None]:
            for partition in selection.partitions or [None]:
                for job in api.jobs(state=state, account=account, partition=partition):
                    found[int(job["job_id"])] = job
    return [job for _, job in sorted(found.items()) if selection.matches(job)]


def add_reasons(ctx: Context, jobs: list[dict[str, Any]]) -> None:
    """Why each pending, unplaced job waits (GET /jobs/query: GET /jobs does not say), for at most
    MAX_REASONS of them; the others show "(-)" rather than a guess."""
    waiting = [job for job in jobs if job.get("state") == "PENDING" and not job.get("node_list")]
    for count, job in enumerate(waiting):
        if count >= MAX_REASONS:
            job["reason"] = job.get("reason") or "-"
            continue
        try:
            job["reason"] = ctx.api.job(job["job_id"])["detail"].get("reason", "None")
        except ApiError as error:
            if error.http_status in (401, 403):
                raise
            job["reason"] = "-"
    for job in jobs:
        job.setdefault("reason", "None")


def queue_text(ctx: Context, jobs: list[dict[str, Any]], args, now: datetime) -> str:
    if args.format:
        try:
            parts = parse_format(args.format, "".join(QUEUE_FIELDS))
        except ValueError as error:
            raise CliError(str(error)) from None
        lines = [] if args.noheader else [format_line(parts, lambda letter: QUEUE_FIELDS[letter][0])]
        lines += [format_line(parts, lambda letter: QUEUE_FIELDS[letter][1](job, now)) for job in jobs]
        return "\n".join(lines)
    style = ctx.style
    columns = [Column(QUEUE_FIELDS[letter][0], right=letter in "iC", shrink=letter in "jaPR")
               for letter in QUEUE_COLUMNS]
    rows = [[QUEUE_FIELDS[letter][1](job, now) for letter in QUEUE_COLUMNS] for job in jobs]
    painters = [None] * len(columns)
    state_column = QUEUE_COLUMNS.index("t")
    painters[state_column] = lambda text: style.state(text, STATE_BY_CODE.get(text, ""))
    return table(columns, rows, style, header=not args.noheader, width=ctx.width(), colours=painters)


def queue_json(jobs: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    return [{**job, "st": STATE_CODES.get(job["state"], job["state"]), "time_used": used_time(run_seconds(job, now))}
            for job in jobs]


def queue_cmd(args, ctx: Context) -> int:
    selection = queue_filter(args)
    if args.format:  # checked before anything is asked of the server
        try:
            parse_format(args.format, "".join(QUEUE_FIELDS))
        except ValueError as error:
            raise CliError(str(error)) from None
    if args.watch:
        return watch_queue(args, ctx, selection)
    jobs = list_jobs(ctx, selection, explicit_states=bool(args.states))
    add_reasons(ctx, jobs)
    now = utcnow()
    if ctx.json:
        ctx.emit_json({"jobs": queue_json(jobs, now)})
    else:
        ctx.out(queue_text(ctx, jobs, args, now))
    return 0


def watch_queue(args, ctx: Context, selection: JobFilter) -> int:
    """The listing, then the event stream applied to it; redrawn when something changed (and every
    second on a terminal, for the TIME column). The stream starts after the newest job the read
    model had before the listing was read, so every event the listing may lack is replayed (a
    replayed event changes nothing). After events that change who waits for what, the pending
    jobs' reasons are read again (GET /jobs/query), at most every WATCH_REASONS_EVERY_S."""
    api = ctx.api
    newest = next(iter(api.get("/jobs", limit=1)["jobs"]), None)
    after = int(newest["job_id"]) if newest else None
    view = QueueView()
    view.load(list_jobs(ctx, selection, explicit_states=bool(args.states)))
    events = event_reader(ctx, after)
    add_reasons(ctx, view.shown(selection))
    draw = Redraw(ctx, args)
    draw(view.shown(selection))
    reasons_stale, reasons_read = False, time.monotonic()
    try:
        while True:
            try:
                item = events.get(timeout=1.0)
            except queue.Empty:
                item = None
            changed = False
            while item is not None:
                if isinstance(item, BaseException):
                    raise item
                unknown = view.apply(item.seq, item.type, item.data)
                if unknown is not None:
                    try:
                        view.load([summary_of_query(api.job(unknown))])
                    except ApiError as error:
                        if error.http_status in (401,):
                            raise
                changed = True
                reasons_stale = reasons_stale or item.type in ("JobSubmitted", "JobStarted", "JobFinished",
                                                               "JobCancelled", "JobLost", "JobRequeued")
                try:
                    item = events.get(timeout=0.05)  # a burst is drawn once
                except queue.Empty:
                    item = None
            shown = view.shown(selection)
            if reasons_stale and time.monotonic() - reasons_read >= WATCH_REASONS_EVERY_S:
                add_reasons(ctx, shown)
                reasons_stale, reasons_read = False, time.monotonic()
            if changed or ctx.interactive:
                draw(shown)
    except KeyboardInterrupt:
        return 0


class Redraw:
    """queue --watch's output: the screen cleared and redrawn on a terminal; otherwise each change
    as a new listing under a `# time` line (or one JSON document a line with --json)."""

    def __init__(self, ctx: Context, args) -> None:
        self.ctx, self.args = ctx, args

    def __call__(self, jobs: list[dict[str, Any]]) -> None:
        now = utcnow()
        stamp = now.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
        if self.ctx.json:
            self.ctx.emit_json({"time": stamp, "jobs": queue_json(jobs, now)}, lines=True)
            return
        text = queue_text(self.ctx, jobs, self.args, now)
        if self.ctx.interactive:
            self.ctx.stdout.write("\x1b[H\x1b[2J" + self.ctx.style.dim(f"scns queue --watch  {stamp}  (Ctrl-C "
                                                                            "to stop)") + "\n" + text + "\n")
            self.ctx.stdout.flush()
        else:
            self.ctx.out(f"# {stamp}\n{text}")


# ---- show ----------------------------------------------------------------------------------------

EVENT_TIMES = {"JobSubmitted": "submitted_at", "JobCancelRequested": "requested_at", "JobAllocated": "allocated_at",
               "JobStarted": "started_at", "JobCancelled": "cancelled_at", "JobFinished": "ended_at",
               "JobLost": "lost_at", "JobRequeued": "requeued_at", "NodeRegistered": "registered_at",
               "NodeDown": "down_at", "NodeDrained": "drained_at", "NodeResumed": "resumed_at",
               "SchedulerElected": "elected_at"}


def event_time(kind: str, data: dict[str, Any]) -> str | None:
    return data.get(EVENT_TIMES.get(kind, ""))


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c.isspace() for c in text)) else text


def event_summary(kind: str, data: dict[str, Any]) -> str:
    """The fields of an event that say what happened, as key=value words."""
    if kind == "JobSubmitted":
        spec = data.get("spec", {})
        fields = {"name": spec.get("name"), "account": spec.get("account"), "partition": spec.get("partition"),
                  "cpus": spec.get("ntasks_per_node", 1) * spec.get("cpus_per_task", 1),
                  "by": (data.get("submitted_by") or {}).get("token")}
    elif kind == "JobCancelRequested":
        fields = {"by": (data.get("requested_by") or {}).get("token")}
    elif kind == "JobAllocated":
        fields = {"node": data.get("node"), "cpus": data.get("cpus"), "memory_mb": data.get("memory_mb")}
    elif kind == "JobStarted":
        fields = {"node": data.get("node"), "pid": data.get("pid")}
    elif kind == "JobFinished":
        fields = {"state": data.get("state"), "exit_code": data.get("exit_code"), "node": data.get("node"),
                  "error": data.get("error_msg")}
    elif kind in ("JobCancelled", "JobLost", "JobRequeued", "NodeDown"):
        fields = {"node": data.get("node"), "reason": data.get("reason") or None}
    elif kind == "NodeRegistered":
        fields = {"node": data.get("node"), "cpus": data.get("cpus"), "memory_mb": data.get("memory_mb"),
                  "partitions": ",".join(data.get("partitions", [])), "arch": data.get("arch")}
    elif kind in ("NodeDrained", "NodeResumed"):
        fields = {"node": data.get("node"), "by": data.get("by")}
    elif kind == "SchedulerElected":
        fields = {"scheduler": data.get("scheduler")}
    else:
        fields = {key: value for key, value in data.items() if key not in ("type", "v")}
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)


def show(args, ctx: Context) -> int:
    api = ctx.api
    documents = []
    for job_id in job_ids(args.job_ids):
        answer = api.job(job_id)
        documents.append({"job": answer, "events": api.job_events(job_id)})
    if ctx.json:
        ctx.emit_json(documents[0] if len(documents) == 1 else {"jobs": documents})
        return 0
    style = ctx.style
    for number, document in enumerate(documents):
        if number:
            ctx.out()
        ctx.out(show_text(document["job"], document["events"], style))
    return 0


def show_text(answer: dict[str, Any], events: list[dict[str, Any]], style) -> str:
    """scontrol show job's Key=Value lines, then the job's events with their times."""
    detail, times = answer["detail"], answer["time"]
    spec = next((event["data"].get("spec", {}) for event in events if event["type"] == "JobSubmitted"), {})
    job_id = answer["job_id"]
    cwd = spec.get("cwd") or detail.get("work_dir", "")

    def path(name: str | None) -> str:
        return resolve_output_path(cwd, name, int(job_id)) if name else "Unknown"

    limit_s = spec.get("time_limit_s")
    lines = [
        [("JobId", job_id), ("JobName", detail.get("job_name"))],
        [("UserId", detail.get("user")), ("Account", detail.get("account"))],
        [("JobState", style.state(answer["state"], answer["state"])), ("Reason", detail.get("reason")),
         ("ExitCode", detail.get("exit_code"))],
        [("Requeue", int(bool(detail.get("requeue")))), ("Restarts", detail.get("restarts", 0))],
        [("RunTime", elapsed_time(duration_seconds(times.get("elapsed_time", "")))),
         ("TimeLimit", times.get("limit_time") if limit_s is None or limit_s else "UNLIMITED")],
        [("SubmitTime", local_time(times.get("submit_time"))), ("EligibleTime", local_time(times.get("eligible_time")))],
        [("StartTime", local_time(times.get("start_time"))), ("EndTime", local_time(times.get("end_time")))],
        [("Partition", detail.get("partition")), ("NodeList", detail.get("node_list") or "(null)")],
        [("NumNodes", detail.get("allocated_nodes")), ("NumCPUs", detail.get("allocated_cpus")),
         ("NumTasks", spec.get("ntasks_per_node", "Unknown")), ("CPUs/Task", spec.get("cpus_per_task", "Unknown"))],
        [("MinMemoryNode", f"{spec['memory_mb']}M" if "memory_mb" in spec else "Unknown"),
         ("Exclusive", int(bool(spec.get("exclusive"))) if spec else "Unknown")],
        [("WorkDir", detail.get("work_dir") or cwd)],
        [("StdOut", path(spec.get("stdout")))],
        [("StdErr", path(spec.get("stderr")))],
        [("Environment", ",".join(sorted(spec.get("environment", {}))) or "(none)")],
        [("DataSource", detail.get("data_source"))],
    ]
    if answer.get("error_msg"):
        lines.append([("ErrorMsg", answer["error_msg"])])
    if detail.get("trace_id"):
        lines.append([("TraceId", detail["trace_id"])])
    text = [" ".join(f"{key}={value}" for key, value in line) for line in lines]
    out = [text[0], *("   " + line for line in text[1:]), "Events:"]
    for event in events:
        out.append(f"   {local_time(event.get('time'))}  {event['seq']:>6}  {event['type']:<18}  "
                   f"{event_summary(event['type'], event.get('data', {}))}".rstrip())
    return "\n".join(out)


# ---- cancel ------------------------------------------------------------------------------------

def cancel(args, ctx: Context) -> int:
    api = ctx.api
    ids = job_ids(args.job_ids)
    filtered = bool(args.state or args.names or args.accounts or args.partitions)
    if not ids and not filtered:
        raise CliError("give job ids, or a filter (--state, --name, --account, --partition)")
    if filtered:
        selection = JobFilter(states=states_option(args.state, ACTIVE_STATES) or list(ACTIVE_STATES),
                              accounts=split_list(args.accounts), partitions=split_list(args.partitions),
                              names=split_list(args.names), job_ids=ids)
        targets = [job["job_id"] for job in list_jobs(ctx, selection, explicit_states=True)]
        if not targets:
            ctx.note("no job matches") if not ctx.json else ctx.emit_json({"cancelled": [], "errors": []})
            return 0
    else:
        targets = ids
    if len(targets) > CONFIRM_ABOVE and not args.yes:
        if not (isatty(ctx.stdin) and isatty(ctx.stderr)):
            raise CliError(f"{len(targets)} jobs would be cancelled: add --yes to confirm (no terminal to ask on)")
        ctx.stderr.write(f"Cancel {len(targets)} jobs ({' '.join(targets[:10])}"
                         f"{' ...' if len(targets) > 10 else ''})? [y/N] ")
        ctx.stderr.flush()
        if ctx.stdin.readline().strip().lower() not in ("y", "yes"):
            ctx.note("nothing cancelled")
            return 1
    cancelled, errors = [], []
    for job_id in targets:
        try:
            api.post(f"/jobs/cancel/{job_id}")
        except ApiError as error:
            if error.http_status == 401:
                raise
            message = f"job {job_id} not found" if error.http_status == 404 else f"job {job_id}: {error}"
            errors.append({"job_id": job_id, "error": message})
            if not ctx.json:
                print(f"scns: {message}", file=ctx.stderr, flush=True)
            continue
        cancelled.append(job_id)
        if not ctx.json and not args.quiet:
            ctx.out(f"job {job_id}: cancel requested")
    if ctx.json:
        ctx.emit_json({"cancelled": cancelled, "errors": errors})
    return 1 if errors else 0


# ---- nodes -------------------------------------------------------------------------------------

SINFO_STATES = {"IDLE": "idle", "MIXED": "mix", "ALLOCATED": "alloc", "DOWN": "down", "DRAIN": "drain"}
_NODE_COLOURS = {"idle": "32", "mix": "33", "alloc": "33", "down": "31", "drain": "35"}


def nodes_cmd(args, ctx: Context) -> int:
    nodes = ctx.api.get("/nodes")["nodes"]
    partitions = split_list(args.partitions)
    rows = [(partition, node) for node in sorted(nodes, key=lambda n: n["node_name"])
            for partition in node.get("partitions") or ["-"] if not partitions or partition in partitions]
    if ctx.json:
        ctx.emit_json({"nodes": [node for node in nodes
                                 if not partitions or set(node.get("partitions", [])) & set(partitions)]})
        return 0
    style = ctx.style
    if args.summarize:
        by_partition: dict[str, list[dict[str, Any]]] = {}
        for partition, node in rows:
            by_partition.setdefault(partition, []).append(node)
        columns = [Column("PARTITION"), Column("AVAIL"), Column("NODES(A/I/O/T)"), Column("CPUS(A/I/O/T)"),
                   Column("MEMORY(MB)", right=True)]
        lines = []
        for partition, members in sorted(by_partition.items()):
            out = [n for n in members if n["state"] in ("DOWN", "DRAIN")]
            up = [n for n in members if n not in out]
            busy = [n for n in up if n["state"] in ("MIXED", "ALLOCATED")]
            cpus_a = sum(n["allocated_cpus"] for n in up)
            cpus_t = sum(n["total_cpus"] for n in members)
            cpus_o = sum(n["total_cpus"] for n in out)
            lines.append([partition, "up" if up else "down",
                          f"{len(busy)}/{len(up) - len(busy)}/{len(out)}/{len(members)}",
                          f"{cpus_a}/{cpus_t - cpus_a - cpus_o}/{cpus_o}/{cpus_t}",
                          str(sum(n["memory_mb"] for n in members))])
        ctx.out(table(columns, lines, style, header=not args.noheader, width=ctx.width()))
        return 0
    columns = [Column("PARTITION", shrink=True), Column("NODELIST", shrink=True), Column("STATE"),
               Column("CPUS(A/I/T)"), Column("MEMORY(MB)", right=True), Column("ALLOC_MEM", right=True),
               Column("FREE_MEM", right=True), Column("ARCH"), Column("LAST_HEARTBEAT")]
    lines = []
    for partition, node in rows:
        allocated, total = node["allocated_cpus"], node["total_cpus"]
        lines.append([partition, node["node_name"], SINFO_STATES.get(node["state"], node["state"].lower()),
                      f"{allocated}/{total - allocated}/{total}", str(node["memory_mb"]),
                      str(node["allocated_memory_mb"]), str(node["memory_mb"] - node["allocated_memory_mb"]),
                      node.get("arch", ""), local_time(node.get("last_heartbeat"))])
    painters = [None] * len(columns)
    painters[2] = lambda text: style.paint(text, _NODE_COLOURS.get(text, ""))
    ctx.out(table(columns, lines, style, header=not args.noheader, width=ctx.width(), colours=painters))
    return 0


# ---- history -----------------------------------------------------------------------------------

HISTORY_COLUMNS = [Column("JobID", right=True), Column("JobName", shrink=True), Column("Partition", shrink=True),
                   Column("Account", shrink=True), Column("AllocCPUS", right=True), Column("State"),
                   Column("ExitCode", right=True), Column("Submit"), Column("Start"), Column("End"),
                   Column("Elapsed", right=True), Column("MaxRSS", right=True), Column("TotalCPU", right=True),
                   Column("NodeList")]


def history(args, ctx: Context) -> int:
    now = utcnow()
    try:
        start = parse_when(args.starttime, now) if args.starttime else None
        end = parse_when(args.endtime, now) if args.endtime else None
    except ValueError as error:
        raise CliError(str(error)) from None
    ids = job_ids(args.jobs or [])
    states = states_option(args.state)
    if states and set(states) & set(ACTIVE_STATES):
        raise CliError("history shows finished jobs only: use `scns queue` for pending and running ones")
    selection = JobFilter(states=states or list(TERMINAL_STATES), accounts=split_list(args.accounts),
                          partitions=split_list(args.partitions), names=split_list(args.names), job_ids=ids)
    if ids:
        jobs = [summary_of_query(ctx.api.job(job_id)) for job_id in ids]
        jobs = [job for job in jobs if selection.matches(job)]
    else:
        if start is None:
            start = parse_when("today", now)  # sacct's default: since midnight
        jobs = finished_jobs(ctx, selection, start, end)
    rows = []
    for job in jobs:
        started, ended = job.get("start_time"), job.get("end_time")
        job["elapsed"] = elapsed_time(run_seconds(job, now)) if started else "00:00:00"
        rows.append([str(job["job_id"]), job["name"], job["partition"], job["account"], str(job["allocated_cpus"]),
                     job["state"], job.get("exit_code", ":"), local_time(job.get("submit_time")),
                     local_time(started), local_time(ended), job["elapsed"], max_rss(job.get("peak_memory_kb")),
                     total_cpu(job.get("cpu_seconds")), job.get("node_list") or "None"])
    if ctx.json:
        ctx.emit_json({"jobs": jobs})
    elif args.parsable:
        lines = [] if args.noheader else ["|".join(column.header for column in HISTORY_COLUMNS) + "|"]
        ctx.out("\n".join(lines + ["|".join(row) + "|" for row in rows]))
    else:
        style = ctx.style
        painters = [None] * len(HISTORY_COLUMNS)
        painters[5] = lambda text: style.state(text, text)
        ctx.out(table(HISTORY_COLUMNS, rows, style, header=not args.noheader, width=ctx.width(), colours=painters))
    return 0


def finished_jobs(ctx: Context, selection: JobFilter, start: datetime, end: datetime | None) -> list[dict[str, Any]]:
    """Finished jobs submitted in [start, end], oldest first. GET /jobs lists in submission order
    (newest first), so the reading stops at the first job submitted before `start`."""
    found: dict[int, dict[str, Any]] = {}
    for account in selection.accounts or [None]:
        for partition in selection.partitions or [None]:
            for job in ctx.api.jobs(account=account, partition=partition):
                submitted = parse_timestamp(job.get("submit_time"))
                if submitted is not None and submitted < start:
                    break
                if end is not None and submitted is not None and submitted > end:
                    continue
                if selection.matches(job):
                    found[int(job["job_id"])] = job
    return [job for _, job in sorted(found.items())]


# ---- logs --------------------------------------------------------------------------------------

def new_part(old: str, new: str) -> str:
    """What `new` adds to `old` (the API keeps only the last 1000 lines of a big log: then the text
    after the last 4 KiB seen)."""
    if new.startswith(old):
        return new[len(old):]
    tail = old[-4096:]
    at = new.rfind(tail) if tail else -1
    return new[at + len(tail):] if at >= 0 else new


def logs(args, ctx: Context) -> int:
    api = ctx.api
    job_id = job_ids([args.job_id])[0]
    answer, headers = api.job_with_headers(job_id)
    events = api.job_events(job_id)
    spec = next((event["data"].get("spec", {}) for event in events if event["type"] == "JobSubmitted"), {})
    merged = bool(spec) and spec.get("stdout") == spec.get("stderr")
    if merged and args.stderr_only:
        ctx.warn(f"job {job_id} writes its stderr into its stdout file: showing that file")
    want_out = not args.stderr_only or merged
    want_err = not args.stdout_only and not merged
    if "x-log-unavailable" in headers:
        ctx.warn(f"node {headers['x-log-unavailable']} does not answer: its logs cannot be read now")
    if not args.follow:
        if ctx.json:
            ctx.emit_json({"job_id": str(job_id), "state": answer["state"], "merged": merged,
                           "stdout": answer["job_log"]["stdout"] if want_out else None,
                           "stderr": answer["job_log"]["stderr"] if want_err else None})
            return 0
        write_logs(ctx, answer["job_log"], {"stdout": "", "stderr": ""}, want_out, want_err, args.stderr_only)
        return 0
    seen = {"stdout": "", "stderr": ""}
    interval = LOG_POLL_S[0]
    while True:
        seen = write_logs(ctx, answer["job_log"], seen, want_out, want_err, args.stderr_only)
        if answer["state"] in TERMINAL_STATES:
            return 0
        time.sleep(interval)  # no event carries a job's output: read it again, a little less often each time
        interval = min(interval * 1.5, LOG_POLL_S[1])
        answer, _ = api.job_with_headers(job_id)


def write_logs(ctx: Context, log: dict[str, str], seen: dict[str, str], want_out: bool, want_err: bool,
               err_to_stdout: bool) -> dict[str, str]:
    """Write what the logs add to `seen`: the job's stdout to ours, its stderr to ours (to stdout
    with --stderr); what was written."""
    for name, wanted, stream in (("stdout", want_out, ctx.stdout),
                                 ("stderr", want_err, ctx.stdout if err_to_stdout else ctx.stderr)):
        if not wanted:
            continue
        text = new_part(seen[name], log.get(name, ""))
        if text:
            if ctx.json:
                ctx.emit_json({"stream": name, "text": text}, lines=True)
            else:
                stream.write(text)
                stream.flush()
    return {"stdout": log.get("stdout", ""), "stderr": log.get("stderr", "")}


# ---- events ------------------------------------------------------------------------------------

def events_cmd(args, ctx: Context) -> int:
    api = ctx.api
    since = None
    if args.since:
        try:
            since = parse_when(args.since, utcnow())
        except ValueError as error:
            raise CliError(str(error)) from None
    job = int(job_ids([args.job])[0]) if args.job else None
    after: int | None = None
    if args.from_seq is not None:
        after = max(0, args.from_seq - 1)
    elif since is not None:
        after = start_before(ctx, since)
    if job is not None:
        after = max(after or 0, job - 1)
    style = ctx.style
    printed = 0
    try:
        for event in api.follow(after):
            if job is not None and event.job_id != job:
                continue
            moment = event_time(event.type, event.data)
            if since is not None and moment and (parse_timestamp(moment) or since) < since:
                continue
            if ctx.json:
                ctx.emit_json({"seq": event.seq, "type": event.type, "job_id": event.job_id, "data": event.data},
                              lines=True)
            else:
                ctx.out(f"{event.seq:>6}  {local_time(moment) if moment else '-':19}  "
                        f"{style.bold(f'{event.type:<18}')}  "
                        f"{'job=' + str(event.job_id) + ' ' if event.job_id is not None else ''}"
                        f"{event_summary(event.type, event.data)}".rstrip())
            printed += 1
            if args.count and printed >= args.count:
                return 0
            if job is not None and is_end(event.type):
                return 0
    except KeyboardInterrupt:
        return 0
    return 0


def start_before(ctx: Context, since: datetime) -> int:
    """A stream position before every event stored at or after `since`: the newest visible job
    submitted before it (every event before that job's submission is older still), else 0."""
    for job in ctx.api.jobs():
        submitted = parse_timestamp(job.get("submit_time"))
        if submitted is not None and submitted < since:
            return int(job["job_id"])
    return 0


# ---- config ------------------------------------------------------------------------------------

def config_cmd(args, ctx: Context) -> int:
    path = configuration.config_path(ctx.env)
    if args.action == "path":
        ctx.emit_json({"config_file": str(path)}) if ctx.json else ctx.out(str(path))
        return 0
    if args.action in ("set", "unset"):
        if not args.key or (args.action == "set" and args.value is None):
            raise CliError(f"usage: scns config {args.action} KEY{' VALUE' if args.action == 'set' else ''} "
                           f"(keys: {', '.join(configuration.KEYS)})")
        configuration.write_value(path, args.key, args.value if args.action == "set" else None)
        if not ctx.json:
            ctx.out(f"{args.key} {'set' if args.action == 'set' else 'removed'} in {path}")
        else:
            ctx.emit_json({"config_file": str(path), "key": args.key, "action": args.action})
        return 0
    shown = ctx.config.shown()
    if ctx.json:
        ctx.emit_json(shown)
        return 0
    ctx.out(f"config file: {shown['config_file']}{'' if shown['config_file_exists'] else ' (none)'}")
    for key in configuration.KEYS:
        entry = shown[key]
        ctx.out(f"{key:<10} {entry['value'] if entry['value'] is not None else '(unset)'}   ({entry['from']})")
    return 0


# ---- completion --------------------------------------------------------------------------------

def completion_cmd(args, ctx: Context, parser) -> int:
    from scns_cli.completion import bash_script, zsh_script

    script = bash_script(parser) if args.shell == "bash" else zsh_script(parser)
    if ctx.json:
        ctx.emit_json({"shell": args.shell, "script": script})
    else:
        ctx.stdout.write(script)
        ctx.stdout.flush()
    return 0
