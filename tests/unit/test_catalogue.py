"""The event catalogue in the repository is the one the code generates, and the prose covers it."""

import json
from pathlib import Path

import msgspec

from shared.catalogue import asyncapi_document, rendered
from shared.events import SUBJECTS, JobSpec

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_asyncapi_document_in_the_repository_is_not_stale():
    assert (DOCS / "asyncapi.json").read_text(encoding="utf-8") == rendered(), (
        "docs/asyncapi.json is stale: run `python -m shared.catalogue > docs/asyncapi.json`")


def test_every_event_has_a_channel_on_its_subject_and_a_schema_with_its_fields():
    document = asyncapi_document()
    for event_type, subject in SUBJECTS.items():
        name = event_type.__name__
        assert document["channels"][name]["address"] == subject
        schema = document["components"]["schemas"][name]
        assert {f.encode_name for f in msgspec.inspect.type_info(event_type).fields} | {"type"} == set(
            schema["properties"])
    json.dumps(document)  # plain JSON throughout


def test_docs_events_md_names_every_event_subject_field_and_version():
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    for event_type, subject in SUBJECTS.items():
        info = msgspec.inspect.type_info(event_type)
        version = next(f.default for f in info.fields if f.name == "v")
        row = next((line for line in text.splitlines() if line.startswith(f"| `{event_type.__name__}` |")), "")
        assert f"`{subject}`" in row and f"| {version} |" in row, event_type.__name__
        for field in info.fields:
            assert field.name == "v" or f"`{field.encode_name}`" in row, (event_type.__name__, field.name)
    for field in msgspec.inspect.type_info(JobSpec).fields:
        assert f"`{field.encode_name}`" in text, field.name
