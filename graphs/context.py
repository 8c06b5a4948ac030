"""What every run of the graph needs and its checkpoint must not hold (LangGraph ``context_schema``).

The steps' bound model calls and prompts, what the agent table says about each step, and the tracer and
instruments the steps report to. They come in per run (``graph.astream(..., context=QuizContext(...))``), so
this package imports only the OpenTelemetry *API*, never the app or its telemetry set-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage
from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from pydantic import BaseModel

from graphs.events import RoundEvent
from graphs.prompts import AgentPrompt
from graphs.state import QuizState, StepRecord, TokenUsage
from graphs.structured import StructuredCall, StructuredOutputError, call_structured
from telemetry import contract as C
from telemetry.cost import Price
from telemetry.spans import span_ids

SchemaT = TypeVar("SchemaT", bound=BaseModel)
PromptT = TypeVar("PromptT", bound=AgentPrompt)
EventT = TypeVar("EventT", bound=RoundEvent)


@dataclass(frozen=True)
class StepInfo:
    """What a consumer of a step needs to know about it (the agent table's entry, ``graphs.agents.Step``):
    its ``name`` (``quiz.step``), its ``agent`` (``gen_ai.agent.name``) and the ``speaker`` shown for it."""

    name: str
    agent: str
    speaker: str


@dataclass(frozen=True)
class QuizContext:
    """One run's context.

    ``steps``: the table's steps by name; ``calls``: each step's structured call, bound to its agent's model;
    ``prompts``: each agent's prompt at the version the run plays with.
    ``session_id``: ``gen_ai.conversation.id`` on the agent spans.
    ``provider``/``model``: ``gen_ai.provider.name`` / ``gen_ai.request.model`` for the agent spans.
    ``tracer``: where the agent spans go.
    ``step_duration``: histogram (seconds) recorded per step with agent, step and ``error.type``.
    ``step_outcomes``: counter of step outcomes (``quiz.agent.step.outcomes``).
    ``price``: ``model``'s price (``telemetry.cost``), ``None`` when the table has none: each call's
    ``cost_usd``, and what is added to ``llm_cost`` (``quiz.llm.cost.usd``, by model, agent and step).
    ``structured_output_attempts``: calls per step before invalid output is a ``StructuredOutputError``.
    ``call_deadline_s``: longest one LLM call may take, retries included (``TimeoutError`` past it).
    ``rounds_kept``: finished rounds the session keeps for looking back (the checkpoint stays small).
    """

    steps: Mapping[str, StepInfo]
    calls: Mapping[str, StructuredCall[Any]]
    prompts: Mapping[str, AgentPrompt]
    session_id: str
    provider: str
    model: str
    tracer: trace.Tracer
    step_duration: Histogram | None = None
    step_outcomes: Counter | None = None
    price: Price | None = None
    llm_cost: Counter | None = None
    structured_output_attempts: int = 2
    call_deadline_s: float | None = None
    rounds_kept: int = 10

    async def call(self, step: str, schema: type[SchemaT], messages: list[BaseMessage],
                   acceptable: Callable[[SchemaT], bool] = lambda _: True) -> tuple[SchemaT, TokenUsage]:
        """Step ``step``'s structured call (its output a ``schema``) with this run's attempts and deadline
        (``graphs.structured.call_structured``); its tokens priced, and their cost counted (``llm_cost``), also
        when every attempt gave invalid output (``StructuredOutputError``: the provider billed them)."""
        call = self.calls[step]
        if call.schema is not schema:
            raise TypeError(f"step {step!r} is bound to {call.schema.__name__}, not {schema.__name__}")
        try:
            parsed, usage = await call_structured(call, messages, attempts=self.structured_output_attempts,
                                                  deadline_s=self.call_deadline_s, acceptable=acceptable)
        except StructuredOutputError as error:  # its attempts were billed: spend, though the round fails
            if error.usage is not None:
                self._price(step, error.usage)
            raise
        self._price(step, usage)
        return parsed, usage

    def _price(self, step: str, usage: TokenUsage) -> None:
        """Set ``usage``'s ``cost_usd`` by ``price`` and count it in ``llm_cost`` (nothing without a price)."""
        if self.price is None:
            return
        usage["cost_usd"] = cost = self.price.cost(usage["input_tokens"], usage["output_tokens"],
                                                   usage["cached_input_tokens"])
        if self.llm_cost is not None:
            self.llm_cost.add(cost, {GenAI.GEN_AI_REQUEST_MODEL: self.model,
                                     GenAI.GEN_AI_AGENT_NAME: self.steps[step].agent, C.ATTR_STEP: step})

    def prompt(self, agent: str, model: type[PromptT]) -> PromptT:
        """``agent``'s prompt, as its prompt model (``TypeError`` if the table names another model)."""
        prompt = self.prompts[agent]
        if not isinstance(prompt, model):
            raise TypeError(f"{agent}'s prompt is a {type(prompt).__name__}, not a {model.__name__}")
        return prompt

    def event(self, event: type[EventT], step: str, round_no: int, text: str, **fields: Any) -> EventT:
        """Step ``step``'s ``event`` of round ``round_no``, with the step's agent and speaker filled in."""
        info = self.steps[step]
        return event(round=round_no, step=step, agent=info.agent, speaker=info.speaker, text=text, **fields)

    def record(self, step: str, round_no: int, state: QuizState, usage: TokenUsage, outcome: str | None = None,
               detail: str | None = None, span: trace.Span | None = None) -> dict[str, StepRecord]:
        """The state update that records one run of ``step`` (``QuizState.steps``), with the ids of its agent
        ``span`` when given; an ``outcome`` is also counted in ``quiz.agent.step.outcomes`` (with the round's
        subject and difficulty, bounded)."""
        info = self.steps[step]
        if outcome is not None and self.step_outcomes is not None:
            self.step_outcomes.add(1, {GenAI.GEN_AI_AGENT_NAME: info.agent, C.ATTR_STEP: step,
                                       C.ATTR_STEP_OUTCOME: outcome,
                                       C.ATTR_SUBJECT: C.subject_label(state["subject"]),
                                       C.ATTR_DIFFICULTY: state["difficulty"]})
        trace_id, span_id = span_ids(span) if span is not None else (None, None)
        return {step: StepRecord(round=round_no, agent=info.agent, outcome=outcome, detail=detail, runs=1,
                                 input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"],
                                 cost_usd=usage["cost_usd"], trace_id=trace_id, span_id=span_id)}
