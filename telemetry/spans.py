"""Reading and marking spans through the OpenTelemetry API only (no SDK): the ids a response or a stored
round carries, and the one way a failure is written on a span."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import Status, StatusCode


def span_ids(span: trace.Span) -> tuple[str | None, str | None]:
    """The W3C trace id (32 hex) and span id (16 hex) of ``span``; ``(None, None)`` when it is not recorded
    (telemetry off)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    """The W3C trace id (32 lower-case hex) of the current span, or ``None`` outside a recorded trace."""
    return span_ids(trace.get_current_span())[0]


def mark_failed(span: trace.Span, error_type: str, description: str) -> None:
    """Write a failure on ``span``: ``error.type`` (a bounded value: ``telemetry.contract.ErrorType`` or an
    exception's class name) and ERROR status with ``description`` (OpenTelemetry's recording-errors guidance,
    https://opentelemetry.io/docs/specs/semconv/general/recording-errors/)."""
    span.set_attribute(error_attributes.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, description))
