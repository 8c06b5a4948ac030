"""What every run of the graph needs and its checkpoint must not hold (LangGraph ``context_schema``).

The agents' bound model calls, and the tracer and instruments the steps report to. They come in per run
(``graph.astream(..., context=QuizContext(...))``), so this package imports only the OpenTelemetry *API*,
never the app or its telemetry set-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from pydantic import BaseModel

from graphs.prompts import Prompts
from graphs.state import Grade, Question, StudentAnswer, TokenUsage
from graphs.structured import StructuredCall, call_structured

SchemaT = TypeVar("SchemaT", bound=BaseModel)


@dataclass(frozen=True)
class QuizAgents:
    """The agent steps, each bound to its model once (any chat model with tool calling)."""

    ask: StructuredCall[Question]
    answer: StructuredCall[StudentAnswer]
    grade: StructuredCall[Grade]

    @classmethod
    def create(cls, teacher: BaseChatModel, student: BaseChatModel) -> QuizAgents:
        """Bind the Teacher's two steps to ``teacher`` and the Student's to ``student`` (may be the same)."""
        return cls(StructuredCall.bind("ask", teacher, Question), StructuredCall.bind("answer", student, StudentAnswer),
                   StructuredCall.bind("grade", teacher, Grade))


@dataclass(frozen=True)
class QuizContext:
    """One run's context.

    ``agents``: the bound structured calls of the steps.
    ``session_id``: ``gen_ai.conversation.id`` on the agent spans.
    ``provider``/``model``: ``gen_ai.provider.name`` / ``gen_ai.request.model`` for the agent spans.
    ``tracer``: where the agent spans go.
    ``step_duration``: histogram (seconds) recorded per step with agent, step and ``error.type``.
    ``structured_output_attempts``: calls per step before invalid output is a ``StructuredOutputError``.
    ``call_deadline_s``: longest one LLM call may take, retries included (``TimeoutError`` past it).
    ``rounds_kept``: finished rounds the session keeps for looking back (the checkpoint stays small).
    ``prompts``: each agent's prompt version (``graphs.prompts``; version 1 of both by default).
    """

    agents: QuizAgents
    session_id: str
    provider: str
    model: str
    tracer: trace.Tracer
    step_duration: Histogram | None = None
    structured_output_attempts: int = 2
    call_deadline_s: float | None = None
    rounds_kept: int = 10
    prompts: Prompts = field(default_factory=Prompts)

    async def call(self, call: StructuredCall[SchemaT], messages: list[BaseMessage],
                   acceptable: Callable[[SchemaT], bool] = lambda _: True) -> tuple[SchemaT, TokenUsage]:
        """``graphs.structured.call_structured`` with this run's attempts and call deadline."""
        return await call_structured(call, messages, attempts=self.structured_output_attempts,
                                     deadline_s=self.call_deadline_s, acceptable=acceptable)
