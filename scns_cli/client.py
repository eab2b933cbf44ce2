"""The REST API of API.md over HTTP, and its server-sent event stream (GET /events), with the
standard library only. Every failure becomes a `CliError` whose message is one line."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scns_cli import __version__
from scns_cli.errors import ApiError, CliError, Unreachable

USER_AGENT = f"scns/{__version__}"
PAGE = 1000  # GET /jobs's largest page
SUBMIT_ATTEMPTS = 3  # a submit whose answer was lost is sent again with the same Idempotency-Key


@dataclass(frozen=True)
class ServerEvent:
    """One event of the log: its stream sequence, its type and its JSON (docs/events.md)."""

    seq: int
    type: str
    data: dict[str, Any]

    @property
    def job_id(self) -> int | None:
        """The job it is about (a submission is its own job), or None (node and scheduler events)."""
        if self.type == "JobSubmitted":
            return self.seq
        job_id = self.data.get("job_id")
        return job_id if isinstance(job_id, int) else None


def detail_text(payload: Any) -> str:
    """The `detail` of an error body as one line: FastAPI-style lists become `field: message; ...`."""
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, dict):
                loc = [str(part) for part in entry.get("loc", []) if part not in ("body", "job", "query", "path")]
                message = str(entry.get("msg", entry)).removeprefix("Value error, ")
                parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
            else:
                parts.append(str(entry))
        return "; ".join(parts)
    return " ".join(str(detail).split()) if detail is not None else ""


class Api:
    """A client of one gateway (`url`, no path prefix of the API's own) with one bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0, token_hint: str = "SCNS_TOKEN") -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"the server URL {url!r} is not an http:// or https:// URL (set SCNS_URL)")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_hint = token_hint

    # ---- plain requests --------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
        """(decoded JSON, response headers) of a 2xx answer; CliError otherwise."""
        with self._open(method, path, body, query, headers, self.timeout) as response:
            try:
                raw = response.read()
            except (socket.timeout, TimeoutError):
                raise Unreachable(f"no complete answer from {self.url} within {self.timeout:g} s") from None
            except OSError as error:  # reset or closed while the answer was read
                raise Unreachable(self._unreachable(error)) from None
            answer_headers = {key.lower(): value for key, value in response.headers.items()}
        try:
            return (json.loads(raw) if raw else None), answer_headers
        except ValueError:
            raise CliError(f"{method} {path}: the server's answer is not JSON (is {self.url} an SCNS gateway?)") \
                from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)[0]

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, body=body, headers=headers)[0]

    def job(self, job_id: int | str) -> dict[str, Any]:
        """GET /jobs/query/{id}, with "job N not found" for a 404."""
        return self.job_with_headers(job_id)[0]

    def job_with_headers(self, job_id: int | str) -> tuple[dict[str, Any], dict[str, str]]:
        with about_job(job_id):
            return self.request("GET", f"/jobs/query/{job_id}")

    def job_events(self, job_id: int | str) -> list[dict[str, Any]]:
        with about_job(job_id):
            return self.get(f"/jobs/{job_id}/events")["events"]

    def jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every job of GET /jobs matching the filters (None ones left out), newest first, page by page."""
        query = {key: value for key, value in filters.items() if value is not None}
        cursor = None
        while True:
            page = self.get("/jobs", limit=PAGE, **query, **({"cursor": cursor} if cursor else {}))
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def submit(self, body: dict[str, Any]) -> str:
        """POST /jobs/submit; the job id. A lost answer is retried under the same Idempotency-Key,
        so a retry never makes a second job."""
        key = str(uuid.uuid4())
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return str(self.post("/jobs/submit", body, headers={"Idempotency-Key": key})["job_id"])
            except Unreachable as error:
                if attempt == SUBMIT_ATTEMPTS or error.refused:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    # ---- the event stream --------------------------------------------------------------------

    def stream(self, after: int | None) -> Iterator[ServerEvent]:
        """GET /events from the event after `after` (None: from now on), until the server closes it."""
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(max(0, after))
        response = self._open("GET", "/events", None, None, headers, None)
        with response:
            yield from parse_sse(response)

    def follow(self, after: int | None, retries: int = 5) -> Iterator[ServerEvent]:
        """The event stream, reconnected (from the last event seen) when the connection drops."""
        failures = 0
        while True:
            try:
                for event in self.stream(after):
                    after, failures = event.seq, 0
                    yield event
            except (Unreachable, OSError) as error:
                failures += 1
                if failures > retries:
                    raise error if isinstance(error, CliError) else Unreachable(
                        f"the event stream of {self.url} broke: {error}") from None
            else:
                failures += 1  # the server closed it (a restart): the same budget of attempts
                if failures > retries:
                    raise Unreachable(f"the event stream of {self.url} keeps closing")
            time.sleep(min(0.2 * 2 ** failures, 5.0))

    # ---- transport ---------------------------------------------------------------------------

    def _open(self, method: str, path: str, body: Any, query: dict[str, Any] | None,
              headers: dict[str, str] | None, timeout: float | None):
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("User-Agent", USER_AGENT)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            raise self._refusal(method, path, error) from None
        except urllib.error.URLError as error:
            raise Unreachable(self._unreachable(error.reason),
                              refused=isinstance(error.reason, ConnectionRefusedError)) from None
        except (socket.timeout, TimeoutError):
            raise Unreachable(f"no answer from {self.url} within {timeout:g} s") from None
        except (ConnectionError, OSError) as error:  # reset or closed while sending
            raise Unreachable(self._unreachable(error), refused=isinstance(error, ConnectionRefusedError)) from None

    def _unreachable(self, reason: Any) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused (is the gateway running there? set SCNS_URL)"
        elif isinstance(reason, socket.gaierror):
            why = f"unknown host ({reason.strerror or reason})"
        elif isinstance(reason, (socket.timeout, TimeoutError)):
            why = f"no answer within {self.timeout:g} s"
        else:
            why = getattr(reason, "strerror", None) or str(reason)
        return f"cannot reach the SCNS server at {self.url}: {why}"

    def _refusal(self, method: str, path: str, error: urllib.error.HTTPError) -> ApiError:
        raw = error.read()
        try:
            detail = detail_text(json.loads(raw))
        except ValueError:
            detail = " ".join(raw.decode(errors="replace").split())[:200]
        status = error.code
        if status == 401:
            if not self.token:
                message = f"no API token: set {self.token_hint} (or `token` in the config file; see `scns config`)"
            else:
                message = f"the server refused the token ({detail or 'not authenticated'}): check {self.token_hint}"
        elif status == 403:
            message = f"forbidden: {detail or 'this token may not do that'}"
        elif status == 422:
            message = f"the server refused the request: {detail}"
        elif status == 429:
            message = f"rate limited: {detail}"
        elif status == 503:
            message = f"the server is unavailable: {detail}"
        elif status >= 500:
            message = f"server error {status} on {method} {path}: {detail}"
        else:
            message = f"{method} {path}: {detail or error.reason} (HTTP {status})"
        return ApiError(status, detail, message)


def parse_sse(lines) -> Iterator[ServerEvent]:
    """Server-sent events (`id:`, `event:`, `data:` lines, a blank line ends one) as ServerEvents;
    comments and events without an id are skipped."""
    fields: dict[str, list[str]] = {}
    for raw in lines:
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line:
            if "data" in fields and fields.get("id"):
                try:
                    seq = int(fields["id"][-1])
                    data = json.loads("\n".join(fields["data"]))
                except ValueError:
                    fields = {}
                    continue
                kind = fields.get("event", [data.get("type", "message") if isinstance(data, dict) else "message"])[-1]
                yield ServerEvent(seq, kind, data if isinstance(data, dict) else {"value": data})
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)


@contextlib.contextmanager
def about_job(job_id: int | str) -> Iterator[None]:
    """A request about one job: its 404 says "job N not found"."""
    try:
        yield
    except ApiError as error:
        if error.http_status == 404:
            raise ApiError(404, error.detail, f"job {job_id} not found") from None
        raise
