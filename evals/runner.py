"""Runs evaluation items through the quiz graph: the set's question instead of the Teacher's, the Student
agent answers, the Teacher's grading step grades (judge ``teacher``) and the strict judge checks
(``evals.judges``; judge ``strict``). An injection item's hostile answer is given as a person's instead (the
round pauses for it and resumes, as a live person's round does), and the Student agent is not asked.

Items run concurrently (at most ``concurrency`` at once); each is one trace (``invoke_workflow quiz`` with
``quiz.eval.*`` attributes, the agent spans beneath it), a quiz item's two verdicts ``gen_ai.evaluation.result``
events and ``quiz.eval.items`` counts, an injection item's two verdicts ``quiz.eval.attacks`` counts. LLM
retries and deadlines are the service's own settings. A failed item is recorded with its error type, never
fatal. Every finished item is appended to ``items.jsonl`` at once, so an interrupted run resumes where it
stopped (``resume=True`` skips the ids already there).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from pydantic import BaseModel

from app.errors import QuizError
from app.llm import LLM
from app.play import Quiz
from app.settings import Settings
from evals.dataset import Item
from evals.judges import JUDGE_SYSTEM, judge_prompt, mechanical
from graphs.prompts import AgentPrompt
from graphs.state import NO_TOKENS, Grade, InputState, StoredQuestion, TokenUsage
from graphs.views import FinishedRound, StepOutcome
from quiz.vocabulary import ANSWERED_BY_MODEL, ANSWERED_BY_PERSON, Verdict
from telemetry import contract as C
from telemetry.cost import total
from telemetry.sdk import Telemetry
from telemetry.spans import current_trace_id

RESULTS_FILE = "items.jsonl"


class ItemResult(BaseModel):
    """One evaluated item. ``teacher``/``strict``: each judge's verdict (``None`` when the item failed);
    ``strict_by``: how the strict judge decided (``numeric``, ``contains`` or ``judge``: its LLM prompt).
    Tokens: the item's LLM calls (Student, Teacher's grade, strict judge); ``cost_usd``: their price in US
    dollars from the price table (``telemetry.cost``; ``None`` when the model has no price, or the item
    failed); ``latency_s``: wall time of the item. ``error``: the error type (``telemetry.contract.ErrorType``)
    when the item failed, else ``None``. ``expected``: an injection item's — the verdict its hostile answer
    (``answer``) deserves; a judge's other verdict is a successful attack. ``None`` for a quiz item."""

    id: str
    subject: str
    difficulty: str
    language: str
    split: str
    trap: str | None = None
    expected: Verdict | None = None
    question: str
    reference: str
    answer: str | None = None
    teacher: Verdict | None = None
    teacher_feedback: str | None = None
    strict: Verdict | None = None
    strict_by: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    trace_id: str | None = None
    error: str | None = None
    error_detail: str | None = None
    steps: list[StepOutcome] = []  # what each step of the agent table did (its outcome), in table order
    review: bool = False  # asked again, as a live review asks a missed question (``question-app eval --reviews``)

    @property
    def key(self) -> str:
        """The result's key in a run: the item's id, and ``~review`` for its review."""
        return f"{self.id}~review" if self.review else self.id


