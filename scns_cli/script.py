"""From a batch script and options to a submit request (pure: the environment, the current
directory and the defaults come in as arguments).

Like sbatch: `#SBATCH` lines are read from the top of the script until the first line that is
neither blank nor a comment; `#SCNS` lines the same way, applied after the `#SBATCH` ones (so a
script that also runs under Slurm can say what differs here); command-line options win over both.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scns_cli.errors import CliError
from shared.environment import MAX_ENV_BYTES, MAX_ENV_ENTRIES, VARIABLE_NAME
from shared.slurm_formats import FormatError, parse_memory_mb, parse_time_limit

PREFIXES = ("#SBATCH", "#SCNS")
DEFAULT_OUTPUT = "slurm-%j.out"
DEFAULT_TIME = "UNLIMITED"
WRAP_SHEBANG = "#!/bin/sh"
# --export=ALL leaves out what describes the submitting session rather than the job: the node sets
# these for the job's user (API.md, "Environment of a running job"), and SCNS_*/SLURM_* are the
# job's own (set per job) or this client's configuration (SCNS_TOKEN is a secret).
NOT_EXPORTED = frozenset({"HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "PWD", "OLDPWD", "SHLVL", "_"})
NOT_EXPORTED_PREFIXES = ("SCNS_", "SLURM_")

OPTION_KEYS = ("name", "account", "partition", "time", "cpus_per_task", "ntasks_per_node", "ntasks", "nodes", "mem",
               "exclusive", "output", "error", "chdir", "export", "requeue")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The sbatch options `submit` takes, on the command line and as directives (defaults None:
    an option not given leaves the directive's or the default value)."""
    add = parser.add_argument
    add("-J", "--job-name", dest="name", metavar="NAME", help="job name (default: the script's file name)")
    add("-A", "--account", metavar="ACCOUNT", help="account to charge (default: SCNS_ACCOUNT or `account` in the "
        "config file)")
    add("-p", "--partition", metavar="PARTITION", help="partition (default: SCNS_PARTITION, the config file, "
        "else 'default')")
    add("-t", "--time", metavar="TIME", help="time limit: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S or UNLIMITED "
        f"(default: {DEFAULT_TIME})")
    add("-c", "--cpus-per-task", type=positive_int, metavar="N", help="CPUs per task (default 1)")
    add("--ntasks-per-node", type=positive_int, metavar="N", help="tasks per node (default 1)")
    add("-n", "--ntasks", type=positive_int, metavar="N", help="tasks: a job runs on one node here, so the same "
        "as --ntasks-per-node")
    add("-N", "--nodes", metavar="N", help="nodes: 1 (a job runs on one node here; another count is warned "
        "about and ignored)")
    add("--mem", metavar="SIZE", help="memory per node, megabytes or with a K/M/G/T suffix (default: the "
        "server's, 1G)")
    add("--exclusive", action="store_const", const=True, help="the job gets whole nodes")
    add("-o", "--output", metavar="FILE", help=f"stdout file, relative to the working directory (default "
        f"{DEFAULT_OUTPUT}); %%j is the job id, %%x the job name, %%u the account")
    add("-e", "--error", metavar="FILE", help="stderr file (default: the same file as --output, as sbatch)")
    add("-D", "--chdir", metavar="DIR", help="working directory (default: the current directory); must be "
        "inside the server's job roots")
    add("--export", metavar="ALL|NONE|VARS", help="environment given to the job (default ALL): ALL = this "
        "shell's variables except HOME, USER, LOGNAME, SHELL, TMPDIR, PWD, OLDPWD, SHLVL and SCNS_*/SLURM_*; "
        "NONE = none (the node's clean base only); NAME or NAME=value items, comma-separated: only those, "
        "added to ALL when it is listed too")
    add("--requeue", dest="requeue", action="store_const", const=True,
        help="queue the job again if its node is lost (instead of NODE_FAIL)")
    add("--no-requeue", dest="requeue", action="store_const", const=False, help="never requeue (default)")


class DirectiveError(Exception):
    pass


class _DirectiveParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit
        raise DirectiveError(message)


def directive_parser() -> argparse.ArgumentParser:
    parser = _DirectiveParser(prog="#SBATCH", add_help=False, allow_abbrev=False)
    add_job_options(parser)
    return parser


