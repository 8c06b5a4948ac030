"""The Teacher–Student graph: ``teacher_ask → student_answer → teacher_grade``, one round per run.

When a person plays the Student (``student="person"`` in the input), ``student_answer`` pauses the round
with LangGraph's ``interrupt()``: the run ends with the question (``AnswerAwaited``), the paused round is the
session's checkpoint like any other, and a later run given ``answer_command(snapshot, text)`` resumes it
(``Command(resume=...)``) into grading
(https://docs.langchain.com/oss/python/langgraph/interrupts).

Each node is one agent step: it runs inside its agent span (``graphs.tracing``), gets its structured output
(``graphs.structured``), writes its public event to the custom stream (``graphs.events``) and returns its
state update. Consumers never name a node: they read the events and ``RoundResult.of(final_state)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite, StateSnapshot, interrupt
from opentelemetry import trace

from graphs import prompts
from graphs.context import QuizContext
from graphs.events import AnswerAwaited, AnswerGiven, AnswerGraded, QuestionAsked
from graphs.state import InputState, Question, QuizState, StoredRound
from graphs.tracing import agent_step
from telemetry import contract as C


def answer_leaks(question: Question) -> bool:
    """True when the question text gives its own reference answer away (e.g. after a prompt injection)."""
    answer = " ".join(question.reference_answer.casefold().split())
    return len(answer) >= 3 and answer in " ".join(question.question.casefold().split())


def round_to_play(state: QuizState) -> int:
    """The number of the round a run plays on ``state`` (the session's values, with the run's input): 1 after
    a reset, else one more than the rounds finished."""
    return 1 if state.get("reset") else state.get("round", 0) + 1


def _teacher_system(ctx: QuizContext, state: QuizState) -> SystemMessage:
    return SystemMessage(ctx.prompts.teacher.system.format(language=prompts.LANGUAGE_NAMES[state["language"]]))


async def teacher_ask(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Teacher writes the next question and keeps its reference answer (or asks the input's ``preset``)."""
    ctx = runtime.context
    round_no = round_to_play(state)
    if (preset := state.get("preset")) is not None:  # an evaluation item: the set's question, not the Teacher's
        runtime.stream_writer(QuestionAsked(round=round_no, question=preset["question"]))
        return {"question": dict(preset), "usage": {"ask": NO_TOKENS}}
    with agent_step(runtime, "teacher", "ask", round_no):
        earlier = [] if state.get("reset") else state.get("history", [])
        history = "\n".join(f"- {q}" for q in earlier) or "(none)"
        messages: list[BaseMessage] = [
            _teacher_system(ctx, state),
            HumanMessage(ctx.prompts.teacher.ask.format(difficulty=state["difficulty"], subject=state["subject"],
                                                    history=history))]
        # A question that contains its own answer is unusable: asked again, never shown to the Student.
        question, usage = await ctx.call(ctx.agents.ask, messages, acceptable=lambda q: not answer_leaks(q))
    runtime.stream_writer(QuestionAsked(round=round_no, question=question.question))
    return {"question": question.model_dump(), "usage": {"ask": usage}}


