"""A small OTLP/HTTP receiver of traces (and of metric names): the tests and benchmarks collect with it, and
`python -m shared.otlp_receiver [--port 4318]` prints each trace it receives as a tree, for a
look at a job's trace without a tracing backend (point the stack's OTEL_EXPORTER_OTLP_ENDPOINT
at it). Loopback only."""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    linked_traces: tuple[str, ...]
    start_ns: int
    end_ns: int
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def milliseconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class OtlpReceiver:
    """Keeps every span (POST /v1/traces) and every (service, metric name) (POST /v1/metrics) it
    is sent, as protobuf; serving from a thread."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.metrics: set[tuple[str, str]] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/metrics":
                    receiver.take_metrics(ExportMetricsServiceRequest.FromString(body))
                    self.answer(ExportMetricsServiceResponse())
                    return
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next((a.value.string_value for a in resource_spans.resource.attributes
                                    if a.key == "service.name"), "")
                    receiver.spans += [
                        ReceivedSpan(service, span.name, span.trace_id.hex(), span.span_id.hex(),
                                     span.parent_span_id.hex(), tuple(link.trace_id.hex() for link in span.links),
                                     span.start_time_unix_nano, span.end_time_unix_nano,
                                     tuple((a.key, str(getattr(a.value, a.value.WhichOneof("value")))) for a in span.attributes))
                        for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]
                self.answer(ExportTraceServiceResponse())

            def answer(self, response) -> None:
                body = response.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take_metrics(self, request: ExportMetricsServiceRequest) -> None:
        for resource_metrics in request.resource_metrics:
            service = next((a.value.string_value for a in resource_metrics.resource.attributes
                            if a.key == "service.name"), "")
            self.metrics |= {(service, metric.name) for scope in resource_metrics.scope_metrics
                             for metric in scope.metrics}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


def render_trace(spans: list[ReceivedSpan]) -> str:
    """A trace as an indented tree: each span under its parent, by start time."""
    by_parent: dict[str, list[ReceivedSpan]] = {}
    ids = {span.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_ns):
        by_parent.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    origin = min((span.start_ns for span in spans), default=0)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in by_parent.get(parent, []):
            lines.append(f"{'  ' * depth}{span.name}  [{span.service}]  +{(span.start_ns - origin) / 1e6:.1f} ms, "
                         f"{span.milliseconds:.1f} ms  span {span.span_id} parent {span.parent_id or '-'}")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of quiet before a trace is printed")
    args = parser.parse_args()
    with OtlpReceiver(args.port) as receiver:
        print(f"receiving OTLP/HTTP traces at {receiver.endpoint} (Ctrl-C stops)", flush=True)
        printed: set[str] = set()
        try:
            while True:
                time.sleep(1)
                settled = time.time_ns() - int(args.settle * 1e9)
                traces = {span.trace_id for span in receiver.spans} - printed
                for trace_id in sorted(traces):
                    spans = receiver.of_trace(trace_id)
                    if max(span.end_ns for span in spans) < settled:
                        print(f"\ntrace {trace_id}\n{render_trace(spans)}", flush=True)
                        printed.add(trace_id)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
