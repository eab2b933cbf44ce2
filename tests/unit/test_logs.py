"""Log lines are JSON with the job id and the current trace, when not on a terminal."""

import json
import logging

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

from shared.logs import JsonLines


def line(message: str, *args, **extra) -> dict:
    record = logging.LogRecord("scns.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return json.loads(JsonLines("executor").format(record))


def test_a_job_line_in_a_span_carries_the_job_and_the_trace():
    span = NonRecordingSpan(SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False))
    with trace.use_span(span):
        logged = line("job %d: %s", 42, "COMPLETED", job_id=42)
    assert logged["message"] == "job 42: COMPLETED" and logged["job_id"] == 42
    assert (logged["trace_id"], logged["span_id"]) == (f"{0xABC:032x}", f"{0xDEF:016x}")
    assert (logged["service"], logged["level"], logged["logger"]) == ("executor", "WARNING", "scns.test")


def test_a_line_outside_any_job_or_trace_has_neither():
    logged = line("node %s registered", "n1")
    assert "job_id" not in logged and "trace_id" not in logged and logged["time"].endswith("+00:00")