async def student_answer(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Student answers from the question text alone (never the reference answer): the Student agent, or
    the person playing it (``person_answer``)."""
    if state.get("student") == C.ANSWERED_BY_PERSON:
        return person_answer(state)
    ctx = runtime.context
    with agent_step(runtime, "student", "answer", round_to_play(state)):
        language = prompts.LANGUAGE_NAMES[state["language"]]
        messages: list[BaseMessage] = [
            SystemMessage(ctx.prompts.student.system.format(persona=ctx.prompts.student.personas[state["difficulty"]],
                                                        language=language)),
            HumanMessage(ctx.prompts.student.answer.format(question=state["question"]["question"]))]
        answer, usage = await ctx.call(ctx.agents.answer, messages)
    runtime.stream_writer(AnswerGiven(student_answer=answer.answer))
    return {"answer": answer.model_dump(), "usage": {"answer": usage}}


NO_TOKENS = {"input_tokens": 0, "output_tokens": 0}


def person_answer(state: QuizState) -> dict[str, Any]:
    """A person plays the Student: the round pauses here until their answer resumes it.

    ``interrupt()`` ends the run with ``AnswerAwaited`` (the question, never the reference answer) and the
    checkpoint keeps the round; ``Command(resume="<answer>")`` runs the step again, where ``interrupt()``
    returns the answer. Nothing may fail after the answer arrives in this step: a resume value is kept by
    the checkpoint, so a failure would replay the same answer forever (grading failures are handled by
    ``answer_command``).
    """
    trace_id, span_id = _ids(trace.get_current_span())  # on the first run: the request that asks
    answer = interrupt(AnswerAwaited(round=round_to_play(state), question=state["question"]["question"],
                                     asked_trace_id=trace_id, asked_span_id=span_id).model_dump())
    return {"answer": {"answer": str(answer)}, "usage": {"answer": NO_TOKENS}}


async def teacher_grade(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Teacher grades the Student's answer against its reference answer; this finishes the round."""
    ctx = runtime.context
    round_no = round_to_play(state)
    answered_by = state.get("student", C.ANSWERED_BY_MODEL)
    if answered_by == C.ANSWERED_BY_PERSON:  # the person's answer reaches the stream when grading starts
        runtime.stream_writer(AnswerGiven(student_answer=state["answer"]["answer"], answered_by=answered_by))
    with agent_step(runtime, "teacher", "grade", round_no) as span:
        question = state["question"]
        messages: list[BaseMessage] = [
            _teacher_system(ctx, state),
            HumanMessage(ctx.prompts.teacher.grade.format(question=question["question"],
                                                      reference_answer=question["reference_answer"],
                                                      answer=state["answer"]["answer"]))]
        grade, usage = await ctx.call(ctx.agents.grade, messages)
        span.set_attribute(C.ATTR_VERDICT, grade.verdict)
        span.set_attribute(C.ATTR_ANSWERED_BY, answered_by)
    runtime.stream_writer(AnswerGraded(verdict=grade.verdict, feedback=grade.feedback))
    # The round's outcome, and a reset's, are committed together here, by the last step.
    asked = [question["question"]]
    trace_id, span_id = _ids(span)  # feedback on the round attaches to its grading step
    earlier = state.get("usage", {})  # this round's ask and answer (a previous round's grade is there too)
    steps = [earlier[step] for step in ("ask", "answer") if step in earlier] + [usage]
    played = StoredRound(round=round_no, question=question["question"], answered_by=answered_by,
                         answer=state["answer"]["answer"], verdict=grade.verdict, feedback=grade.feedback,
                         reference_answer=question["reference_answer"], trace_id=trace_id, span_id=span_id,
                         input_tokens=sum(u["input_tokens"] for u in steps),
                         output_tokens=sum(u["output_tokens"] for u in steps),
                         finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    kept = [] if state.get("reset") else state.get("rounds", [])
    return {"grade": grade.model_dump(), "usage": {"grade": usage}, "round": round_no, "reset": False,
            "history": Overwrite(asked) if state.get("reset") else asked,
            "score": Overwrite({grade.verdict: 1}) if state.get("reset") else {grade.verdict: 1},
            "rounds": [*kept, played][-ctx.rounds_kept:]}


def _ids(span: trace.Span) -> tuple[str | None, str | None]:
    """Trace and span id (hex) of ``span``, ``None`` when it is not recorded (telemetry off)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def awaited_answer(snapshot: StateSnapshot) -> AnswerAwaited | None:
    """The question a person must answer before the session can go on (``graph.aget_state()``), or ``None``.

    Either the round is paused in ``student_answer`` (a pending interrupt), or the person answered and
    grading then failed (the checkpoint is left before ``teacher_grade`` with the person's answer in it):
    both wait for an answer to grade.
    """
    for pending in snapshot.interrupts:
        return AnswerAwaited.model_validate(pending.value)
    values = snapshot.values
    if snapshot.next == ("teacher_grade",) and values.get("student") == C.ANSWERED_BY_PERSON:
        return AnswerAwaited(round=round_to_play(values), question=values["question"]["question"])  # type: ignore[arg-type]
    return None


def answer_command(snapshot: StateSnapshot, answer: str) -> Command | None:
    """The graph input that gives ``answer`` to the round awaiting it (``awaited_answer``), ``None`` if none is.

    A paused round is resumed (``Command(resume=answer)``). After a failed grading the person's earlier
    answer is replaced and grading runs again (``Command(update=...)``), so a failed round never stops a
    session and never grades an answer twice.
    """
    if snapshot.interrupts:
        return Command(resume=answer)
    if awaited_answer(snapshot) is not None:
        return Command(update={"answer": {"answer": answer}})
    return None


QuizGraph = CompiledStateGraph[QuizState, QuizContext, InputState, QuizState]


def build_graph(checkpointer: BaseCheckpointSaver | None = None) -> QuizGraph:
    """Compile the round graph. ``checkpointer`` keeps sessions (thread id = session id) between runs.

    Input: ``InputState``; context: ``QuizContext``; custom stream: ``graphs.events.RoundEvent``s.
    """
    builder = StateGraph(QuizState, context_schema=QuizContext, input_schema=InputState)
    builder.add_node(teacher_ask)
    builder.add_node(student_answer)
    builder.add_node(teacher_grade)
    builder.add_edge(START, "teacher_ask")
    builder.add_edge("teacher_ask", "student_answer")
    builder.add_edge("student_answer", "teacher_grade")
    builder.add_edge("teacher_grade", END)
    return builder.compile(checkpointer=checkpointer, name=C.WORKFLOW_NAME)
