"""The JetStream event log, as every service uses it: connect, publish an event, read it back.

The stream is created idempotently by whoever connects first. Publishing waits for the
JetStream ack, so an event returned from `publish` is durable. `Nats-Msg-Id` makes a retried
publish of the same decision a no-op within the dedup window; consumers are idempotent beyond it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client, ServerVersion
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

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
RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0
# What an outage or restart of NATS looks like to a client: to be waited out, never fatal.
NATS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,  # nats.errors.TimeoutError is one
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
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


class JetStreamEventLog:
    """The SCNS stream over one NATS connection."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()

    @classmethod
    async def connect(cls, url: str, name: str, *, credentials: Credentials | None = None,
                      tls: ssl.SSLContext | None = None, replicas: int = 1, max_age_days: float = 0,
                      retry_for: float = 60.0) -> JetStreamEventLog:
        """Connect (retrying while the server comes up), then make sure the stream exists."""
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
                # Bounded too: nats-py may hang in a first connect whose TLS handshake failed.
                nc = await asyncio.wait_for(nats.connect(
                    servers, name=name, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=1,
                    reconnect_time_wait=0.5, tls=tls, error_cb=on_error, **login,
                ), timeout=2 * len(servers) * (CONNECT_TIMEOUT_S + 0.5) + 1)
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
            await events.ensure_stream(replicas, max_age_days)
        except BaseException:
            await nc.close()
            raise
        return events

    @classmethod
    async def for_service(cls, settings: Settings, name: str, retry_for: float = 60.0) -> JetStreamEventLog:
        """Connect as a service does: NATS, its credentials and TLS, the stream's replication and
        retention, all from settings."""
        try:
            credentials = read_credentials(Path(settings.nats_credentials)) if settings.nats_credentials else None
        except CredentialsError as error:
            raise ConfigError(str(error)) from None
        return await cls.connect(settings.nats_url, name, credentials=credentials, tls=nats_tls(settings),
                                 replicas=settings.stream_replicas, max_age_days=settings.stream_max_age_days,
                                 retry_for=retry_for)

    async def check_not_behind(self, read_model_position: int) -> None:
        """Refuse a log that is behind the read model: it was recreated, and job ids would be reused."""
        last_seq = await self.last_seq()
        if read_model_position > last_seq:
            raise LogBehindReadModel(
                f"the event log ends at seq {last_seq} but the read model has applied up to {read_model_position}: "
                f"the stream was recreated or restored from an old copy, and new jobs would reuse old ids. "
                f"Restore the stream, or recreate it with first_seq > {read_model_position}"
            )

    async def ensure_stream(self, replicas: int = 1, max_age_days: float = 0) -> None:
        """Create the stream if missing; a changed retention is applied to an existing one."""
        config = StreamConfig(
            num_replicas=replicas,
            name=STREAM,
            subjects=STREAM_SUBJECTS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_age=max_age_days * 86400 or None,  # None: every event is kept forever
        )
        try:
            info = await self.js.stream_info(STREAM)
        except NotFoundError:
            try:
                await self.js.add_stream(config)
                return
            except nats.js.errors.BadRequestError:
                info = await self.js.stream_info(STREAM)  # created concurrently by another service
        if (info.config.max_age or 0) != (config.max_age or 0):
            await self.js.update_stream(config)

    async def close(self) -> None:
        # Not drain(): it waits on the pull subscriptions' outstanding requests for up to 30 s.
        # Every publish of ours is already acked by the time we close.
        if not self.nc.is_closed:
            await self.nc.close()

    async def publish(self, event: Event, msg_id: str | None = None, timeout: float | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bool]:
        """Append an event; returns (stream sequence, whether it was a duplicate of an earlier one)."""
        headers = {**({"Nats-Msg-Id": msg_id} if msg_id else {}), **(headers or {})}
        ack = await self.js.publish(subject_of(event), encode(event), stream=STREAM, headers=headers or None,
                                    timeout=timeout)
        return ack.seq, bool(ack.duplicate)

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
        while True:
            try:
                if retrying and (landed := await self.js.get_msg(STREAM, subject=subject)).data == data:
                    return landed.seq
            except NotFoundError:
                pass
            except NATS_UNAVAILABLE as error:
                self.give_up_if_stopping()
                delay = await _wait_to_retry(event, error, delay)
                continue
            try:
                ack = await self.js.publish(subject, data, stream=STREAM,
                                            headers={"Nats-Msg-Id": msg_id, **(headers or {})})
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
        return await self._get(seq=seq)

    async def last_on(self, subject: str) -> Delivered | None:
        """The last message on a subject (wildcards allowed), or None."""
        return await self._get(subject=subject)

    async def _get(self, **where) -> Delivered | None:
        try:
            # From the stream leader, not a direct get that any replica may answer before it
            # has the newest messages: callers decide on what they read here.
            raw = await self.js.get_msg(STREAM, **where)
        except NotFoundError:
            return None
        return _delivered(raw.seq, raw.subject, raw.data, raw.time)

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
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_policy=AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=REPLAY_INACTIVE_S,
            mem_storage=True,
        )

    async def replay(self, start_seq: int = 1, subject: str = "scns.>", batch: int = 512) -> AsyncIterator[Msg]:
        """Every message from `start_seq` on, in stream order, then new ones as they come.

        An ephemeral pull consumer without acks; the reader keeps its own position, so a lost
        consumer (NATS restarted, inactivity) is simply created again from the next sequence.
        """
        next_seq = max(1, start_seq)
        delay = RETRY_MIN_S
        while True:
            sub = None
            try:
                sub = await self.js.pull_subscribe(subject, stream=STREAM,
                                                   config=self._reader_config(subject, next_seq))
                while True:
                    try:
                        messages = await sub.fetch(batch, timeout=REPLAY_POLL_S)
                    except asyncio.TimeoutError:  # nats-py raises both its own and the plain one
                        self.give_up_if_stopping()
                        await sub.consumer_info()  # raises when the consumer is gone or NATS is away
                        continue
                    delay = RETRY_MIN_S
                    for msg in messages:
                        next_seq = msg.metadata.sequence.stream + 1
                        yield msg
            except (NotFoundError, *NATS_UNAVAILABLE) as error:
                self.give_up_if_stopping()
                log.warning("log reader interrupted (%s); resuming from seq %d in %.1f s",
                            type(error).__name__, next_seq, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            finally:
                if sub is not None:
                    await _quietly(sub.unsubscribe())


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
