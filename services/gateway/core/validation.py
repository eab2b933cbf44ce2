"""Submit requests: their wire types and the rules of API.md, as a pure function to a JobSpec.

Errors come out in FastAPI's shape, which the original's clients parse:
`{"type", "loc", "msg", "input"}`, custom rule messages starting with "Value error, ".
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from services.gateway.core.views import decode_cursor
from shared.environment import MAX_ENV_BYTES, MAX_ENV_ENTRIES, VARIABLE_NAME
from shared.events import JobSpec
from shared.paths import within_roots
from shared.slurm_formats import FormatError, parse_memory_mb, parse_time_limit

T = TypeVar("T")
MAX_SCRIPT_BYTES = 1024 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024  # 413 beyond: a 1 MiB script may grow six-fold as escaped JSON

Text255 = Annotated[str, Meta(min_length=1, max_length=255)]


class JobRequest(msgspec.Struct, kw_only=True):
    account: Text255
    name: Text255
    partition: Annotated[str, Meta(min_length=1, max_length=100)]
    current_working_directory: Annotated[str, Meta(min_length=1, max_length=1024)]
    standard_output: Annotated[str, Meta(min_length=1, max_length=512)]
    standard_error: Annotated[str, Meta(min_length=1, max_length=512)]
    time_limit: Annotated[str, Meta(min_length=1, max_length=32)]
    environment: dict[str, str] = {}
    ntasks_per_node: Annotated[int, Meta(ge=1)] = 1
    cpus_per_task: Annotated[int, Meta(ge=1)] = 1
    memory_per_node: Annotated[str, Meta(max_length=20, pattern=r"^[0-9]+[KMGTkmgt]?$")] = "1G"
    exclusive: bool = False
    requeue: bool = False  # new: queued again (same id) if its node is lost, instead of NODE_FAIL
    data_source: Literal["API", "CLI"] = "API"  # new: "CLI" when the scns command line submits it


class SubmitRequest(msgspec.Struct, kw_only=True):
    job: JobRequest
    script: str


class TokenRequest(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    account: Text255
    role: Literal["user", "admin"] = "user"


@dataclass(frozen=True, slots=True)
class PartitionCapacity:
    """The largest node of a partition, by CPUs and by memory."""

    max_cpus: int
    max_memory_mb: int


class RequestInvalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["msg"] if errors else "invalid request")
        self.errors = errors


def error(loc: list, msg: str, value: Any, kind: str = "value_error") -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def rule_error(loc: list, msg: str, value: Any) -> dict[str, Any]:
    return error(loc, f"Value error, {msg}", value)


_PATH = re.compile(r"`\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]]*\])*)`")
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
# msgspec's messages, as FastAPI (pydantic 2) words them: (pattern, type, message template).
_MESSAGES = [
    (re.compile(r"Expected `str` of length >= (\d+)"), "string_too_short",
     "String should have at least {0} character{s}"),
    (re.compile(r"Expected `str` of length <= (\d+)"), "string_too_long",
     "String should have at most {0} character{s}"),
    (re.compile(r"Expected `str` matching regex '(.*)'"), "string_pattern_mismatch", "String should match pattern '{0}'"),
    (re.compile(r"Expected `int` >= (\d+)"), "greater_than_equal", "Input should be greater than or equal to {0}"),
    (re.compile(r"Expected `int` <= (\d+)"), "less_than_equal", "Input should be less than or equal to {0}"),
    (re.compile(r"Expected `str`"), "string_type", "Input should be a valid string"),
    (re.compile(r"Expected `int`, got `str`"), "int_parsing",
     "Input should be a valid integer, unable to parse string as an integer"),
    (re.compile(r"Expected `int`"), "int_type", "Input should be a valid integer"),
    (re.compile(r"Expected `bool`"), "bool_type", "Input should be a valid boolean"),
    (re.compile(r"Expected `object`"), "dict_type", "Input should be a valid dictionary"),
    (re.compile(r"Invalid enum value '(.*)'"), "literal_error", "Input should be one of the allowed values"),
]


def _loc_of(message: str, root: str = "body") -> list:
    match = _PATH.search(message)
    parts: list = [root]
    if match:
        for name, index in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", match[1]):
            parts.append(name if name else int(index))
    return parts


def _input_at(document: Any, loc: list) -> Any:
    for key in loc[1:]:
        try:
            document = document[key]
        except (KeyError, IndexError, TypeError):
            return None
    return document


def convert_errors(exc: msgspec.ValidationError, document: Any, root: str = "body") -> RequestInvalid:
    """A msgspec validation error, in FastAPI's shape (msgspec reports the first error only)."""
    message = str(exc)
    loc = _loc_of(message, root)
    if missing := _MISSING.search(message):
        return RequestInvalid([error([*loc, missing[1]], "Field required", _input_at(document, loc), "missing")])
    for pattern, kind, template in _MESSAGES:
        if found := pattern.search(message):
            groups = found.groups()
            text = template.format(*groups, s="" if groups and groups[0] == "1" else "s")
            return RequestInvalid([error(loc, text, _input_at(document, loc), kind)])
    return RequestInvalid([error(loc, message.split(" - at `")[0], _input_at(document, loc))])