@dataclass
class Directives:
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def directive_lines(script: str) -> list[tuple[int, str, str]]:
    """(line number, prefix, rest) of each directive before the first command."""
    found = []
    for number, line in enumerate(script.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        for prefix in PREFIXES:
            rest = line[len(prefix):]
            if line.startswith(prefix) and (not rest or rest[0].isspace()):
                found.append((number, prefix, rest.strip()))
    return found


def read_directives(script: str, source: str = "script") -> Directives:
    """The options the script's directives give; unsupported sbatch options are warnings, a bad
    value of a supported one is a CliError naming the line."""
    parser = directive_parser()
    result = Directives()
    layers: dict[str, dict[str, Any]] = {prefix: {} for prefix in PREFIXES}
    for number, prefix, rest in directive_lines(script):
        try:
            tokens = shlex.split(rest, comments=True)
        except ValueError as error:
            raise CliError(f"{source}:{number}: {prefix} {rest}: {error}") from None
        if not tokens:
            continue
        try:
            known, unknown = parser.parse_known_args(tokens)
        except DirectiveError as error:
            raise CliError(f"{source}:{number}: {prefix} {rest}: {error}") from None
        if unknown:
            result.warnings.append(f"{source}:{number}: {prefix} {' '.join(unknown)}: not supported by scns, ignored")
        layers[prefix].update({key: value for key, value in vars(known).items() if value is not None})
    for prefix in PREFIXES:  # #SCNS after #SBATCH
        result.options.update(layers[prefix])
    return result


def export_environment(spec: str | None, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The `environment` object of the request for --export, and warnings.

    ALL (the default): every variable of `environ` that a shell can export, but NOT_EXPORTED and
    SCNS_*/SLURM_*. NONE: nothing. Otherwise comma-separated items: ALL, NONE, NAME (its value
    here; a warning if unset) or NAME=value; with neither ALL nor NONE only the items are sent
    (as Slurm's --export=NAME,...)."""
    items = [item for item in (spec or "ALL").split(",") if item.strip()]
    if not items:
        raise CliError("--export: give ALL, NONE or NAME[=value] items")
    environment: dict[str, str] = {}
    warnings: list[str] = []
    if any(item.strip().upper() == "ALL" for item in items):
        environment = {name: value for name, value in environ.items()
                       if VARIABLE_NAME.match(name) and "\x00" not in value and name not in NOT_EXPORTED
                       and not name.startswith(NOT_EXPORTED_PREFIXES)}
    for item in items:
        word = item.strip()
        if word.upper() in ("ALL", "NONE"):
            continue
        name, equals, value = word.partition("=")
        if not VARIABLE_NAME.match(name):
            raise CliError(f"--export: {name!r} is not a variable name a shell can export")
        if equals:
            environment[name] = value
        elif name in environ:
            environment[name] = environ[name]
        else:
            warnings.append(f"--export: {name} is not set here, not exported")
    if len(environment) > MAX_ENV_ENTRIES:
        raise CliError(f"--export would send {len(environment)} variables, the server takes at most "
                       f"{MAX_ENV_ENTRIES}: use --export=NONE or --export=NAME,...")
    if sum(len(k.encode()) + len(v.encode()) for k, v in environment.items()) > MAX_ENV_BYTES:
        raise CliError("--export would send more than 128 KiB of variables, the server's limit: use --export=NONE "
                       "or --export=NAME,...")
    return environment, warnings


def wrap_script(command: str) -> str:
    """sbatch --wrap: the command under /bin/sh."""
    return f"{WRAP_SHEBANG}\n{command}\n"


@dataclass
class Submission:
    """One script made into a request."""

    source: str  # the file name, "<stdin>" or "--wrap"
    body: dict[str, Any]
    warnings: list[str]


def build_submission(script: str, source: str, options: Mapping[str, Any], *, cwd: str,
                     environ: Mapping[str, str], default_name: str, default_account: str | None,
                     default_partition: str) -> Submission:
    """The request for `script`: defaults, then the script's directives, then `options` (the
    command line's, None where not given)."""
    if not script.strip():
        raise CliError(f"{source}: the script is empty")
    directives = read_directives(script, source)
    merged: dict[str, Any] = dict(directives.options)
    merged.update({key: value for key, value in options.items() if key in OPTION_KEYS and value is not None})
    warnings = list(directives.warnings)

    account = merged.get("account") or default_account
    if not account:
        raise CliError("no account: give -A/--account (or #SBATCH --account, SCNS_ACCOUNT, or `account` in the "
                       "config file)")
    name = merged.get("name") or default_name
    partition = merged.get("partition") or default_partition
    time_limit = merged.get("time") or DEFAULT_TIME
    try:
        parse_time_limit(time_limit)
    except FormatError as error:
        raise CliError(f"--time: {error}") from None
    directory = merged.get("chdir") or cwd
    directory = posixpath.normpath(posixpath.join(cwd, os.path.expanduser(directory)))
    output = expand_name(merged.get("output") or DEFAULT_OUTPUT, name, account)
    error_file = expand_name(merged["error"], name, account) if merged.get("error") else output
    environment, export_warnings = export_environment(merged.get("export"), environ)
    warnings += export_warnings

    job: dict[str, Any] = {
        "account": account, "name": name, "partition": partition, "current_working_directory": directory,
        "standard_output": output, "standard_error": error_file, "time_limit": time_limit,
        "environment": environment, "data_source": "CLI",
    }
    if merged.get("cpus_per_task") is not None:
        job["cpus_per_task"] = merged["cpus_per_task"]
    if merged.get("ntasks_per_node") is not None:
        job["ntasks_per_node"] = merged["ntasks_per_node"]
    elif merged.get("ntasks") is not None:
        job["ntasks_per_node"] = merged["ntasks"]
    if merged.get("nodes") is not None and str(merged["nodes"]).strip() not in ("1", "1-1"):
        warnings.append(f"--nodes={merged['nodes']}: a job runs on one node in SCNS-Conductor; ignored")
    if merged.get("mem") is not None:
        memory = str(merged["mem"]).strip().upper().removesuffix("B")  # 4GB as 4G
        try:
            parse_memory_mb(memory)
        except FormatError as error:
            raise CliError(f"--mem: {error}") from None
        job["memory_per_node"] = memory
    if merged.get("exclusive"):
        job["exclusive"] = True
    if merged.get("requeue") is not None:
        job["requeue"] = merged["requeue"]
    return Submission(source, {"job": job, "script": script}, warnings)


def expand_name(pattern: str, name: str, account: str) -> str:
    """sbatch's %x (job name) and %u (user: the account here) are expanded here; %j by the server."""
    return pattern.replace("%x", name).replace("%u", account)
