"""The telemetry contract in code: every name the service emits that is ours to choose.

Names that come from instrumentation libraries (``http.server.request.duration``,
``gen_ai.client.operation.duration``, ``chat {model}`` spans …) are listed in ``docs/telemetry.md``;
the tests check the service against both.

Metric labels are bounded: subjects outside ``KNOWN_SUBJECTS`` are reported as ``other``; session ids
appear only on spans (``gen_ai.conversation.id``), never on metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter

# --- spans ------------------------------------------------------------------------------------
SPAN_ROUND = "invoke_workflow quiz"  # INTERNAL, child of the FastAPI server span
SPAN_AGENT = "invoke_agent {agent}"  # INTERNAL, one per graph node (teacher ask, student, teacher grade)
WORKFLOW_NAME = "quiz"

# --- attributes (ours; gen_ai.* and error.type are from the semantic conventions) --------------
ATTR_SUBJECT = "quiz.subject"
ATTR_DIFFICULTY = "quiz.difficulty"
ATTR_LANGUAGE = "quiz.language"
ATTR_ROUND = "quiz.round"
ATTR_VERDICT = "quiz.verdict"
ATTR_STEP = "quiz.step"

# --- metrics ----------------------------------------------------------------------------------
METRIC_ROUNDS = "quiz.rounds"
METRIC_STEP_DURATION = "quiz.agent.step.duration"
METRIC_ERRORS = "quiz.errors"

KNOWN_SUBJECTS = frozenset(
    {"math", "science", "history", "english", "general", "programming", "geography"})

# Seconds; an agent step is one LLM call (plus a retry on invalid output): 10 ms … 80 s.
STEP_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                         81.92)


def subject_label(subject: str) -> str:
    """The bounded metric label for a free-text subject: a known subject, else ``other``."""
    s = subject.strip().lower()
    return s if s in KNOWN_SUBJECTS else "other"


@dataclass(frozen=True)
class QuizInstruments:
    """The service's own instruments (OTel names; Prometheus names after the Collector in brackets).

    - ``rounds``: Counter ``quiz.rounds`` {round} [``quiz_rounds_total``], attributes ``quiz.subject``
      (bounded), ``quiz.difficulty``, ``quiz.verdict`` — finished rounds; accuracy = correct / all.
    - ``step_duration``: Histogram ``quiz.agent.step.duration`` s [``quiz_agent_step_duration_seconds``],
      attributes ``gen_ai.agent.name`` (teacher|student), ``quiz.step`` (ask|answer|grade), ``error.type``.
    - ``errors``: Counter ``quiz.errors`` {error} [``quiz_errors_total``], attribute ``error.type``
      (``rate_limited``, ``timeout``, ``auth``, ``upstream``, ``invalid_output``, ``validation``,
      ``session_not_found``, ``overloaded``).
    """

    rounds: Counter
    step_duration: Histogram
    errors: Counter

    @classmethod
    def create(cls, meter: Meter) -> QuizInstruments:
        return cls(
            rounds=meter.create_counter(METRIC_ROUNDS, unit="{round}", description="Quiz rounds played to a verdict."),
            step_duration=meter.create_histogram(
                METRIC_STEP_DURATION, unit="s", description="Duration of one agent step of a round.",
                explicit_bucket_boundaries_advisory=STEP_DURATION_BUCKETS),
            errors=meter.create_counter(METRIC_ERRORS, unit="{error}", description="Failed /ask requests by cause."),
        )