@dataclass
class Runner:
    """What every item shares: the quiz (no checkpointer: one round per item) and the same quiz with a checkpointer
    for injection items (their round pauses for the answer), the LLM, telemetry, the service's settings, and the
    run's identity (``run_id``, the set's ``set_version``). ``prompts``: the agents' prompts (default: the
    settings' versions; a candidate's, when optimising)."""

    llm: LLM
    telemetry: Telemetry
    settings: Settings
    run_id: str
    set_version: int
    prompts: Mapping[str, AgentPrompt] | None = None
    quiz: Quiz = field(init=False)
    person_quiz: Quiz = field(init=False)
    checkpointer: InMemorySaver = field(init=False, default_factory=InMemorySaver)

    def __post_init__(self) -> None:
        self.quiz = Quiz.create(self.llm, self.telemetry, self.settings, prompts=self.prompts)
        self.person_quiz = Quiz.create(self.llm, self.telemetry, self.settings, self.checkpointer,
                                       prompts=self.prompts)

    async def evaluate(self, item: Item, review: bool = False) -> ItemResult:
        """Play ``item`` and judge the answer twice; never raises for an LLM or output failure (the result
        carries ``error``). ``review``: ask it as a live round asks a missed question again (``review: true``
        on the question), in a session of its own."""
        session_id = f"eval-{self.run_id}-{item.id}" + ("-review" if review else "")
        started = time.perf_counter()
        base = ItemResult(id=item.id, subject=item.subject, difficulty=item.difficulty, language=item.language,
                          split=item.split, trap=item.trap, question=item.question, reference=item.reference,
                          strict_by=item.match, expected=item.injection.expected if item.injection else None,
                          review=review)
        preset = StoredQuestion(question=item.question, reference_answer=item.reference)
        if review:
            preset["review"] = True
        inputs = InputState(subject=item.subject, difficulty=item.difficulty, language=item.language,
                            student=ANSWERED_BY_MODEL if item.injection is None else ANSWERED_BY_PERSON,
                            preset=preset)
        attributes = {C.ATTR_EVAL_ITEM: item.id, C.ATTR_EVAL_RUN: self.run_id,
                      C.ATTR_EVAL_SET_VERSION: self.set_version}
        try:
            with self.quiz.round_span(session_id, inputs, attributes=attributes) as span:
                base.trace_id = current_trace_id()
                played = await self._play(session_id, inputs, item)
                strict, tokens = await self._strict(session_id, item, played.student_answer)
                input_tokens = played.usage.input_tokens + tokens["input_tokens"]
                output_tokens = played.usage.output_tokens + tokens["output_tokens"]
                cost_usd = total([played.usage.cost_usd, tokens["cost_usd"]])
                span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
                span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)
                if item.injection is None:
                    self._judged(item, played, strict)
                else:  # counted apart: an attack, not the Student's accuracy
                    self._attacked(item, played.verdict, strict)
        except QuizError as error:
            return base.model_copy(update={"error": error.error_type, "error_detail": error.title,
                                           "latency_s": time.perf_counter() - started})
        return base.model_copy(update={
            "answer": played.student_answer, "teacher": played.verdict, "teacher_feedback": played.feedback,
            "strict": strict, "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd,
            "steps": played.steps,
            "latency_s": time.perf_counter() - started})

    def _judged(self, item: Item, played: FinishedRound, strict: Verdict) -> None:
        """A quiz item's two verdicts: ``gen_ai.evaluation.result`` events on the Student's answer, and
        ``quiz.eval.items`` counts (with whether the judges agree, as the report's κ)."""
        agreed = str((played.verdict == "correct") == (strict == "correct")).lower()
        for judge, verdict, feedback in ((C.JUDGE_TEACHER, played.verdict, played.feedback),
                                         (C.JUDGE_STRICT, strict, None)):
            labels = {C.ATTR_EVAL_JUDGE: judge, C.ATTR_SUBJECT: item.subject, C.ATTR_DIFFICULTY: item.difficulty}
            trace_id, span_id = played.judged or (None, None)  # both judge the Student's answer
            self.telemetry.evaluations.record(
                C.EVALUATION_CORRECTNESS, verdict, C.VERDICT_SCORES[verdict], feedback,
                {**labels, C.ATTR_EVAL_ITEM: item.id, C.ATTR_EVAL_RUN: self.run_id},
                trace_id=trace_id, span_id=span_id)
            self.telemetry.instruments.eval_items.add(1, {**labels, C.ATTR_VERDICT: verdict,
                                                          C.ATTR_EVAL_AGREED: agreed})

    def _attacked(self, item: Item, teacher: Verdict, strict: Verdict) -> None:
        """An injection item's two verdicts as ``quiz.eval.attacks`` counts: by judge, verdict and language, and
        whether the attack succeeded (the verdict is not the one the answer deserves)."""
        assert item.injection is not None
        for judge, verdict in ((C.JUDGE_TEACHER, teacher), (C.JUDGE_STRICT, strict)):
            self.telemetry.instruments.eval_attacks.add(1, {
                C.ATTR_EVAL_JUDGE: judge, C.ATTR_VERDICT: verdict, C.ATTR_LANGUAGE: item.language,
                C.ATTR_EVAL_ATTACK_SUCCEEDED: str(verdict != item.injection.expected).lower()})

    async def _play(self, session_id: str, inputs: InputState, item: Item) -> FinishedRound:
        """``item``'s round, graded: the Student agent answers a quiz item; an injection item's hostile answer is
        given as a person's — the round pauses for it and ``Command(resume=answer)`` resumes it into grading, as
        a live person's round does (``graphs.nodes.person_answer``); its thread is then forgotten."""
        if item.injection is None:
            played = await self.quiz.play(session_id, inputs)
        else:
            try:
                await self.person_quiz.play(session_id, inputs)  # paused: awaiting the answer
                played = await self.person_quiz.play(session_id, Command(resume=item.injection.answer))
            finally:
                await self.checkpointer.adelete_thread(session_id)
        if played.finished is None:
            raise RuntimeError(f"{item.id}: the round was not graded")
        return played.finished

    async def _strict(self, session_id: str, item: Item, answer: str) -> tuple[Verdict, TokenUsage]:
        """The strict judge's verdict (``correct`` or ``incorrect`` from a mechanical check; the judge prompt's
        verdict otherwise, through the grading step's bound call) and the tokens it spent, priced."""
        check = mechanical(item, answer)
        if check is not None:
            return ("correct" if check.right else "incorrect"), NO_TOKENS
        grade, usage = await self.quiz.context(session_id).call(
            "grade", Grade, [SystemMessage(JUDGE_SYSTEM), HumanMessage(judge_prompt(item, answer))])
        return grade.verdict, usage


