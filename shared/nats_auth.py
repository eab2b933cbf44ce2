"""Who may say what on NATS: one user per service (and per executor node), each allowed only the
subjects it needs, so no part can forge the facts of another.

The rules are a pure function of the role (`permissions`); `server_authorization` renders them
as nats-server configuration and `issue_credentials` makes the users with random passwords,
kept as owner-only files (the embedded stack does this under `.scns/` on first start). A
service is given its file by the setting NATS_CREDENTIALS.

Every user gets its own inbox prefix (`_INBOX_<user>`), and may subscribe only to that, so no
one reads the replies (JetStream acks, logs, probes) meant for another. JetStream's API is
granted per stream and per call; the durable consumers of the executors are reserved to their
node, so another client can neither take nor ack their allocations.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import msgspec

from shared.events import (
    ACTIVE_SCHEDULER_SUBJECT,
    NODE_NAME,
    HEARTBEAT_SUBJECT,
    LOGS_SUBJECT,
    SNAPSHOTS_BUCKET,
    STREAM,
    SUBJECTS,
    TOKENS_BUCKET,
    JobAllocated,
    JobCancelled,
    JobCancelRequested,
    JobFinished,
    JobLost,
    JobRequeued,
    JobStarted,
    JobSubmitted,
    NodeDown,
    NodeDrained,
    NodeRegistered,
    NodeResumed,
    SchedulerElected,
    executor_consumer,
)
from shared.rpc import REBUILD_SUBJECT

ADMIN, GATEWAY, SCHEDULER, PROJECTOR, INTEGRATION = "admin", "gateway", "scheduler", "projector", "integration"
SERVICES = (GATEWAY, SCHEDULER, PROJECTOR)
EXECUTOR_PREFIX = "executor-"  # an executor's user is "executor-<node>"


class Credentials(msgspec.Struct):
    user: str
    password: str

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user)


def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


def executor_user(node: str) -> str:
    if not NODE_NAME.match(node):  # a dot or a wildcard would widen the node's grants
        raise ValueError(f"node name {node!r} must be 1-64 letters, digits, '_' or '-'")
    return f"{EXECUTOR_PREFIX}{node}"


def _any(template: str) -> str:
    """A subject template with every placeholder a wildcard."""
    return template.format(job_id="*", node="*")


def _of_node(event: type, node: str) -> str:
    return SUBJECTS[event].format(job_id="*", node=node)


def _reading(stream: str, durables: str | None = None) -> list[str]:
    """Read a stream: its info, single messages, and consumers of one's own, named in the subject
    of their creation (the bare CONSUMER.CREATE.<stream> takes the name from the request, which
    would let anyone redefine a reserved consumer); `durables`: legacy durable creation too."""
    api = "$JS.API"
    return [f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.MSG.GET.{stream}", f"{api}.DIRECT.GET.{stream}",
            f"{api}.DIRECT.GET.{stream}.>", f"{api}.CONSUMER.CREATE.{stream}.>",
            *([f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{durables}"] if durables else []),
            f"{api}.CONSUMER.INFO.{stream}.*", f"{api}.CONSUMER.DELETE.{stream}.*",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.*", f"$JS.ACK.{stream}.*.>", f"$JS.FC.{stream}.>"]


def _bucket(kind: str, bucket: str) -> list[str]:
    """Own a key-value ("KV") or object ("OBJ") store: make it if missing, read and write it. (nats-py's
    readers of a store make unnamed consumers and look its stream up by subject.)"""
    stream = f"{kind}_{bucket}"
    subjects = f"$KV.{bucket}.>" if kind == "KV" else f"$O.{bucket}.>"
    return [*_reading(stream), f"$JS.API.CONSUMER.CREATE.{stream}", "$JS.API.STREAM.NAMES",
            f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.PURGE.{stream}", subjects]


def _answering(*requesters: str) -> list[str]:
    """Answer requests, only to the inboxes of those meant to ask: a reply subject is the
    requester's choice, and a blanket right to answer would let it aim the answer into the log."""
    return [f"{inbox_prefix(requester)}.>" for requester in requesters]


def _reserved_consumers(nodes: list[str], own: str | None = None) -> list[str]:
    """What no one but an executor may do with that executor's durable consumer."""
    denied = []
    for node in nodes:
        durable = executor_consumer(node)
        if durable == own:
            continue
        denied += [f"$JS.API.CONSUMER.{call}.{STREAM}.{durable}" for call in ("CREATE", "DELETE", "MSG.NEXT")]
        denied += [f"$JS.API.CONSUMER.CREATE.{STREAM}.{durable}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{durable}",
                   f"$JS.ACK.{STREAM}.{durable}.>"]
    return denied


