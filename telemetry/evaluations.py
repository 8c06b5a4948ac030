"""Evaluation results as the GenAI semantic conventions' ``gen_ai.evaluation.result`` event.

An evaluation is a judgement of a GenAI output: here the Teacher's grade of the Student's answer (and, later,
a person's feedback or an offline judge). The event (https://opentelemetry.io/docs/specs/semconv/gen-ai/
gen-ai-events/, "Event: gen_ai.evaluation.result") is a log record with ``event_name`` set, emitted through
the app's ``LoggerProvider`` in the current context, so it carries the trace and span id of the round it
judges; the Collector's ``logs`` pipeline sends it to Application Insights (``traces`` table, attributes in
``customDimensions``; docs/telemetry.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
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
               attributes: Mapping[str, str | int | float | bool] | None = None) -> None:
        """Emit one result in the current context (parent: the current span).

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
        self.logger.emit(event_name=C.EVENT_EVALUATION_RESULT, severity_number=SeverityNumber.INFO,
                         attributes=values)
