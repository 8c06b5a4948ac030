"""One way to play a round, for the service (``app.rounds``) and the evaluation (``evals.runner``): the
workflow span, the run's context, the graph streamed, failures classified, the result read.

    quiz = Quiz.create(llm, telemetry, settings, checkpointer)
    with quiz.round_span(session_id, inputs):            # invoke_workflow quiz; a failure → a QuizError
        async for item in quiz.stream(session_id, inputs):  # RoundEvents as they happen, then a Played
            ...

The graph runs with ``durability="exit"``: one checkpoint per round, written when the round ends, so a round
that fails leaves the session as it was before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.trace import SpanKind

from app.errors import classify
from app.llm import LLM
from app.settings import Settings
from graphs import agents
from graphs.context import QuizContext
from graphs.events import AnswerAwaited, RoundEvent
from graphs.graph import QuizGraph, build_graph, without_requested
from graphs.prompts import AgentPrompt
from graphs.state import InputState, QuizState
from graphs.structured import StructuredCall
from graphs.views import FinishedRound, PausedRound
from quiz.vocabulary import ANSWERED_BY_MODEL, ANSWERED_BY_PERSON
from telemetry import contract as C
from telemetry.cost import DEFAULT_PRICES, Price, load_prices
from telemetry.sdk import Telemetry
from telemetry.spans import current_trace_id, mark_failed

OWNER = "quiz_owner"  # the checkpoint metadata key of the principal a session belongs to (app.auth)
RUN = "quiz_run"  # the checkpoint metadata key of the round (app.runs: its run id) that wrote the checkpoint
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Played:
    """How a run ended: ``finished`` (graded) or ``paused`` (awaiting a person's answer), and the session's
    state after it (``state``, the graph's final values)."""

    state: QuizState
    finished: FinishedRound | None = None
    paused: PausedRound | None = None


def learner_labels(values: InputState | QuizState) -> dict[str, str]:
    """``quiz.round.kind`` and ``quiz.difficulty.chosen_by`` of a named learner's round: a review or a new
    question, at an adaptive or a fixed difficulty (``values``: the round's input, or the state after it)."""
    preset = values.get("preset")
    return {C.ATTR_ROUND_KIND: "review" if preset is not None and preset.get("review") else "new",
            C.ATTR_DIFFICULTY_CHOSEN_BY: "adaptive" if values.get("adaptive") else "fixed"}


def question_format(inputs: InputState) -> str:
    """``quiz.question.format`` of a round: its preset question's (a review keeps its options, or has none,
    whatever the session's format), else the session's (the Teacher writes what the format asks)."""
    preset = inputs.get("preset")
    if preset is not None:
        return "choice" if preset.get("options") else "open"
    return "choice" if inputs.get("format") == "choice" else "open"


@dataclass
class Quiz:
    """The compiled graph of the configured steps and what every run of it shares: the bound calls, the
    prompts, the LLM, telemetry and settings; ``store_errors``: what the session store raises when down.
    ``agent_graph``: the same without the steps played on request (``graphs.graph.without_requested``), which a
    round the Student agent answers never plays (``graph`` when there are none)."""

    graph: QuizGraph
    steps: list[agents.Step]
    calls: dict[str, StructuredCall[Any]]
    prompts: Mapping[str, AgentPrompt]
    llm: LLM
    telemetry: Telemetry
    settings: Settings
    store_errors: tuple[type[BaseException], ...] = ()
    price: Price | None = None
    agent_graph: QuizGraph | None = None

    @classmethod
    def create(cls, llm: LLM, telemetry: Telemetry, settings: Settings,
               checkpointer: BaseCheckpointSaver | None = None, *, prompts: Mapping[str, AgentPrompt] | None = None,
               store_errors: tuple[type[BaseException], ...] = ()) -> Quiz:
        """The steps ``settings`` choose (``DISABLED_AGENTS``), bound once to ``llm``, with ``prompts`` (default:
        the configured versions), and the model's price (``LLM_PRICES_FILE``; ``ValueError`` if the table is
        broken; a model it does not name is logged, and its spend is not measured)."""
        steps = settings.steps()
        price = load_prices(settings.llm_prices_file).price(llm.model)
        if price is None:
            log.warning("the price table (%s) has no price for model %s: its spend is not measured",
                        settings.llm_prices_file or DEFAULT_PRICES, llm.model)
        graph = build_graph(checkpointer, steps)
        agent_steps = without_requested(steps)
        agent_graph = graph if agent_steps == steps else build_graph(checkpointer, agent_steps)
        return cls(graph, steps, agents.bind(steps, dict.fromkeys(agents.AGENTS, llm.chat)),
                   prompts or settings.prompts(), llm, telemetry, settings, store_errors, price, agent_graph)

    def context(self, session_id: str) -> QuizContext:
        """The context of one run of session ``session_id``."""
        return QuizContext(steps=agents.infos(self.steps), calls=self.calls, prompts=self.prompts,
                           session_id=session_id, provider=self.llm.gen_ai_provider, model=self.llm.model,
                           tracer=self.telemetry.tracer, step_duration=self.telemetry.instruments.step_duration,
                           step_outcomes=self.telemetry.instruments.step_outcomes,
                           price=self.price, llm_cost=self.telemetry.instruments.llm_cost,
                           structured_output_attempts=self.settings.structured_output_attempts,
                           call_deadline_s=self.settings.llm_call_deadline_s,
                           rounds_kept=self.settings.session_rounds_kept)

    @contextmanager
    def round_span(self, session_id: str, inputs: InputState, *, attributes: Mapping[str, Any] | None = None,
                   link: trace.Link | None = None) -> Iterator[trace.Span]:
        """The round's ``invoke_workflow quiz`` span, current while the body runs; ``attributes``: more (an
        evaluation item's), ``link``: to the span of an earlier request (the question a person answers).

        A round stopped before its end (its task cancelled: ``app.runs``) ends its span with ``error.type``
        ``cancelled``. An exception in the body is classified (``app.errors.classify``): an expected failure is
        written on the span (``error.type``, ERROR status), logged with the trace id and raised as its
        ``QuizError``; anything else (a bug) propagates unchanged.
        """
        names = {
            GenAI.GEN_AI_OPERATION_NAME: GenAI.GenAiOperationNameValues.INVOKE_WORKFLOW.value,
            GenAI.GEN_AI_WORKFLOW_NAME: C.WORKFLOW_NAME,
            GenAI.GEN_AI_CONVERSATION_ID: session_id,
            GenAI.GEN_AI_PROVIDER_NAME: self.llm.gen_ai_provider,
            GenAI.GEN_AI_REQUEST_MODEL: self.llm.model,
            C.ATTR_SUBJECT: C.subject_label(inputs["subject"]),
            C.ATTR_DIFFICULTY: inputs["difficulty"],
            C.ATTR_LANGUAGE: inputs["language"],
            C.ATTR_ANSWERED_BY: inputs.get("student", ANSWERED_BY_MODEL),
            C.ATTR_QUESTION_FORMAT: question_format(inputs),
            **(attributes or {}),
        }
        preset = inputs.get("preset")
        if preset is not None and (item := preset.get("item")) is not None:  # a question bank's (quiz.bank)
            names[C.ATTR_QUESTION_SOURCE], names[C.ATTR_QUESTION_ITEM] = C.QUESTION_BANK, item["id"]
        if inputs.get("learner"):  # a named learner's round (app.learners): never the learner's id
            names.update(learner_labels(inputs))
        with self.telemetry.tracer.start_as_current_span(
                C.SPAN_ROUND, kind=SpanKind.INTERNAL, attributes=names, links=[link] if link else None,
                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except asyncio.CancelledError:  # stopped: by its client (app.runs) or with its process
                mark_failed(span, "cancelled", "The round was stopped before it ended")
                raise
            except Exception as exc:
                error = classify(exc, self.settings.rate_limit_retry_after_s, self.store_errors)
                if error is None:
                    raise
                mark_failed(span, error.error_type, error.title)
                log.warning("round failed: %s (%s: %s) trace_id=%s", error.title, type(exc).__name__, exc,
                            current_trace_id())
                raise error from exc

    async def stream(self, session_id: str, graph_input: InputState | Command, owner: str | None = None,
                     run: str | None = None) -> AsyncIterator[RoundEvent | Played]:
        """Run the round of ``session_id`` (its thread) on ``graph_input`` (the round's settings, or the command
        that resumes a paused round): each ``RoundEvent`` as it happens, then the ``Played``. The result is
        also written on the current span (``quiz.round``, ``quiz.verdict``, the round's tokens). ``owner`` and
        ``run``: the principal id and the round's run id written beside the checkpoint (``config``)."""
        final: QuizState | None = None
        awaited: AnswerAwaited | None = None
        person = isinstance(graph_input, Command) or graph_input.get("student") == ANSWERED_BY_PERSON
        graph = self.graph if person or self.agent_graph is None else self.agent_graph
        async for part in graph.astream(graph_input, self.config(session_id, owner, run),
                                             context=self.context(session_id), stream_mode=["custom", "values"],
                                             durability="exit", version="v2"):
            if part["type"] == "values":
                final = part["data"]
                for pending in part["interrupts"]:
                    awaited = AnswerAwaited.model_validate(pending.value)
            elif part["type"] == "custom" and isinstance(part["data"], RoundEvent):
                yield part["data"]
        if final is None:
            raise RuntimeError("the graph ended without a state")
        span = trace.get_current_span()
        if awaited is not None:  # paused for the person's answer: no verdict yet
            span.set_attribute(C.ATTR_ROUND, awaited.round)
            if awaited.hints:
                span.set_attribute(C.ATTR_HINTS_USED, len(awaited.hints))
            yield Played(final, paused=PausedRound.of(final, awaited))
            return
        finished = FinishedRound.of(final)
        span.set_attribute(C.ATTR_ROUND, finished.round)
        span.set_attribute(C.ATTR_VERDICT, finished.verdict)
        if finished.answered_by == ANSWERED_BY_PERSON:
            span.set_attribute(C.ATTR_HINTS_USED, len(finished.hints))
        span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, finished.usage.input_tokens)
        span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, finished.usage.output_tokens)
        if finished.usage.cost_usd is not None:
            span.set_attribute(C.ATTR_COST, finished.usage.cost_usd)
        yield Played(final, finished=finished)

    async def play(self, session_id: str, graph_input: InputState | Command) -> Played:
        """``stream()`` to its end: the ``Played``."""
        async for item in self.stream(session_id, graph_input):
            if isinstance(item, Played):
                return item
        raise RuntimeError("the round ended without a result")

    @staticmethod
    def config(session_id: str, owner: str | None = None, run: str | None = None) -> RunnableConfig:
        """The graph config of session ``session_id`` (its thread). ``owner``: the principal whose session it is,
        ``run``: the id of the round that plays (``app.runs``), both kept in every checkpoint's metadata
        (LangGraph copies a run's ``config["metadata"]`` into the metadata of the checkpoints it writes, on
        every saver: ``StateSnapshot.metadata[OWNER]``, ``[RUN]``)."""
        config: RunnableConfig = {"configurable": {"thread_id": session_id}}
        metadata = {key: value for key, value in ((OWNER, owner), (RUN, run)) if value is not None}
        if metadata:
            config["metadata"] = metadata
        return config
