"""The round graph, built from the agent table (``graphs.agents``): ``teacher_ask → student_answer →
teacher_grade`` today, one round per run, each step a node, a step's ``loop`` a conditional edge back.

When a person plays the Student (``student="person"`` in the input), ``student_answer`` pauses the round
with LangGraph's ``interrupt()``: the run ends with the question (``AnswerAwaited``), the paused round is the
session's checkpoint like any other, and a later run given ``answer_command(snapshot, text)`` resumes it
(``Command(resume=...)``) into grading (https://docs.langchain.com/oss/python/langgraph/interrupts).

Consumers never name a node: they read the events (``graphs.events``) and the read models (``graphs.views``).
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.graph import Graph
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot

from graphs import agents
from graphs.context import QuizContext
from graphs.events import AnswerAwaited
from graphs.nodes import HINT_REQUEST, round_to_play
from graphs.state import InputState, QuizState, StepRecord, round_hints
from quiz.vocabulary import ANSWERED_BY_PERSON
from telemetry import contract as C

QuizGraph = CompiledStateGraph[QuizState, QuizContext, InputState, QuizState]


def build_graph(checkpointer: BaseCheckpointSaver | None = None, steps: list[agents.Step] | None = None) -> QuizGraph:
    """Compile the round graph of ``steps`` (default: every step of the table). ``checkpointer`` keeps sessions
    (thread id = session id) between runs.

    Input: ``InputState``; context: ``QuizContext``; custom stream: ``graphs.events.RoundEvent``s.
    """
    chosen = agents.steps() if steps is None else steps
    builder = StateGraph(QuizState, context_schema=QuizContext, input_schema=InputState)
    for step in chosen:
        builder.add_node(step.node_name, step.node)  # type: ignore[call-overload]  # a table's node
    names = [step.node_name for step in chosen]
    builder.add_edge(START, names[0])
    position = {step.name: index for index, step in enumerate(chosen)}
    for index, step in enumerate(chosen):
        targets, onward = _onward(chosen, index)
        loop = step.loop
        if loop is not None and loop.to in position:
            back = names[position[loop.to]]
            router = _router(loop, back, onward, f"{step.name}_loop", chosen[position[loop.to]].preset_skips)
            builder.add_conditional_edges(step.node_name, router, [back, *targets])
        elif len(targets) > 1:
            builder.add_conditional_edges(step.node_name, onward, targets)
        else:
            builder.add_edge(step.node_name, targets[0])
    graph = builder.compile(checkpointer=checkpointer, name=C.WORKFLOW_NAME)
    _draw_once(graph)
    return graph


def without_requested(steps: list[agents.Step]) -> list[agents.Step]:
    """``steps`` without those played on request (``Step.when``: the Tutor's hint, for a person): the steps of a
    round the Student agent answers, whose graph then has no edge function deciding on them in every round."""
    return [step for step in steps if step.when is None]


def _draw_once(graph: QuizGraph) -> None:
    """Keep ``graph.get_graph()``'s drawing: the LangChain instrumentation draws the graph on every run to
    name its nodes and edges on the ``invoke_agent quiz`` span (``gen_ai.workflow.nodes``/``edges``,
    ``opentelemetry.instrumentation.langchain.langgraph_utils.extract_graph_structure``), about 3 % of a
    round's CPU for a drawing that never changes. Other arguments (a config, ``xray``) draw as before."""
    drawn = graph.get_graph()
    draw = graph.get_graph

    def get_graph(config: RunnableConfig | None = None, *, xray: int | bool = False) -> Graph:
        return drawn if config is None and xray is False else draw(config, xray=xray)

    graph.get_graph = get_graph  # type: ignore[method-assign]


def _onward(chosen: list[agents.Step], index: int) -> tuple[list[str], Callable[[QuizState], str]]:
    """Where a round goes after step ``index`` when it does not loop back: the next step (or the end); past it,
    to the one after, when the next step is played on request (``Step.when``) and its condition does not hold.
    The condition is an edge function named after it (``hint_wanted``), which LangGraph traces as a run of its
    own: a graph for rounds that never play such a step leaves it out (``without_requested``)."""
    names = [step.node_name for step in chosen] + [END]
    following = names[index + 1]
    when = chosen[index + 1].when if index + 1 < len(chosen) else None
    if when is None:
        return [following], lambda _: following
    past = names[index + 2]

    def onward(state: QuizState) -> str:
        return following if when(state) else past
    onward.__name__ = onward.__qualname__ = when.__name__
    return [following, past], onward


def _router(loop: agents.Loop, back: str, onward: Callable[[QuizState], str], name: str,
            back_skips_preset: bool) -> Callable[[QuizState], str]:
    """The loop's conditional edge: back while ``loop.when(state)`` holds, except to a step that a preset
    question skips when the round has one (it is not asked again; ``agents.llm_calls_per_round`` counts the
    same). LangGraph traces an edge's function as a run of its own, so the LangChain instrumentation shows it
    as ``execute_task <name>`` (``review_loop``) beneath the step's node span."""
    def route(state: QuizState) -> str:
        again = loop.when(state) and not (back_skips_preset and state.get("preset") is not None)
        return back if again else onward(state)
    route.__name__ = route.__qualname__ = name
    return route


def awaited_answer(snapshot: StateSnapshot) -> AnswerAwaited | None:
    """The question a person must answer before the session can go on (``graph.aget_state()``), or ``None``.

    Either the round is paused in the Student's step (a pending interrupt); or the person asked for a hint and
    the Tutor's step failed (the checkpoint is left before it, with the request in it); or the person answered
    and a later step then failed (the checkpoint is left after the answer, with the person's answer in it): all
    wait for an answer to grade.
    """
    for pending in snapshot.interrupts:
        return AnswerAwaited.model_validate(pending.value)
    values = snapshot.values
    if not snapshot.next or values.get("student") != ANSWERED_BY_PERSON:
        return None
    round_no = round_to_play(values)  # type: ignore[arg-type]
    answered = values.get("steps", {}).get("answer")
    if values.get("hint_wanted") or (answered is not None and answered["round"] == round_no):
        return AnswerAwaited(round=round_no, question=values["question"]["question"],
                             hints=round_hints(values, round_no),  # type: ignore[arg-type]
                             options=values["question"].get("options", []))
    return None


def answer_command(snapshot: StateSnapshot, answer: str) -> Command | None:
    """The graph input that gives ``answer`` to the round awaiting it (``awaited_answer``), ``None`` if none is.

    A paused round is resumed (``Command(resume=answer)``). After a failed hint the request for it is dropped
    and the answer given in its place (the Tutor's step passes through, and the round goes on to grading);
    after a failed grading the person's earlier answer is replaced and grading runs again
    (``Command(update=...)``). So a failed step never stops a session and never grades an answer twice.
    """
    if snapshot.interrupts:
        return Command(resume=answer)
    if awaited_answer(snapshot) is None:
        return None
    if snapshot.values.get("hint_wanted"):
        values = snapshot.values
        answered = StepRecord(round=round_to_play(values), agent=_agent_of("answer"), outcome=None,  # type: ignore[arg-type]
                              detail=None, runs=1, input_tokens=0, output_tokens=0, cost_usd=0.0)
        return Command(update={"hint_wanted": False, "answer": {"answer": answer}, "steps": {"answer": answered}})
    return Command(update={"answer": {"answer": answer}})


def hint_command(snapshot: StateSnapshot) -> Command | None:
    """The graph input that asks the Tutor for a hint for the round awaiting an answer, ``None`` if none is: the
    paused round resumed with ``HINT_REQUEST``; after a failed hint, the Tutor's step run again."""
    if snapshot.interrupts:
        return Command(resume=HINT_REQUEST)
    if awaited_answer(snapshot) is None:
        return None
    if snapshot.values.get("hint_wanted"):
        return Command(update={"hint_wanted": True})
    return None  # the person answered and grading failed: the answer is in, no hint now


def _agent_of(step: str) -> str:
    return next(s.agent for s in agents.STEPS if s.name == step)
