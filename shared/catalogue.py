"""The event catalogue: an AsyncAPI 3.0 document generated from the one subject table and the
event Structs (pure). `python -m shared.catalogue` prints it; docs/asyncapi.json is its output,
kept in the repository and checked by a test, and the gateway serves it at /asyncapi.json.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from shared.events import STREAM, SUBJECTS, Event

VERSION = "1"
PARAMETER = re.compile(r"\{(\w+)\}")
PARAMETER_TEXT = {"job_id": "the job's id (the stream sequence of its JobSubmitted)",
                  "node": "the executor node's name"}


def _event_doc(event_type: type[Event]) -> str:
    return " ".join((event_type.__doc__ or event_type.__name__).split())


def asyncapi_document() -> dict[str, Any]:
    types = list(SUBJECTS)
    _, schemas = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type in types:
        name = event_type.__name__
        address = SUBJECTS[event_type]
        channels[name] = {
            "address": address,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            **({"parameters": {p: {"description": PARAMETER_TEXT[p]} for p in PARAMETER.findall(address)}}
               if PARAMETER.search(address) else {}),
        }
        messages[name] = {
            "name": name,
            "summary": _event_doc(event_type),
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {
                "traceparent": {"type": "string", "description": "W3C trace context of the span that published it"},
                "Nats-Msg-Id": {"type": "string", "description": "JetStream deduplication id"},
            }},
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "SCNS-Conductor events",
            "version": VERSION,
            "description": f"Every fact about a job or a node, in the JetStream stream {STREAM} (subjects scns.>). "
                           "Ordered per job, and globally by stream sequence. Fields are only added, with defaults; "
                           "`v` is an event type's schema version. See docs/events.md.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "components": {"messages": messages, "schemas": schemas},
    }


def rendered() -> str:
    return json.dumps(asyncapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(rendered(), end="")
