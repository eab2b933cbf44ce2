"""Traces: set up from the standard OTEL_* variables, off (the API's no-op tracer) when they name
no exporter, and W3C trace context carried in NATS message headers.

A job is one trace. The gateway's submit request starts it; the trace context travels in the
headers of `JobSubmitted`, and every later event of the job carries the context of the span that
decided it, so each service's span is a child of the one before it. A service whose tracing is
off still passes the context on (the API's no-op spans keep their parent's context).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

TRACER_NAME = "scns-conductor"
TRACEPARENT = "traceparent"


def exporting(signal: str, environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for this signal ("traces", "metrics") to be exported over OTLP."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").lower()
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return exporter == "otlp" and bool(endpoint)


class Telemetry:
    """The service's tracer provider (and, for a service that has metrics, its meter provider)
    when OTEL_* turns them on; `shutdown` exports what is left."""

    def __init__(self, service: str, environ: Mapping[str, str] | None = None, with_metrics: bool = False) -> None:
        self.tracer_provider = self.meter_provider = None
        environ = os.environ if environ is None else environ
        traced, metered = exporting("traces", environ), with_metrics and exporting("metrics", environ)
        if not (traced or metered):
            return
        # Imported only when on: a service without telemetry pays nothing for the SDK.
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service})
        if traced:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self.tracer_provider = TracerProvider(resource=resource)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(self.tracer_provider)
        if metered:
            from opentelemetry import metrics
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            reader = PeriodicExportingMetricReader(OTLPMetricExporter())  # OTEL_METRIC_EXPORT_INTERVAL
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            metrics.set_meter_provider(self.meter_provider)

    @property
    def traced(self) -> bool:
        return self.tracer_provider is not None

    @property
    def metered(self) -> bool:
        return self.meter_provider is not None

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def context_of(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message carries (an empty one when it carries none)."""
    return propagate.extract(dict(headers or {}))


def headers_of(context: Context | None = None) -> dict[str, str]:
    """Headers that carry the current (or the given) trace context on to the next message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id in a W3C traceparent ("00-<trace id>-<span id>-<flags>"), or None."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
