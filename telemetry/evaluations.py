"""Evaluation results as the GenAI semantic conventions' ``gen_ai.evaluation.result`` event.

An evaluation is a judgement of a GenAI output: here the Teacher's grade of the Student's answer (and, later,
a person's feedback or an offline judge). The event (https://opentelemetry.io/docs/specs/semconv/gen-ai/
gen-ai-events/, "Event: gen_ai.evaluation.result") is a log record with ``event_name`` set, emitted through
the app's ``LoggerProvider`` in the current context, so it carries the trace and span id of the round it
judges; the Collector's ``logs`` pipeline sends it to Application Insights (``traces`` table, its body the
``message``, attributes in ``customDimensions``; docs/telemetry.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.genai.types import ContentCapturingMode
from opentelemetry.util.genai.utils import get_content_capturing_mode

from telemetry import contract as C


def content_capture_on() -> bool:
    """``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is set to any mode but ``NO_CONTENT`` (the default):
    the same switch that lets the LLM instrumentation record prompts and completions."""
    return get_content_capturing_mode() is not ContentCapturingMode.NO_CONTENT


@dataclass(frozen=True)
class Evaluations:
    """Emits ``gen_ai.evaluation.result`` events on ``logger`` (a no-op logger when telemetry is off)."""

    logger: Logger

    def record(self, name: str, label: str, score: float | None = None, explanation: str | None = None,
               attributes: Mapping[str, str | int | float | bool] | None = None,
               trace_id: str | None = None, span_id: str | None = None) -> None:
        """Emit one result, parented to the current span — or, given ``trace_id`` (32 hex) and ``span_id``
        (16 hex), to that span of an earlier trace (feedback that comes later than what it judges).

        ``name`` → ``gen_ai.evaluation.name`` (the metric judged, e.g. ``C.EVALUATION_CORRECTNESS``),
        ``label`` → ``gen_ai.evaluation.score.label`` (e.g. ``correct``), ``score`` →
        ``gen_ai.evaluation.score.value`` (a number, 0–1 here), ``explanation`` →
        ``gen_ai.evaluation.explanation`` — content, so only when ``content_capture_on()``. ``attributes``:
        more bounded attributes (``quiz.*``) to filter on.
        """
        values: dict[str, str | int | float | bool] = {GenAI.GEN_AI_EVALUATION_NAME: name,
                                                       GenAI.GEN_AI_EVALUATION_SCORE_LABEL: label}
        if score is not None:
            values[GenAI.GEN_AI_EVALUATION_SCORE_VALUE] = score
        if explanation and content_capture_on():
            values[GenAI.GEN_AI_EVALUATION_EXPLANATION] = explanation
        values.update(attributes or {})
        context = None
        if trace_id and span_id:
            judged = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            context = trace.set_span_in_context(NonRecordingSpan(judged))
        self.logger.emit(event_name=C.EVENT_EVALUATION_RESULT, severity_number=SeverityNumber.INFO,
                         body=summary(name, label, score), attributes=values, context=context)


def summary(name: str, label: str, score: float | None = None) -> str:
    """The record's body, e.g. ``gen_ai.evaluation.result correctness: correct (1)``: what a person reading the
    Application Insights ``traces`` row sees as its ``message``. Never content (no explanation). A body is
    required there: the Collector's ``azuremonitor`` exporter makes the ``message`` of the body and Azure's
    ingestion refuses a ``MessageData`` with an empty message (the Azure SDK exporters default one; contrib's
    does not), so a record without one never reaches App Insights."""
    return f"{C.EVENT_EVALUATION_RESULT} {name}: {label}" + ("" if score is None else f" ({score:g})")
