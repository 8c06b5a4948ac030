"""Each agent step inside its ``invoke_agent {agent}`` span, with its duration recorded and its start told on
the graph's custom stream (``graphs.events.StepStarted``).

The span follows the OpenTelemetry GenAI agent-span conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/), so the LLM call that the
instrumentation traces beneath it is attributed to the right agent. Names come from ``telemetry.contract``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.runtime import Runtime
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind

from graphs.context import QuizContext
from graphs.events import StepStarted
from telemetry import contract as C
from telemetry.spans import mark_failed


@contextmanager
def agent_step(runtime: Runtime[QuizContext], step: str, round_no: int) -> Iterator[trace.Span]:
    """Run the body as step ``step`` (of the agent the table names) of round ``round_no``; yields the span
    (current meanwhile). ``StepStarted`` is written to the custom stream first. The span names the prompt the
    agent plays with (``gen_ai.prompt.name``, ``quiz.prompt.version``).

    On an exception the span gets ``error.type`` (the exception's class name) and ERROR status, the
    exception is recorded and re-raised. ``quiz.agent.step.duration`` (seconds) is recorded either way.
    """
    ctx = runtime.context
    agent = ctx.steps[step].agent
    runtime.stream_writer(ctx.event(StepStarted, step, round_no, ""))
    prompt = ctx.prompts[agent]
    attributes: dict[str, str | int] = {
        GenAI.GEN_AI_OPERATION_NAME: GenAI.GenAiOperationNameValues.INVOKE_AGENT.value,
        GenAI.GEN_AI_AGENT_NAME: agent,
        GenAI.GEN_AI_PROVIDER_NAME: ctx.provider,
        GenAI.GEN_AI_REQUEST_MODEL: ctx.model,
        GenAI.GEN_AI_CONVERSATION_ID: ctx.session_id,
        C.ATTR_STEP: step,
        C.ATTR_ROUND: round_no,
        GenAI.GEN_AI_PROMPT_NAME: prompt.name,
        C.ATTR_PROMPT_VERSION: prompt.version,
    }
    started = time.perf_counter()
    error_type: str | None = None
    with ctx.tracer.start_as_current_span(C.agent_span_name(agent), kind=SpanKind.INTERNAL,
                                          attributes=attributes, record_exception=False,
                                          set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            error_type = type(exc).__qualname__
            mark_failed(span, error_type, error_type)
            span.record_exception(exc)
            raise
        finally:
            if ctx.step_duration is not None:
                labels: dict[str, str] = {GenAI.GEN_AI_AGENT_NAME: agent, C.ATTR_STEP: step}
                if error_type:
                    labels[error_attributes.ERROR_TYPE] = error_type
                ctx.step_duration.record(time.perf_counter() - started, labels)
