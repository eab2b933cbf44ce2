"""The JetStream event log, as every service uses it: connect, publish an event, read it back.

The stream is made by its keeper (the scheduler, or an admin's tool) and checked by everyone
who connects: a stream configured so that events could be lost is refused. Publishing waits for the
JetStream ack, so an event returned from `publish` is durable. `Nats-Msg-Id` makes a retried
publish of the same decision a no-op within the dedup window; consumers are idempotent beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client, ServerVersion
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    DEFAULT_PREFIX,
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from shared.config import ConfigError, Settings
from shared.events import STREAM, STREAM_SUBJECTS, AnyEvent, Event, RunEndEvent, decode, encode, end_of, subject_of
from shared.nats_auth import Credentials, CredentialsError, read_credentials

log = logging.getLogger(__name__)

# Every end and every scheduler decision is a compare-and-set over another subject than its own
# (Nats-Expected-Last-Subject-Sequence-Subject), which older servers silently ignore.
MIN_SERVER_VERSION = (2, 11)
DUPLICATE_WINDOW_S = 120.0
CONNECT_TIMEOUT_S = 2.0
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code when an expected-last-sequence check fails
REPLAY_INACTIVE_S = 60.0  # an abandoned reader's consumer disappears after this
REPLAY_POLL_S = 5.0
# A reader keeps a pull request of PULL_BATCH messages open (see `pulled`). While none comes, the
# server sends a heartbeat every PULL_HEARTBEAT_S; two of them missed, the request is taken for
# lost (NATS restarted, say) and made again. A request lasts PULL_EXPIRES_S, then is renewed, so
# the server forgets one of a reader that vanished soon enough.
PULL_BATCH = 512
PULL_HEARTBEAT_S = 2.5
PULL_EXPIRES_S = 30.0
PENDING_MESSAGES = "Nats-Pending-Messages"  # what an expired request had not delivered
API_TIMEOUT_S = 5.0  # nats-py's own, for JetStream API requests
RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0
# What an outage or restart of NATS looks like to a client: to be waited out, never fatal.
NATS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,  # nats.errors.TimeoutError is one
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    ServiceUnavailableError,
)


class LogBehindReadModel(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Delivered:
    seq: int
    subject: str
    event: AnyEvent
    stored_at: datetime | None = None  # when JetStream stored it


def decode_message(msg: Msg) -> Delivered | None:
    """The event of a stream message, or None (logged) for data that is not one of ours."""
    return _delivered(msg.metadata.sequence.stream, msg.subject, msg.data, msg.metadata.timestamp)


def _event_of(stored: StoredMessage | None) -> Delivered | None:
    return None if stored is None else _delivered(stored.seq, stored.subject, stored.data, stored.time)


def _delivered(seq: int, subject: str, data: bytes, stored_at: datetime | None) -> Delivered | None:
    try:
        event = decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        log.warning("skipping undecodable message seq=%s subject=%s: %s", seq, subject, error)
        return None
    # Who may publish is granted by subject (an executor only under its own node's subjects): an
    # event whose content names another subject than the one it was published on is not believed.
    if subject_of(event) != subject:
        log.warning("skipping seq=%s: a %s published on %s, not on its own subject %s", seq,
                    type(event).__name__, subject, subject_of(event))
        return None
    return Delivered(seq, subject, event, stored_at)


class StoredMessage(msgspec.Struct, frozen=True):
    """A message as the stream holds it (its data base64 in the API's JSON, decoded here; left
    out of it when empty)."""

    subject: str
    seq: int
    time: datetime
    data: bytes = b""


class _MessageGetReply(msgspec.Struct):
    message: StoredMessage | None = None
    error: dict | None = None


_decode_get_reply = msgspec.json.Decoder(_MessageGetReply).decode


class JetStreamEventLog:
    """The SCNS stream over one NATS connection."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()

    @classmethod
    async def connect(cls, url: str, name: str, *, credentials: Credentials | None = None,
                      tls: ssl.SSLContext | None = None, replicas: int = 1, max_age_days: float = 0,
                      keeper: bool = True, retry_for: float = 60.0) -> JetStreamEventLog:
        """Connect (retrying while the server comes up), then make sure the stream is there and
        right; a `keeper` makes it when missing and applies a changed retention."""
        deadline = asyncio.get_running_loop().time() + retry_for
        login = ({"user": credentials.user, "password": credentials.password,
                  "inbox_prefix": credentials.inbox_prefix} if credentials else {})
        refused: list[Exception] = []

        async def on_error(error: Exception) -> None:
            if isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in str(error).lower():
                refused.append(error)
            await _log_nats_error(error)

        while True:
            try:
                # One try per server here (nats-py would retry a first connect forever, even with
                # wrong credentials); once connected, it reconnects through any outage.
                servers = url.split(",")
                nc = Client()
                try:
                    # Bounded too: nats-py may hang in a first connect whose TLS handshake failed.
                    await asyncio.wait_for(nc.connect(
                        servers, name=name, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=1,
                        reconnect_time_wait=0.5, tls=tls, error_cb=on_error, **login,
                    ), timeout=2 * len(servers) * (CONNECT_TIMEOUT_S + 0.5) + 1)
                except BaseException:
                    await nc.close()  # what a cut-short attempt left open
                    raise
                nc.options["max_reconnect_attempts"] = -1
                break
            except (OSError, nats.errors.NoServersError, asyncio.TimeoutError) as error:
                if refused:
                    raise ConnectionError(f"NATS at {url} refused the credentials of {name}") from None
                if asyncio.get_running_loop().time() > deadline:
                    raise ConnectionError(f"NATS at {url} is not reachable: {error or 'no answer in time'}") from error
                await asyncio.sleep(0.25)
        events = cls(nc)
        try:
            require_server_version(nc.connected_server_version)
            await events.ensure_stream(replicas, max_age_days, keeper, wait_for=retry_for)
        except BaseException:
            await nc.close()
            raise
        return events

    @classmethod
    async def for_service(cls, settings: Settings, name: str, retry_for: float = 60.0,
                          keeper: bool = False) -> JetStreamEventLog:
        """Connect as a service does: NATS, its credentials and TLS, the stream's replication and
        retention, all from settings. Only the scheduler keeps the stream (its NATS grants say so)."""
        try:
            credentials = read_credentials(Path(settings.nats_credentials)) if settings.nats_credentials else None
        except CredentialsError as error:
            raise ConfigError(str(error)) from None
        return await cls.connect(settings.nats_url, name, credentials=credentials, tls=nats_tls(settings),
                                 replicas=settings.stream_replicas, max_age_days=settings.stream_max_age_days,
                                 keeper=keeper, retry_for=retry_for)

    async def check_not_behind(self, read_model_position: int) -> None:
        """Refuse a log that is behind the read model: it was recreated, and job ids would be reused."""
        last_seq = await self.last_seq()
        if read_model_position > last_seq:
            raise LogBehindReadModel(
                f"the event log ends at seq {last_seq} but the read model has applied up to {read_model_position}: "
                f"the stream was recreated or restored from an old copy, and new jobs would reuse old ids. "
                f"Restore the stream, or recreate it with first_seq > {read_model_position}"
            )

    async def ensure_stream(self, replicas: int = 1, max_age_days: float = 0, keeper: bool = True,
                            wait_for: float = 60.0) -> None:
        """Make sure the stream is there and configured as the log must be. A keeper makes it when
        missing and applies a changed retention; anyone else waits for it, and only warns."""
        config = stream_config(replicas, max_age_days)
        deadline = asyncio.get_running_loop().time() + wait_for
        while True:
            try:
                info = await self.js.stream_info(STREAM)
                break
            except NotFoundError:
                if keeper:
                    try:
                        await self.js.add_stream(config)
                        return
                    except nats.js.errors.BadRequestError:
                        continue  # made meanwhile by another
                if asyncio.get_running_loop().time() > deadline:
                    raise ConnectionError(f"there is no stream {STREAM} (the event log) after {wait_for:.0f} s: "
                                          f"the scheduler makes it") from None
                await asyncio.sleep(0.25)
        if problems := stream_mismatch(info.config, config):
            raise ConnectionError(f"the stream {STREAM} is not as the event log must be ({'; '.join(problems)}): "
                                  f"fix or recreate it with the admin's credentials")
        if (info.config.max_age or 0) != (config.max_age or 0):
            if keeper:
                await self.js.update_stream(config)
            else:
                log.warning("the stream's retention differs from STREAM_MAX_AGE_DAYS; the scheduler applies it")

    async def close(self) -> None:
        # Not drain(): it waits on the pull subscriptions' outstanding requests for up to 30 s.
        # Every publish of ours is already acked by the time we close.
        if not self.nc.is_closed:
            await self.nc.close()

    async def publish(self, event: Event, msg_id: str | None = None, timeout: float | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bool]:
        """Append an event; returns (stream sequence, whether it was a duplicate of an earlier one)."""
        subject = subject_of(event)
        candidates = msg_ids(msg_id, subject)
        while True:
            candidate = next(candidates)
            ack = await self.js.publish(subject, encode(event), stream=STREAM, timeout=timeout,
                                        headers={**({"Nats-Msg-Id": candidate} if candidate else {}), **(headers or {})}
                                        or None)
            if not ack.duplicate or await self._stored_on(ack.seq, subject):
                return ack.seq, bool(ack.duplicate)

    async def _stored_on(self, seq: int, subject: str) -> bool:
        """Whether the message a duplicate ack names is on our subject. JetStream deduplicates by msg
        id across the whole stream, and ids are predictable: one published first on another subject
        (by a publisher allowed only that one) would otherwise silently swallow ours."""
        stored = await self.stored(seq)
        return stored is not None and stored.subject == subject

    async def publish_if_last(self, event: Event, msg_id: str, subject: str, last_seq: int,
                              headers: dict[str, str] | None = None) -> int | None:
        """Publish only while the last message under `subject` is the one at `last_seq` (0: none
        yet): the event's sequence, or None when another came first. JetStream compares and sets."""
        try:
            return await self.publish_until_acked(event, msg_id, {**(headers or {}), **expect_last(subject, last_seq)})
        except nats.js.errors.BadRequestError as error:
            if is_wrong_last_sequence(error):
                return None
            raise

    async def publish_end(self, event: RunEndEvent, msg_id: str, end_after: int = 0,
                          headers: dict[str, str] | None = None) -> int | None:
        """Publish the end of the job's run that began after `end_after` (see `end_of`), unless that
        run has ended already: its sequence, or None. So each run, and the job, ends once."""
        return await self.publish_if_last(event, msg_id, end_of(event.job_id), end_after, headers)

    async def publish_until_acked(self, event: Event, msg_id: str, headers: dict[str, str] | None = None) -> int:
        """Publish a service's decision, retrying through a NATS outage; the msg id makes retries safe,
        and past the dedup window a retry first looks whether an earlier attempt landed."""
        subject, data = subject_of(event), encode(event)
        delay, retrying = RETRY_MIN_S, False
        candidates = msg_ids(msg_id, subject)
        msg_id = next(candidates)
        while True:
            try:
                if retrying and (landed := await self.stored(last_on=subject)) and landed.data == data:
                    return landed.seq
            except NATS_UNAVAILABLE as error:
                self.give_up_if_stopping()
                delay = await _wait_to_retry(event, error, delay)
                continue
            try:
                ack = await self.js.publish(subject, data, stream=STREAM,
                                            headers={"Nats-Msg-Id": msg_id, **(headers or {})})
                if ack.duplicate and not await self._stored_on(ack.seq, subject):
                    msg_id = next(candidates)
                    continue
                return ack.seq
            except NATS_UNAVAILABLE as error:
                self.give_up_if_stopping()
                retrying = True
                delay = await _wait_to_retry(event, error, delay)

    def give_up_if_stopping(self) -> None:
        """For loops that wait out NATS errors: stop when the task is being cancelled or the
        connection was closed by us. nats-py turns a cancellation into a timeout or a "connection
        closed" error in places, and retrying those would keep a stopping service alive forever."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        if self.nc.is_closed:
            raise nats.errors.ConnectionClosedError

    async def last_seq(self) -> int:
        info = await self.js.stream_info(STREAM)
        return info.state.last_seq

    async def read(self, seq: int) -> Delivered | None:
        """The message at a sequence, or None when there is none (or it is not an event)."""
        if seq < 1:
            return None  # sequences start at 1; JetStream answers 0 with an error, not "not found"
        return _event_of(await self.stored(seq))

    async def last_on(self, subject: str) -> Delivered | None:
        """The last message on a subject (wildcards allowed), or None."""
        return _event_of(await self.stored(last_on=subject))

    async def stored(self, seq: int | None = None, *, last_on: str | None = None) -> StoredMessage | None:
        """The stream's message at `seq`, or the last one on the subject `last_on` (wildcards
        allowed); None when there is none. From the stream leader, not a direct get that any
        replica may answer before it has the newest messages: callers decide on what they read
        here. A request of our own, not nats-py's `get_msg`, which also parses every message's
        headers (with the email package) and builds its objects by introspection: nothing here
        reads the headers, and an executor reads three messages per allocation."""
        where = {"seq": seq} if last_on is None else {"last_by_subj": last_on}
        try:
            reply = await self.nc.request(f"{DEFAULT_PREFIX}.STREAM.MSG.GET.{STREAM}", msgspec.json.encode(where),
                                          timeout=API_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            raise ServiceUnavailableError from None  # JetStream is not up (yet): as nats-py says it
        answer = _decode_get_reply(reply.data)
        if answer.error is None:
            return answer.message
        if answer.error.get("code") == 404:
            return None  # no such message
        raise APIError.from_error(answer.error)  # (which raises the error's own class itself)

    async def history(self, subject: str, start_seq: int = 1) -> list[Delivered]:
        """Every event on `subject` from `start_seq` up to the end of the log as it is now."""
        sub = await self.js.pull_subscribe(subject, stream=STREAM, config=self._reader_config(subject, start_seq))
        try:
            remaining = (await sub.consumer_info()).num_pending
            found = []
            while remaining > 0:
                messages = await sub.fetch(min(remaining, 256), timeout=REPLAY_POLL_S)
                remaining -= len(messages)
                found.extend(d for d in map(decode_message, messages) if d is not None)
            return found
        finally:
            await _quietly(sub.unsubscribe())

    @staticmethod
    def _reader_config(subject: str, start_seq: int) -> ConsumerConfig:
        """An ephemeral consumer without acks: its reader keeps the position."""
        return ConsumerConfig(
            name=f"reader-{secrets.token_hex(8)}",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_policy=AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=REPLAY_INACTIVE_S,
            mem_storage=True,
        )

    async def replay(self, start_seq: int = 1, subject: str = "scns.>") -> AsyncIterator[Msg]:
        """Every message from `start_seq` on, in stream order, then new ones as they come."""
        async with contextlib.aclosing(self.arrivals(start_seq, subject)) as arriving:
            async for messages in arriving:
                for msg in messages:
                    yield msg

    async def arrivals(self, start_seq: int = 1, subject: str = "scns.>") -> AsyncIterator[list[Msg]]:
        """`replay` in lists of the messages that arrived together: a reader that acts at the tip of
        the log acts once on all that came while it was busy, not once per message.

        An ephemeral pull consumer without acks; the reader keeps its own position, so a lost
        consumer (NATS restarted, inactivity) is simply created again from the next sequence.
        """
        next_seq = max(1, start_seq)
        delay = RETRY_MIN_S
        while True:
            try:
                consumer = (await self.js.add_consumer(STREAM, self._reader_config(subject, next_seq))).name
                async with contextlib.aclosing(self.pulled(consumer)) as arriving:
                    async for messages in arriving:
                        delay = RETRY_MIN_S
                        next_seq = messages[-1].metadata.sequence.stream + 1
                        yield messages
            except (NotFoundError, *NATS_UNAVAILABLE) as error:
                self.give_up_if_stopping()
                log.warning("log reader interrupted (%s); resuming from seq %d in %.1f s",
                            type(error).__name__, next_seq, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def pulled(self, consumer: str) -> AsyncIterator[list[Msg]]:
        """The consumer's messages as they come, in lists of those that arrived together.

        One pull request stays open, topped up when half of it is delivered. (nats-py's `fetch`
        makes a request per call, and one that finds nothing ends with a status message: with
        events coming one at a time, each cost every reader a request and a status besides itself,
        and an event that came between two fetches waited for the next request.)
        Raises NotFoundError when the consumer is gone; waits a NATS outage out.
        """
        arrived: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            arrived.put_nowait(msg)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_message)
        request_subject = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{STREAM}.{consumer}"
        requested = 0  # what the open requests may still deliver
        try:
            while True:
                if requested <= PULL_BATCH // 2:
                    await self.nc.publish(request_subject, msgspec.json.encode({
                        "batch": PULL_BATCH - requested, "expires": int(PULL_EXPIRES_S * 1e9),
                        "idle_heartbeat": int(PULL_HEARTBEAT_S * 1e9)}), reply=inbox)
                    requested = PULL_BATCH
                try:
                    async with asyncio.timeout(2 * PULL_HEARTBEAT_S):
                        messages = [await arrived.get()]
                except TimeoutError:  # the request was lost, or NATS is away: ask again
                    requested = 0
                    await self._check_consumer(consumer)
                    continue
                while not arrived.empty():
                    messages.append(arrived.get_nowait())
                delivered = []
                for msg in messages:
                    status = msg.headers.get(Header.STATUS) if msg.headers else None
                    if not status:
                        delivered.append(msg)
                        requested -= 1
                    elif status == "408":  # a request expired
                        requested -= int(msg.headers.get(PENDING_MESSAGES, requested))
                    elif status != "100":  # not a heartbeat: a request refused or ended (the consumer deleted, say)
                        log.warning("a pull request of consumer %s ended: %s %s", consumer, status,
                                    msg.headers.get(Header.DESCRIPTION, ""))
                        requested = 0
                        await self._check_consumer(consumer)
                        await asyncio.sleep(RETRY_MIN_S)  # one the server refuses is not asked again at once
                if delivered:
                    yield delivered
        finally:
            await _quietly(sub.unsubscribe())

    async def _check_consumer(self, consumer: str) -> None:
        """Raises NotFoundError when the consumer is gone; waits a NATS outage out."""
        try:
            await self.js.consumer_info(STREAM, consumer)
        except NATS_UNAVAILABLE:
            self.give_up_if_stopping()


def at_tip(msg: Msg, arrived: list[Msg]) -> bool:
    """Whether `msg`, of a list from `arrivals`, ends what the log holds: the last of the list, and
    nothing was stored after it when it was delivered."""
    return msg is arrived[-1] and msg.metadata.num_pending == 0


def is_request(msg: Msg) -> bool:
    """Whether a message is a request to answer: its reply subject is a requester's inbox. Anything
    else (a JetStream delivery aimed at a service's request subject, a reply subject aimed at the
    log) is not answered: no work is done for it, and the answer could not be sent anyway."""
    return bool(msg.reply) and msg.reply.startswith("_INBOX")


def msg_ids(msg_id: str | None, subject: str) -> Iterator[str | None]:
    """The msg ids to publish under, in turn, while a message on another subject holds the last
    one: the id, then one derived from the subject (so a retry is still deduplicated), then
    fresh ones (the compare-and-set headers still keep a decision from being taken twice).
    Without an id nothing is deduplicated, so there is no other."""
    yield msg_id
    if msg_id is None:
        return
    log.warning("msg id %r is held by a message on another subject: publishing under another", msg_id)
    yield f"{msg_id}@{subject}"
    while True:
        yield f"{msg_id}@{subject}:{secrets.token_hex(8)}"


def stream_config(replicas: int, max_age_days: float) -> StreamConfig:
    return StreamConfig(
        num_replicas=replicas,
        name=STREAM,
        subjects=STREAM_SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=max_age_days * 86400 or None,  # None: every event is kept forever
    )


def stream_mismatch(found: StreamConfig, wanted: StreamConfig) -> list[str]:
    """How an existing stream differs from the log's configuration in ways that would lose or
    change events (the retention is compared apart: it may be changed)."""
    problems = []
    if sorted(found.subjects or []) != sorted(wanted.subjects or []):
        problems.append(f"subjects {found.subjects}, not {wanted.subjects}")
    if (found.retention or RetentionPolicy.LIMITS) != RetentionPolicy.LIMITS:
        problems.append(f"retention {found.retention}, not limits")
    for field in ("max_msgs", "max_bytes", "max_msgs_per_subject"):
        if (getattr(found, field) or -1) > 0:
            problems.append(f"{field} {getattr(found, field)}, not unlimited")
    if found.allow_rollup_hdrs:
        problems.append("rollups allowed (a publisher could erase a subject's history)")
    if found.mirror or found.sources or found.sealed:
        problems.append("a mirror, sourced or sealed stream")
    return problems


def nats_tls(settings: Settings) -> ssl.SSLContext | None:
    """TLS to NATS when a CA is set: the servers' certificates are verified against it; a client
    certificate is presented when one is set (for servers that verify their clients)."""
    if not settings.nats_tls_ca:
        if settings.nats_tls_cert or settings.nats_tls_key:
            raise ConfigError("NATS_TLS_CERT and NATS_TLS_KEY need NATS_TLS_CA (the CA of the NATS servers)")
        return None
    try:
        context = ssl.create_default_context(cafile=settings.nats_tls_ca)
        if settings.nats_tls_cert or settings.nats_tls_key:
            context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key or None)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"NATS TLS files not usable: {error}") from None
    return context


async def _log_nats_error(error: Exception) -> None:
    """Refused publishes and subscriptions (permissions) come here, not to the caller: say so."""
    log.warning("NATS: %s", error)


def require_server_version(version: ServerVersion) -> None:
    try:
        found = (version.major, version.minor)
    except ValueError:
        found = (0, 0)
    if found < MIN_SERVER_VERSION:
        raise ConnectionError(
            f"nats-server {version} is too old: SCNS-Conductor needs {'.'.join(map(str, MIN_SERVER_VERSION))} or "
            f"newer (its compare-and-set publishes use Nats-Expected-Last-Subject-Sequence-Subject)")


def expect_last(subject: str, seq: int) -> dict[str, str]:
    """Headers that make JetStream store a message only if `subject`'s last message is at `seq`."""
    return {"Nats-Expected-Last-Subject-Sequence": str(seq), "Nats-Expected-Last-Subject-Sequence-Subject": subject}


def is_wrong_last_sequence(error: nats.js.errors.BadRequestError) -> bool:
    return error.err_code == WRONG_LAST_SEQUENCE


async def _wait_to_retry(event: Event, error: BaseException, delay: float) -> float:
    log.warning("publish of %s failed (%s); retrying in %.1f s", type(event).__name__, error, delay)
    await asyncio.sleep(delay)
    return min(delay * 2, RETRY_MAX_S)


async def _quietly(operation) -> None:
    try:
        await operation
    except nats.errors.Error:
        pass
