"""The agent table: the one place that says which agents and steps a round has, in what order, with their
prompt, the name they are shown under and what each contributes (in the spirit of agent-service-toolkit's
``agents.py``). The graph is built from it (``graphs.graph.build_graph``), and everything that counts or shows
steps reads it: the run's context (bound calls, prompts, speakers), the API's event streams and page (which
render any step's events generically), token sums, the deadline of a round, the evaluation's call budget.

Adding an agent: write its node (``graphs.nodes`` or a module of its own), its prompt model and prompt file
(``graphs.prompts``, ``graphs/prompt_files/<agent>/1.yaml``), its events if it says something typed
(``graphs.events``), and add its rows here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime
from pydantic import BaseModel

from graphs import nodes
from graphs.context import QuizContext, StepInfo
from graphs.prompts import DEFAULT_VERSION, AgentPrompt, ReviewerPrompt, StudentPrompt, TeacherPrompt, TutorPrompt, load
from graphs.state import Grade, Hint, Question, QuizState, Review, StudentAnswer
from graphs.structured import StructuredCall
from quiz.vocabulary import VERDICTS

Node = Callable[[QuizState, Runtime[QuizContext]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Agent:
    """An agent: its ``name`` (``gen_ai.agent.name``, its prompt folder), the ``speaker`` it is shown as, its
    ``prompt`` model and the ``prompt_version`` it plays unless ``PROMPT_VERSIONS`` names another, whether it is
    ``optional`` (``DISABLED_AGENTS`` may switch it off) and, if optional, whether it plays ``by_default`` (else
    ``ENABLED_AGENTS`` switches it on)."""

    name: str
    speaker: str
    prompt: type[AgentPrompt]
    optional: bool = False
    by_default: bool = True
    prompt_version: str = DEFAULT_VERSION


@dataclass(frozen=True)
class Loop:
    """After its step, go back ``to`` an earlier step while ``when(state)`` holds, at most ``times`` per round."""

    to: str
    when: Callable[[QuizState], bool]
    times: int = 1


@dataclass(frozen=True)
class Step(StepInfo):
    """A step of a round, in table order: its ``node``; the ``schema`` of its structured output (``None``: it
    calls no model); the state key it ``writes``; the bounded ``outcomes`` it may report (``quiz.step.outcome``);
    a ``loop`` back to an earlier step; ``preset_skips``: given an input ``preset`` it makes no model call;
    ``when``: the step runs only when this holds after the step before it (else the round goes on to the step
    after it): a step played on request, in a run of its own (a person's hint)."""

    node: Node
    schema: type[BaseModel] | None
    writes: str
    outcomes: tuple[str, ...] = ()
    loop: Loop | None = None
    preset_skips: bool = False
    when: Callable[[QuizState], bool] | None = None

    @property
    def node_name(self) -> str:
        """The graph node's name: ``<agent>_<step>`` (LangGraph's ``execute_task`` spans name it)."""
        return f"{self.agent}_{self.name}"


AGENTS: dict[str, Agent] = {agent.name: agent for agent in (
    # Teacher prompt 2: the Student's answer quoted as data in the grading request (version 1 is kept to compare).
    Agent("teacher", "Teacher", TeacherPrompt, prompt_version="2"),
    Agent("reviewer", "Reviewer", ReviewerPrompt, optional=True),
    Agent("student", "Student", StudentPrompt),
    # Hints for a person playing the Student (HINTS_PER_ROUND a round); DISABLED_AGENTS=tutor turns them off.
    Agent("tutor", "Tutor", TutorPrompt, optional=True),
)}

STEPS: list[Step] = [
    Step("ask", "teacher", "Teacher", nodes.teacher_ask, Question, writes="question", preset_skips=True),
    Step("review", "reviewer", "Reviewer", nodes.reviewer_review, Review, writes="review",
         outcomes=("accepted", "rejected"), loop=Loop(to="ask", when=nodes.sent_back)),
    Step("answer", "student", "Student", nodes.student_answer, StudentAnswer, writes="answer"),
    Step("hint", "tutor", "Tutor", nodes.tutor_hint, Hint, writes="hints", when=nodes.hint_wanted,
         loop=Loop(to="answer", when=nodes.unanswered)),
    Step("grade", "teacher", "Teacher", nodes.teacher_grade, Grade, writes="grade", outcomes=VERDICTS),
]


def agent(name: str) -> Agent:
    """The agent called ``name`` (``KeyError`` naming the agents there are)."""
    try:
        return AGENTS[name]
    except KeyError:
        raise KeyError(f"no agent {name!r}; there are: {', '.join(AGENTS)}") from None


def steps(disabled: Collection[str] = (), enabled: Collection[str] = ()) -> list[Step]:
    """The table's steps in order: of every agent that plays by default or is ``enabled``, and is not
    ``disabled``. ``ValueError`` for an agent that does not exist or is not optional."""
    for name in (*disabled, *enabled):
        if name not in AGENTS:
            raise ValueError(f"no agent {name!r}; there are: {', '.join(AGENTS)}")
        if not AGENTS[name].optional:
            optional = [a.name for a in AGENTS.values() if a.optional]
            raise ValueError(f"agent {name!r} is not optional; optional agents: {', '.join(optional) or 'none'}")
    playing = {a.name for a in AGENTS.values() if (a.by_default or a.name in enabled) and a.name not in disabled}
    return [step for step in STEPS if step.agent in playing]


def infos(chosen: list[Step]) -> dict[str, StepInfo]:
    """What the run's context says about each step, by name, in table order."""
    return {step.name: StepInfo(step.name, step.agent, step.speaker) for step in chosen}


def bind(chosen: list[Step], models: Mapping[str, BaseChatModel]) -> dict[str, StructuredCall[Any]]:
    """Each step's structured call bound once to its agent's model (``models`` by agent; binding converts the
    schema to JSON Schema, which is not free)."""
    return {step.name: StructuredCall.bind(step.name, models[step.agent], step.schema)
            for step in chosen if step.schema is not None}


def prompts(versions: Mapping[str, str] | None = None) -> dict[str, AgentPrompt]:
    """Every agent's prompt at its version in ``versions`` (by agent; default: the agent's ``prompt_version``).
    ``ValueError`` for an agent or a version that does not exist (naming those that do)."""
    versions = dict(versions or {})
    for name in versions:
        if name not in AGENTS:
            raise ValueError(f"no agent {name!r}; there are: {', '.join(AGENTS)}")
    return {name: load(name, versions.get(name, a.prompt_version), a.prompt) for name, a in AGENTS.items()}


def llm_calls_per_round(chosen: list[Step], preset: bool = False) -> int:
    """The most model calls a round of ``chosen`` steps makes (one per step run, loops included; structured
    output retries not counted); with ``preset``, the steps a preset question skips make none, and a loop back
    to such a step never runs (a preset question is not asked again). A step played on request (``when``) is
    not counted: it runs in a request of its own, which makes that one call."""
    position = {step.name: index for index, step in enumerate(chosen)}
    calls = 0
    for index, step in enumerate(chosen):
        if step.when is not None:
            continue
        calls += step.schema is not None and not (preset and step.preset_skips)
        if step.loop is not None and step.loop.to in position \
                and not (preset and chosen[position[step.loop.to]].preset_skips):
            again = chosen[position[step.loop.to]:index + 1]
            calls += step.loop.times * sum(s.schema is not None and not (preset and s.preset_skips) for s in again)
    return calls