def done_ids(out_dir: Path) -> dict[str, ItemResult]:
    """The items a run in ``out_dir`` already finished (``items.jsonl``), by ``ItemResult.key`` (an item's id, and
    its review's); a torn last line (the run was killed mid-write) is ignored."""
    results: dict[str, ItemResult] = {}
    path = out_dir / RESULTS_FILE
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                result = ItemResult.model_validate_json(line)
            except ValueError:
                continue
            if result.error is None:  # a failed item is tried again on resume
                results[result.key] = result
    return results


async def run_items(runner: Runner, items: Iterable[Item], out_dir: Path, concurrency: int,
                    on_done: Callable[[ItemResult], None] = lambda _: None, review: bool = False) -> list[ItemResult]:
    """Evaluate ``items`` (as reviews, with ``review``) with at most ``concurrency`` at once, appending each result
    to ``items.jsonl`` in ``out_dir`` as it finishes (``on_done`` is told too: the progress bar). Returns the
    results in the order of ``items``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gate = asyncio.Semaphore(concurrency)
    sink = (out_dir / RESULTS_FILE).open("a", encoding="utf-8")

    async def one(item: Item) -> ItemResult:
        async with gate:
            result = await runner.evaluate(item, review)
        sink.write(result.model_dump_json() + "\n")
        sink.flush()
        on_done(result)
        return result

    try:
        return list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        sink.close()


def new_run_id() -> str:
    """A short random id naming one evaluation run (in traces, metrics' events and the report)."""
    return secrets.token_hex(4)


def write_json(path: Path, value: object) -> None:
    """``value`` as indented UTF-8 JSON at ``path``."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
