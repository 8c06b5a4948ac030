"""The Teacher–Student graph: ``teacher_ask → student_answer → teacher_grade``, one round per run.

Each node is one agent step. It runs inside an ``invoke_agent {agent}`` span (OpenTelemetry GenAI
semantic conventions, https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/), so the
LLM call the instrumentation traces beneath it is attributed to the right agent, and it records the
step's duration. Tracer and instruments come in through the run's context: this package imports only
the OpenTelemetry *API*, never the app or its telemetry set-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import Runnable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, ValidationError

from graphs import prompts
from graphs.state import Grade, Question, QuizState, Step, StudentAnswer, TokenUsage

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class StructuredOutputError(Exception):
    """The model's output did not validate against the step's schema after every allowed attempt."""

    def __init__(self, step: Step, attempts: int) -> None:
        super().__init__(f"{step}: no valid structured output after {attempts} attempt(s)")
        self.step = step
        self.attempts = attempts


@dataclass(frozen=True)
class StructuredCall(Generic[SchemaT]):
    """A chat model bound once to one forced function call, and the parser for its arguments.

    This is LangChain's ``with_structured_output(schema, method="function_calling")`` taken apart:
    the same ``bind_tools(..., tool_choice=<schema>, parallel_tool_calls=False)`` and the same
    ``PydanticToolsParser``, but built once at start-up and parsed directly, without the per-call runnable
    chain (whose ``inspect.signature`` calls cost ~14 % of the service's CPU per round, see bench/README.md).
    Forced function calling works on Azure OpenAI, OpenAI, vLLM, Ollama and llama.cpp's server
    (../shared/LOCAL-MODEL-NOTES.md: its tool calls are grammar-constrained).
    """

    schema: type[SchemaT]
    runnable: Runnable[Any, AIMessage]
    parser: PydanticToolsParser

    @classmethod
    def bind(cls, model: BaseChatModel, schema: type[SchemaT]) -> StructuredCall[SchemaT]:
        runnable = model.bind_tools([schema], tool_choice=schema.__name__, parallel_tool_calls=False)
        return cls(schema, runnable, PydanticToolsParser(tools=[schema], first_tool_only=True))

    async def __call__(self, messages: list[Any]) -> tuple[SchemaT | None, AIMessage]:
        """One call: ``(parsed or None when the arguments do not validate, the raw message)``."""
        message = await self.runnable.ainvoke(messages)
        try:
            parsed = self.parser.parse_result([ChatGeneration(message=message)])
        except (OutputParserException, ValidationError):
            parsed = None
        return parsed, message


@dataclass(frozen=True)
class QuizAgents:
    """The three agent steps, each bound to its model once (any chat model with tool calling)."""

    ask: StructuredCall[Question]
    answer: StructuredCall[StudentAnswer]
    grade: StructuredCall[Grade]

    @classmethod
    def create(cls, teacher: BaseChatModel, student: BaseChatModel) -> QuizAgents:
        return cls(StructuredCall.bind(teacher, Question), StructuredCall.bind(student, StudentAnswer),
                   StructuredCall.bind(teacher, Grade))


@dataclass(frozen=True)
class QuizContext:
    """What every run needs and the checkpoint must not hold (LangGraph ``context_schema``).

    ``agents``: the bound structured calls of the three steps.
    ``provider``/``model``: ``gen_ai.provider.name`` / ``gen_ai.request.model`` for the agent spans.
    ``step_duration``: histogram (seconds) recorded per step with agent, step and ``error.type``.
    """

    agents: QuizAgents
    session_id: str
    provider: str
    model: str
    tracer: trace.Tracer
    step_duration: Histogram | None = None
    structured_output_attempts: int = 2
    call_deadline_s: float | None = None  # whole LLM call incl. retries; raises TimeoutError past it


@asynccontextmanager
async def _agent_step(ctx: QuizContext, agent: str, step: Step, state: QuizState) -> AsyncIterator[trace.Span]:
    attributes = {
        GenAI.GEN_AI_OPERATION_NAME: GenAI.GenAiOperationNameValues.INVOKE_AGENT.value,
        GenAI.GEN_AI_AGENT_NAME: agent,
        GenAI.GEN_AI_PROVIDER_NAME: ctx.provider,
        GenAI.GEN_AI_REQUEST_MODEL: ctx.model,
        GenAI.GEN_AI_CONVERSATION_ID: ctx.session_id,
        "quiz.step": step,
        "quiz.round": state.get("round", 0) + 1,
    }
    started = time.perf_counter()
    error_type: str | None = None
    with ctx.tracer.start_as_current_span(f"invoke_agent {agent}", kind=SpanKind.INTERNAL,
                                          attributes=attributes, record_exception=False,
                                          set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            error_type = type(exc).__qualname__
            span.set_attribute(error_attributes.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.record_exception(exc)
            raise
        finally:
            if ctx.step_duration is not None:
                labels = {GenAI.GEN_AI_AGENT_NAME: agent, "quiz.step": step}
                if error_type:
                    labels[error_attributes.ERROR_TYPE] = error_type
                ctx.step_duration.record(time.perf_counter() - started, labels)


async def _structured(ctx: QuizContext, call: StructuredCall[SchemaT], step: Step, messages: list[Any],
                      span: trace.Span, acceptable: Callable[[SchemaT], bool] = lambda _: True,
                      ) -> tuple[SchemaT, TokenUsage]:
    """Call the model for a ``call.schema`` instance; retry output that does not validate or is not
    ``acceptable``.

    Returns the parsed object and the tokens of all attempts. Raises ``StructuredOutputError`` when no
    attempt validates; provider errors (``openai.APIError`` and friends) propagate unchanged.
    """
    usage = TokenUsage(input_tokens=0, output_tokens=0)
    for attempt in range(1, ctx.structured_output_attempts + 1):
        # The client's timeout bounds each read, not the call: a response that trickles in byte by byte
        # would never end without this deadline.
        async with asyncio.timeout(ctx.call_deadline_s):
            parsed, message = await call(messages)
        meta = message.usage_metadata or {}
        usage["input_tokens"] += int(meta.get("input_tokens", 0))
        usage["output_tokens"] += int(meta.get("output_tokens", 0))
        if parsed is not None and acceptable(parsed):
            span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, usage["input_tokens"])
            span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, usage["output_tokens"])
            return parsed, usage
        span.add_event("structured_output.invalid", {"attempt": attempt, "schema": call.schema.__name__})
    raise StructuredOutputError(step, ctx.structured_output_attempts)


def answer_leaks(question: Question) -> bool:
    """True when the question text gives its own reference answer away (e.g. after a prompt injection)."""
    answer = " ".join(question.reference_answer.casefold().split())
    return len(answer) >= 3 and answer in " ".join(question.question.casefold().split())


def _language(state: QuizState) -> str:
    return prompts.LANGUAGE_NAMES[state["language"]]


async def teacher_ask(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Teacher writes the next question and keeps its reference answer."""
    ctx = runtime.context
    async with _agent_step(ctx, "teacher", "ask", state) as span:
        history = "\n".join(f"- {q}" for q in state.get("history", [])) or "(none)"
        messages = [SystemMessage(prompts.TEACHER_SYSTEM.format(language=_language(state))),
                    HumanMessage(prompts.TEACHER_ASK.format(difficulty=state["difficulty"],
                                                            subject=state["subject"], history=history))]
        # A question that contains its own answer is unusable: asked again, never shown to the Student.
        question, usage = await _structured(ctx, ctx.agents.ask, "ask", messages, span,
                                            acceptable=lambda q: not answer_leaks(q))
    return {"question": question.model_dump(), "usage": {"ask": usage}}


async def student_answer(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Student answers from the question text alone (never the reference answer)."""
    ctx = runtime.context
    async with _agent_step(ctx, "student", "answer", state) as span:
        persona = prompts.STUDENT_PERSONAS[state["difficulty"]]
        messages = [SystemMessage(prompts.STUDENT_SYSTEM.format(persona=persona, language=_language(state))),
                    HumanMessage(prompts.STUDENT_ANSWER.format(question=state["question"]["question"]))]
        answer, usage = await _structured(ctx, ctx.agents.answer, "answer", messages, span)
    return {"answer": answer.model_dump(), "usage": {"answer": usage}}


async def teacher_grade(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Teacher grades the Student's answer against its reference answer; this finishes the round."""
    ctx = runtime.context
    async with _agent_step(ctx, "teacher", "grade", state) as span:
        question = state["question"]
        messages = [SystemMessage(prompts.TEACHER_SYSTEM.format(language=_language(state))),
                    HumanMessage(prompts.TEACHER_GRADE.format(question=question["question"],
                                                              reference_answer=question["reference_answer"],
                                                              answer=state["answer"]["answer"]))]
        grade, usage = await _structured(ctx, ctx.agents.grade, "grade", messages, span)
        span.set_attribute("quiz.verdict", grade.verdict)
    return {"grade": grade.model_dump(), "usage": {"grade": usage}, "round": state.get("round", 0) + 1,
            "history": [question["question"]]}


NODES = {"teacher_ask": teacher_ask, "student_answer": student_answer, "teacher_grade": teacher_grade}


def build_graph(checkpointer: BaseCheckpointSaver | None = None) -> CompiledStateGraph:
    """Compile the round graph. ``checkpointer`` keeps sessions (thread id = session id) between runs."""
    builder = StateGraph(QuizState, context_schema=QuizContext)
    for name, node in NODES.items():
        builder.add_node(name, node)
    builder.add_edge(START, "teacher_ask")
    builder.add_edge("teacher_ask", "student_answer")
    builder.add_edge("student_answer", "teacher_grade")
    builder.add_edge("teacher_grade", END)
    return builder.compile(checkpointer=checkpointer, name="quiz")
