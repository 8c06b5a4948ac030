"""A test-only fifth step, registered in the agent table and nowhere else: the Teacher gives a tip after the
Reviewer has accepted the question and before the Student answers (a test's step: the Tutor's hints, which a
person asks for, are the table's own). It proves the table is the one place a step
is added (issue #20): the service's JSON, SSE, AG-UI, page and ``question-app eval`` show it without a change.

``register()`` inserts it into ``graphs.agents.STEPS`` in place (for a process of its own, run
``python -m tests.fifth_step <question-app arguments>``: registers it, then runs the real entry point).
"""

from __future__ import annotations

import sys
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from graphs import agents
from graphs.context import QuizContext
from graphs.events import RoundEvent
from graphs.nodes import round_to_play
from graphs.prompts import TeacherPrompt
from graphs.state import QuizState
from graphs.tracing import agent_step
from quiz.vocabulary import LANGUAGE_NAMES

STEP = "tip"


class Tip(BaseModel):
    """A tip that points the way without giving the answer."""

    tip: str = Field(description="One sentence that helps without giving the answer away")


async def teacher_tip(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """The Teacher's tip for this round's question: one model call, an event, a record with outcome ``given``."""
    ctx = runtime.context
    round_no = round_to_play(state)
    with agent_step(runtime, STEP, round_no):
        system = ctx.prompt("teacher", TeacherPrompt).system.format(language=LANGUAGE_NAMES[state["language"]])
        messages: list[BaseMessage] = [SystemMessage(system),
                                       HumanMessage(f"Give a tip for: {state['question']['question']}")]
        tip, usage = await ctx.call(STEP, Tip, messages)
    runtime.stream_writer(ctx.event(RoundEvent, STEP, round_no, tip.tip, kind=STEP, outcome="given"))
    return {"steps": ctx.record(STEP, round_no, state, usage, outcome="given", detail=tip.tip)}


TIP = agents.Step(STEP, "teacher", "Teacher", teacher_tip, Tip, writes="steps", outcomes=("given",))


def register(steps: list[agents.Step] | None = None) -> list[agents.Step]:
    """``steps`` (default: the table's own list, changed in place) with the tip step before ``answer``."""
    table = agents.STEPS if steps is None else steps
    if TIP not in table:
        table.insert(next(i for i, s in enumerate(table) if s.name == "answer"), TIP)
    return table


if __name__ == "__main__":
    register()
    from question_app.__main__ import main

    main(sys.argv[1:])