def permissions(user: str, nodes: list[str]) -> dict | None:
    """The nats-server permissions of a user (None: all, for the admin), given the cluster's nodes."""
    if user == ADMIN:
        return None
    publish: list[str]
    subscribe: list[str] = []
    durables = None
    own_consumer = None
    if user == GATEWAY:
        publish = [SUBJECTS[JobSubmitted], _any(SUBJECTS[JobCancelRequested]), _any(SUBJECTS[NodeDrained]),
                   _any(SUBJECTS[NodeResumed]), _any(LOGS_SUBJECT), REBUILD_SUBJECT,
                   f"$JS.API.CONSUMER.LIST.{STREAM}", *_bucket("KV", TOKENS_BUCKET)]
        subscribe = [_any(HEARTBEAT_SUBJECT)]
    elif user == SCHEDULER:
        # The log's keeper: it makes the stream when there is none, and applies a new retention.
        publish = [*(_any(SUBJECTS[event]) for event in (JobAllocated, JobLost, JobRequeued, JobCancelled, NodeDown,
                                                          SchedulerElected)),
                   ACTIVE_SCHEDULER_SUBJECT, *_answering(SCHEDULER), *_bucket("OBJ", SNAPSHOTS_BUCKET),
                   f"$JS.API.STREAM.CREATE.{STREAM}", f"$JS.API.STREAM.UPDATE.{STREAM}"]
        subscribe = [ACTIVE_SCHEDULER_SUBJECT, _any(HEARTBEAT_SUBJECT)]
    elif user == PROJECTOR:
        publish = _answering(GATEWAY, ADMIN)
        subscribe = [REBUILD_SUBJECT]
    elif user.startswith(EXECUTOR_PREFIX):
        node = user.removeprefix(EXECUTOR_PREFIX)
        durables = own_consumer = executor_consumer(node)
        publish = [*(_of_node(event, node) for event in (JobStarted, JobFinished, JobRequeued)),
                   SUBJECTS[NodeRegistered].format(node=node), HEARTBEAT_SUBJECT.format(node=node),
                   *_answering(GATEWAY, ADMIN)]
        subscribe = [LOGS_SUBJECT.format(node=node)]
    elif user == INTEGRATION:
        # Read-only: it reads the log (with durable consumers of its own) and watches the live events.
        durables = "*"
        publish = []
        subscribe = ["scns.>"]
    else:
        raise ValueError(f"no such NATS user: {user!r}")
    return {
        "publish": {"allow": [*_reading(STREAM, durables), "$JS.API.INFO", *publish],
                    "deny": _reserved_consumers(nodes, own_consumer)},
        "subscribe": {"allow": [f"{inbox_prefix(user)}.>", *subscribe]},
    }


def users_for(nodes: list[str]) -> list[str]:
    return [ADMIN, *SERVICES, *(executor_user(node) for node in nodes), INTEGRATION]


def server_authorization(credentials: list[Credentials], nodes: list[str]) -> str:
    """The `authorization` block of a nats-server configuration (JSON is valid configuration)."""
    users = []
    for entry in credentials:
        user = {"user": entry.user, "password": entry.password}
        if (rules := permissions(entry.user, nodes)) is not None:
            user["permissions"] = rules
        users.append(user)
    return "authorization: " + json.dumps({"users": users}, indent=1) + "\n"


def credentials_path(folder: Path, user: str) -> Path:
    return folder / f"{user}.json"


def issue_credentials(folder: Path, nodes: list[str]) -> list[Credentials]:
    """Every user's credentials, made (random password, owner-only file) where missing, kept otherwise."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    issued = []
    for user in users_for(nodes):
        path = credentials_path(folder, user)
        if path.exists():
            issued.append(read_credentials(path))
            continue
        credentials = Credentials(user, secrets.token_urlsafe(24))
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        with open(temporary, "xb", opener=lambda name, flags: os.open(name, flags, 0o600)) as file:
            file.write(msgspec.json.encode(credentials))
        temporary.replace(path)
        issued.append(credentials)
    return issued


class CredentialsError(ValueError):
    pass


def read_credentials(path: Path) -> Credentials:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Credentials)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        # The error names the file, never its content.
        raise CredentialsError(f"NATS credentials {path} are not readable: {type(error).__name__}") from None


def write_server_authorization(folder: Path, nodes: list[str]) -> Path:
    """Make (or keep) every user's credentials in `folder`, and the server's `authorization.conf`
    beside them: for a nats-server of one's own (`include` it in its configuration)."""
    path = folder / "authorization.conf"
    text = server_authorization(issue_credentials(folder, nodes), nodes)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0].startswith("-"):
        print("usage: python -m shared.nats_auth FOLDER NODE [NODE ...]\n"
              "  makes each user's NATS credentials in FOLDER (kept if present) and FOLDER/authorization.conf\n"
              "  for nats-server; run it again with the new list when a node joins, then reload nats-server",
              file=sys.stderr)
        return 2
    folder, nodes = Path(argv[0]), argv[1:]
    try:
        path = write_server_authorization(folder, nodes)
    except (OSError, CredentialsError) as error:
        print(f"nats_auth: {error}", file=sys.stderr)
        return 1
    print(f"{path}: include it in nats-server's configuration; give each service its file "
          f"({', '.join(credentials_path(folder, user).name for user in users_for(nodes))}) as NATS_CREDENTIALS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