def decode_body(body: bytes, kind: type[T]) -> T:
    """Bytes to a request type, or RequestInvalid in FastAPI's shape."""
    try:
        document = msgspec.json.decode(body)
    except RecursionError:
        raise RequestInvalid([error(["body"], "JSON decode error", {}, "json_invalid")]) from None
    except msgspec.DecodeError as exc:
        position = re.search(r"byte (\d+)", str(exc))
        loc = ["body", int(position[1])] if position else ["body"]
        raise RequestInvalid([error(loc, "JSON decode error", {}, "json_invalid")]) from exc
    try:
        return msgspec.convert(document, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise convert_errors(exc, document) from None


def decode_submit(body: bytes) -> SubmitRequest:
    return decode_body(body, SubmitRequest)


def to_spec(
    request: SubmitRequest,
    partitions: dict[str, PartitionCapacity],
    job_roots: list[str],
    inside_roots: Callable[[str, list[str]], bool] = within_roots,
) -> JobSpec:
    """Apply every rule of API.md; all failures are reported together. `inside_roots(path, job_roots)`
    says whether a path resolves inside the roots (the file system's answer: given, as core is pure)."""
    job = request.job
    errors: list[dict[str, Any]] = []

    def check(field: str, value: Any, rule):
        try:
            return rule(value)
        except (FormatError, ValueError) as failure:
            errors.append(rule_error(["body", "job", field], str(failure), value))
            return None

    time_limit_s = check("time_limit", job.time_limit, parse_time_limit)
    memory_mb = check("memory_per_node", job.memory_per_node, parse_memory_mb)

    capacity = partitions.get(job.partition)
    if capacity is None:
        known = ", ".join(sorted(partitions)) or "none: no node has registered yet"
        errors.append(rule_error(["body", "job", "partition"],
                                 f"partition {job.partition!r} is not served by any node; known partitions: {known}",
                                 job.partition))
    else:
        cpus = job.ntasks_per_node * job.cpus_per_task
        if cpus > capacity.max_cpus:
            errors.append(rule_error(
                ["body", "job", "cpus_per_task"],
                f"ntasks_per_node x cpus_per_task = {cpus} CPUs, but the largest node of partition "
                f"{job.partition!r} has {capacity.max_cpus}", job.cpus_per_task))
        if memory_mb is not None and memory_mb > capacity.max_memory_mb:
            errors.append(rule_error(
                ["body", "job", "memory_per_node"],
                f"{job.memory_per_node} is more than the largest node of partition {job.partition!r} has "
                f"({capacity.max_memory_mb} MB)", job.memory_per_node))

    for field in ("account", "name", "partition", "current_working_directory", "standard_output", "standard_error"):
        if "\x00" in getattr(job, field):
            errors.append(rule_error(["body", "job", field], "must not contain a NUL character", getattr(job, field)))
    if errors:
        raise RequestInvalid(errors)  # nothing below may see a NUL (paths, the database)

    cwd = job.current_working_directory
    if not posixpath.isabs(cwd):
        errors.append(rule_error(["body", "job", "current_working_directory"], "must be an absolute path", cwd))
    elif not inside_roots(cwd, job_roots):
        errors.append(rule_error(["body", "job", "current_working_directory"],
                                 f"must be inside the job roots: {':'.join(job_roots)}", cwd))
    else:
        for field in ("standard_output", "standard_error"):
            path = getattr(job, field)
            if not inside_roots(posixpath.join(cwd, path.replace("%j", "0")), job_roots):
                errors.append(rule_error(["body", "job", field],
                                         f"must resolve inside the job roots: {':'.join(job_roots)}", path))

    for name, value in job.environment.items():
        if not VARIABLE_NAME.match(name) or "\x00" in value:
            errors.append(rule_error(["body", "job", "environment", name],
                                     "names are letters, digits and '_' (not first a digit); values have no NUL",
                                     value))
    if len(job.environment) > MAX_ENV_ENTRIES:
        errors.append(rule_error(["body", "job", "environment"], f"at most {MAX_ENV_ENTRIES} entries", None))
    elif sum(len(k.encode()) + len(v.encode()) for k, v in job.environment.items()) > MAX_ENV_BYTES:
        errors.append(rule_error(["body", "job", "environment"], "at most 128 KiB in all", None))

    if "\x00" in request.script:
        errors.append(rule_error(["body", "script"], "must not contain a NUL character", None))
    elif not request.script.strip():
        errors.append(rule_error(["body", "script"], "the script is blank", request.script))
    elif len(request.script.encode()) > MAX_SCRIPT_BYTES:
        errors.append(rule_error(["body", "script"], "the script is larger than 1 MiB", None))

    if errors:
        raise RequestInvalid(errors)
    return JobSpec(
        account=job.account, name=job.name, partition=job.partition, cwd=posixpath.normpath(cwd),
        stdout=job.standard_output, stderr=job.standard_error, script=request.script,
        time_limit_s=time_limit_s, environment=job.environment, ntasks_per_node=job.ntasks_per_node,
        cpus_per_task=job.cpus_per_task, memory_mb=memory_mb, exclusive=job.exclusive, data_source=job.data_source,
        requeue=job.requeue,
    )


NO_NUL = "^[^\x00]*$"  # PostgreSQL's text cannot hold a NUL
JOB_STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
MAX_PAGE = 1000


class Listing(msgspec.Struct, kw_only=True):
    """GET /jobs's query parameters."""

    state: Literal[JOB_STATES] | None = None  # type: ignore[valid-type]
    account: Annotated[str, Meta(min_length=1, max_length=255, pattern=NO_NUL)] | None = None
    partition: Annotated[str, Meta(min_length=1, max_length=100, pattern=NO_NUL)] | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE)] = 100
    cursor: str | None = None

    @property
    def before(self) -> int | None:
        return decode_cursor(self.cursor) if self.cursor is not None else None


def parse_listing(params: dict[str, str]) -> Listing:
    try:
        listing = msgspec.convert(params, Listing, strict=False)
    except msgspec.ValidationError as exc:
        raise convert_errors(exc, params, root="query") from None
    try:
        listing.before
    except ValueError as exc:
        raise RequestInvalid([rule_error(["query", "cursor"], str(exc), listing.cursor)]) from None
    return listing


def parse_job_id(text: str) -> int:
    """A job id from the path; an integer that cannot be a job (0, negative) is simply not found."""
    if re.fullmatch(r"-?[0-9]{1,18}", text) is None:
        raise RequestInvalid([error(["path", "job_id"], "Input should be a valid integer, unable to parse string "
                                    "as an integer", text, "int_parsing")])
    return int(text)
