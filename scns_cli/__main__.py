"""`scns`: the entry point and its argument parser (one subcommand per Slurm habit)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from scns_cli import __version__, commands
from scns_cli.context import Context
from scns_cli.errors import EXIT_USAGE, CliError
from scns_cli.script import add_job_options

DESCRIPTION = """The command line of SCNS-Conductor, with Slurm's habits: submit (sbatch), queue (squeue),
show (scontrol show job), cancel (scancel), nodes (sinfo), history (sacct), logs, events.

Configuration: SCNS_URL and SCNS_TOKEN (also SCNS_ACCOUNT, SCNS_PARTITION), else `url`, `token`,
`account`, `partition` in $XDG_CONFIG_HOME/scns/config.toml (~/.config/scns/config.toml); the
environment wins. `scns config` shows what is in effect. Only the REST API is used (the event
stream through the gateway's GET /events): no NATS credentials are needed.

Output: tables and colour on a terminal (not with NO_COLOR set), plain stable text when piped,
--json on every subcommand. Errors: one line on stderr, exit status 1 (2 for a wrong command line)."""

QUEUE_EPILOG = f"""--format takes squeue's fields, %[.][width]X ('.' right-aligns; a width pads or cuts):
  {commands.QUEUE_FORMAT_HELP}
e.g. --format "%.10i %.9P %.20j %.2t %.10M %R"
States (-t): PENDING RUNNING COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL, or PD R CD F CA TO OOM NF,
or all. NODELIST(REASON) of a waiting job is read from GET /jobs/query (for at most {commands.MAX_REASONS} jobs)."""

SUBMIT_EPILOG = """Directives: #SBATCH (and #SCNS, applied after them) lines at the top of the script, up to the first
command, take the options above; an option sbatch has and scns has not is warned about and ignored.
Command-line options win over directives. Several scripts are submitted one after the other
(a progress bar on a terminal). --wait exits with the job's exit status (128+N when signal N ended
it, 1 when it ended unsuccessfully with status 0, e.g. cancelled before it ran; with several jobs
the largest)."""

HISTORY_EPILOG = """Selects finished jobs (COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL) by their submit time:
-S/-E take YYYY-MM-DD[THH:MM[:SS]], HH:MM[:SS], now, now-N[seconds|minutes|hours|days|weeks], today
(local time). sacct selects by the time a job was eligible or running; the API lists jobs in
submission order, so scns selects by submission (a job submitted before -S is not shown even if
it ended after).
MaxRSS is the most memory the job was seen to use (its cgroup's peak, page cache included, or the
largest total resident set of its processes at a poll of the node's watchdog), TotalCPU the user +
system time of its processes; empty when not known (a job that never ran; under the watchdog, one
shorter than a poll). Not shown: per-step lines (a job is one step here).
Shown: JobID JobName Partition Account AllocCPUS State ExitCode Submit Start End Elapsed MaxRSS TotalCPU NodeList."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON (one document a line for streams)")
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="scns", description=DESCRIPTION, formatter_class=formatter,
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"scns {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, handler, epilog: str | None = None,
                add_help: bool = True) -> argparse.ArgumentParser:
        command_parser = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                        parents=[common], formatter_class=formatter, add_help=add_help)
        command_parser.set_defaults(handler=handler)
        return command_parser

    p = command("submit", "submit batch scripts, like sbatch", commands.submit, SUBMIT_EPILOG)
    p.add_argument("scripts", nargs="*", metavar="SCRIPT", help="batch script files (- or none: read one from stdin)")
    add_job_options(p)
    p.add_argument("--wrap", metavar="COMMAND", help="submit COMMAND as a /bin/sh script instead of a file")
    p.add_argument("--parsable", action="store_true", help="print only the job id")
    p.add_argument("-W", "--wait", action="store_true", help="wait for the job to end; exit with its exit status")
    p.add_argument("--dry-run", action="store_true", help="print the request(s) as JSON instead of submitting")

    p = command("queue", "list pending and running jobs, like squeue", commands.queue_cmd, QUEUE_EPILOG,
                add_help=False)  # -h is --noheader, as in squeue
    p.add_argument("-u", "--user", "-A", "--account", dest="accounts", action="append", metavar="ACCOUNT",
                   help="only these accounts (comma-separated; in this API a user is an account)")
    p.add_argument("-p", "--partition", dest="partitions", action="append", metavar="PARTITION",
                   help="only these partitions")
    p.add_argument("-t", "--states", metavar="STATES", help="only these states (default PENDING,RUNNING)")
    p.add_argument("-j", "--jobs", action="append", metavar="JOBIDS", help="only these jobs (any state unless -t)")
    p.add_argument("-n", "--name", dest="names", action="append", metavar="NAME", help="only jobs of these names")
    p.add_argument("-o", "--format", metavar="FORMAT", help="squeue-style output format (see below)")
    p.add_argument("-h", "--noheader", action="store_true", help="no header line")
    p.add_argument("-i", "--watch", action="store_true",
                   help="keep the listing up to date from the event stream (Ctrl-C stops)")
    p.add_argument("--help", action="help", help="show this help message and exit")

    p = command("show", "every field of jobs and their event history, like scontrol show job", commands.show)
    p.add_argument("job_ids", nargs="+", metavar="JOBID", help="job ids (also comma-separated)")

    p = command("cancel", "cancel jobs, like scancel", commands.cancel)
    p.add_argument("job_ids", nargs="*", metavar="JOBID", help="job ids (also comma-separated)")
    p.add_argument("-t", "--state", metavar="STATES", help="only jobs in these states (PENDING, RUNNING)")
    p.add_argument("-n", "--name", dest="names", action="append", metavar="NAME", help="only jobs of these names")
    p.add_argument("-A", "--account", "-u", "--user", dest="accounts", action="append", metavar="ACCOUNT",
                   help="only jobs of these accounts")
    p.add_argument("-p", "--partition", dest="partitions", action="append", metavar="PARTITION",
                   help="only jobs of these partitions")
    p.add_argument("-y", "--yes", action="store_true",
                   help=f"do not ask before cancelling more than {commands.CONFIRM_ABOVE} jobs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for each job cancelled")

    p = command("nodes", "nodes, their state, CPUs and memory, like sinfo", commands.nodes_cmd,
                add_help=False)  # -h is --noheader, as in sinfo
    p.add_argument("-p", "--partition", dest="partitions", action="append", metavar="PARTITION",
                   help="only these partitions")
    p.add_argument("-s", "--summarize", action="store_true", help="one line per partition")
    p.add_argument("-h", "--noheader", action="store_true", help="no header line")
    p.add_argument("--help", action="help", help="show this help message and exit")

    p = command("history", "finished jobs with state, exit code and elapsed time, like sacct", commands.history,
                HISTORY_EPILOG)
    p.add_argument("-S", "--starttime", metavar="TIME", help="submitted at or after (default: midnight today)")
    p.add_argument("-E", "--endtime", metavar="TIME", help="submitted at or before (default: now)")
    p.add_argument("-j", "--jobs", action="append", metavar="JOBIDS", help="only these jobs (no time filter)")
    p.add_argument("-A", "--account", "-u", "--user", dest="accounts", action="append", metavar="ACCOUNT",
                   help="only these accounts")
    p.add_argument("-r", "--partition", dest="partitions", action="append", metavar="PARTITION",
                   help="only these partitions")
    p.add_argument("-s", "--state", metavar="STATES", help="only these end states")
    p.add_argument("--name", dest="names", action="append", metavar="NAME", help="only jobs of these names")
    p.add_argument("-n", "--noheader", action="store_true", help="no header line")
    p.add_argument("-P", "--parsable", action="store_true", help="fields separated by | (as sacct -p)")

    p = command("logs", "a job's stdout and stderr", commands.logs)
    p.add_argument("job_id", metavar="JOBID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output until the job ends")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stdout", dest="stdout_only", action="store_true", help="only its stdout")
    which.add_argument("--stderr", dest="stderr_only", action="store_true", help="only its stderr (to stdout)")

    p = command("events", "the event log as it happens (through the gateway: no NATS credentials)",
                commands.events_cmd)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from", dest="from_seq", type=int, metavar="SEQ",
                       help="start at this stream sequence (0 or 1: from the beginning); default: from now on")
    start.add_argument("--since", metavar="TIME", help="start with the events of this time (as history -S)")
    p.add_argument("--job", metavar="JOBID", help="only this job's events, from its submission; stops at its end")
    p.add_argument("-n", "--count", type=int, metavar="N", help="stop after N events")

    p = command("config", "show or change the configuration (URL, token, default account and partition)",
                commands.config_cmd)
    p.add_argument("action", nargs="?", default="show", choices=["show", "set", "unset", "path"])
    p.add_argument("key", nargs="?", choices=["url", "token", "account", "partition"])
    p.add_argument("value", nargs="?")

    p = command("completion", "print a shell completion script: source <(scns completion bash)",
                lambda args, ctx: commands.completion_cmd(args, ctx, parser))
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error (already printed)
        return int(stop.code or 0) if isinstance(stop.code, int) else EXIT_USAGE
    ctx = ctx or Context()
    ctx.json = bool(getattr(args, "json", False))
    try:
        return args.handler(args, ctx)
    except CliError as error:
        print(f"scns: {error}", file=ctx.stderr, flush=True)
        return error.status
    except KeyboardInterrupt:
        print(file=ctx.stderr)
        return 130
    except BrokenPipeError:  # `scns queue | head`: the reader has gone; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as error:  # a bug: still one line, unless SCNS_DEBUG asks for the traceback
        if ctx.env.get("SCNS_DEBUG"):
            raise
        print(f"scns: internal error: {type(error).__name__}: {error} (SCNS_DEBUG=1 shows where)", file=ctx.stderr)
        return 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
