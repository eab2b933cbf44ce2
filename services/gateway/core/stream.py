"""Who may see which event of the stream served at GET /events (pure)."""

from __future__ import annotations

from shared.events import AnyEvent, JobSubmitted, NodeDown, NodeDrained, NodeRegistered, NodeResumed

NODE_EVENTS = (NodeRegistered, NodeDown, NodeDrained, NodeResumed)


def job_of(event: AnyEvent, seq: int) -> int | None:
    """The job an event is about (a submission is its own job), or None."""
    return seq if isinstance(event, JobSubmitted) else getattr(event, "job_id", None)


def visible(event: AnyEvent, viewer_account: str | None, job_account: str | None) -> bool:
    """An admin (no account) sees everything; a user sees its account's jobs and the nodes (as
    /nodes shows them), nothing of other accounts' jobs nor of the schedulers."""
    if viewer_account is None:
        return True
    if isinstance(event, NODE_EVENTS):
        return True
    return job_account is not None and job_account == viewer_account


def start_after(last_event_id: str | None) -> int | None:
    """The stream sequence a resumed stream continues after (Last-Event-ID), or None for "from
    now on"; ValueError for an id this API did not send."""
    if last_event_id is None:
        return None
    if not last_event_id.isdigit() or len(last_event_id) > 19:
        raise ValueError("Last-Event-ID must be the id of an event this stream sent (a stream sequence)")
    return int(last_event_id)
