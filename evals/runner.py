"""Runs evaluation items through the quiz graph: the set's question instead of the Teacher's, the Student
agent answers, the Teacher's grading step grades (judge ``teacher``) and the strict judge checks
(``evals.judges``; judge ``strict``).

Items run concurrently (at most ``concurrency`` at once); each is one trace (``invoke_workflow quiz`` with
``quiz.eval.*`` attributes, the agent spans beneath it), its two verdicts ``gen_ai.evaluation.result``
events and ``quiz.eval.items`` counts. LLM retries and deadlines are the service's own settings. A failed
item is recorded with its error type, never fatal. Every finished item is appended to ``items.jsonl`` at
once, so an interrupted run resumes where it stopped (``resume=True`` skips the ids already there).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel

from app.errors import classify
from app.llm import LLM
from app.settings import Settings
from evals.dataset import Item
from evals.judges import JUDGE_SYSTEM, judge_prompt, mechanical
from graphs.context import QuizAgents, QuizContext
from graphs.graph import QuizGraph, build_graph
from graphs.prompts import Prompts
from graphs.state import InputState, RoundResult, Verdict
from telemetry import Telemetry, current_trace_id
from telemetry import contract as C

RESULTS_FILE = "items.jsonl"


class ItemResult(BaseModel):
    """One evaluated item. ``teacher``/``strict``: each judge's verdict (``None`` when the item failed);
    ``strict_by``: how the strict judge decided (``numeric``, ``contains`` or ``judge``: its LLM prompt).
    Tokens: the item's LLM calls (Student, Teacher's grade, strict judge); ``latency_s``: wall time of the
    item. ``error``: the error type (``telemetry.contract.ErrorType``) when the item failed, else ``None``."""

    id: str
    subject: str
    difficulty: str
    language: str
    split: str
    trap: str | None = None
    question: str
    reference: str
    answer: str | None = None
    teacher: Verdict | None = None
    teacher_feedback: str | None = None
    strict: Verdict | None = None
    strict_by: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    trace_id: str | None = None
    error: str | None = None
    error_detail: str | None = None


@dataclass
class Runner:
    """What every item shares: the graph (no checkpointer: one round per item), the LLM, telemetry, the
    service's settings, and the run's identity (``run_id``, the set's ``set_version``)."""

    llm: LLM
    telemetry: Telemetry
    settings: Settings
    run_id: str
    set_version: int
    graph: QuizGraph | None = None
    agents: QuizAgents | None = None
    prompts: Prompts | None = None  # default: the settings' versions (a candidate's, when optimising)

    def __post_init__(self) -> None:
        self.graph = self.graph or build_graph(None)
        self.agents = self.agents or QuizAgents.create(teacher=self.llm.chat, student=self.llm.chat)
        self.prompts = self.prompts or self.settings.prompts()

    def _context(self, item: Item) -> QuizContext:
        assert self.agents is not None
        return QuizContext(agents=self.agents, session_id=f"eval-{self.run_id}-{item.id}",
                           provider=self.llm.gen_ai_provider, model=self.llm.model, tracer=self.telemetry.tracer,
                           step_duration=self.telemetry.instruments.step_duration,
                           structured_output_attempts=self.settings.structured_output_attempts,
                           call_deadline_s=self.settings.llm_call_deadline_s, rounds_kept=1,
                           prompts=self.prompts or self.settings.prompts())

    async def evaluate(self, item: Item) -> ItemResult:
        """Play ``item`` and judge the answer twice; never raises for an LLM or output failure (the result
        carries ``error``)."""
        assert self.graph is not None
        ctx = self._context(item)
        started = time.perf_counter()
        attributes = {
            GenAI.GEN_AI_OPERATION_NAME: GenAI.GenAiOperationNameValues.INVOKE_WORKFLOW.value,
            GenAI.GEN_AI_WORKFLOW_NAME: C.WORKFLOW_NAME, GenAI.GEN_AI_CONVERSATION_ID: ctx.session_id,
            GenAI.GEN_AI_PROVIDER_NAME: self.llm.gen_ai_provider, GenAI.GEN_AI_REQUEST_MODEL: self.llm.model,
            C.ATTR_SUBJECT: item.subject, C.ATTR_DIFFICULTY: item.difficulty, C.ATTR_LANGUAGE: item.language,
            C.ATTR_ANSWERED_BY: C.ANSWERED_BY_MODEL, C.ATTR_EVAL_ITEM: item.id, C.ATTR_EVAL_RUN: self.run_id,
            C.ATTR_EVAL_SET_VERSION: self.set_version,
        }
        base = ItemResult(id=item.id, subject=item.subject, difficulty=item.difficulty, language=item.language,
                          split=item.split, trap=item.trap, question=item.question, reference=item.reference,
                          strict_by=item.match)
        with self.telemetry.tracer.start_as_current_span(C.SPAN_ROUND, kind=SpanKind.INTERNAL, attributes=attributes,
                                                         record_exception=False, set_status_on_exception=False) as span:
            base.trace_id = current_trace_id()
            try:
                inputs = InputState(subject=item.subject, difficulty=item.difficulty, language=item.language,
                                    student=C.ANSWERED_BY_MODEL,
                                    preset={"question": item.question, "reference_answer": item.reference})
                final = await self.graph.ainvoke(inputs, {"configurable": {"thread_id": ctx.session_id}},
                                                 context=ctx)
                played = RoundResult.of(final)  # type: ignore[arg-type]
                strict, tokens = await self._strict(ctx, item, played.student_answer)
            except Exception as exc:
                error = classify(exc, self.settings.rate_limit_retry_after_s)
                if error is None:
                    raise
                span.set_attribute(error_attributes.ERROR_TYPE, error.error_type)
                span.set_status(Status(StatusCode.ERROR, error.title))
                return base.model_copy(update={"error": error.error_type, "error_detail": error.title,
                                               "latency_s": time.perf_counter() - started})
            span.set_attribute(C.ATTR_VERDICT, played.verdict)
            span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, played.input_tokens + tokens["input_tokens"])
            span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, played.output_tokens + tokens["output_tokens"])
            for judge, verdict, feedback in ((C.JUDGE_TEACHER, played.verdict, played.feedback),
                                             (C.JUDGE_STRICT, strict, None)):
                labels = {C.ATTR_EVAL_JUDGE: judge, C.ATTR_SUBJECT: item.subject, C.ATTR_DIFFICULTY: item.difficulty}
                self.telemetry.evaluations.record(
                    C.EVALUATION_CORRECTNESS, verdict, C.VERDICT_SCORES[verdict], feedback,
                    {**labels, C.ATTR_EVAL_ITEM: item.id, C.ATTR_EVAL_RUN: self.run_id})
                self.telemetry.instruments.eval_items.add(1, {**labels, C.ATTR_VERDICT: verdict})
        return base.model_copy(update={
            "answer": played.student_answer, "teacher": played.verdict, "teacher_feedback": played.feedback,
            "strict": strict, "input_tokens": played.input_tokens + tokens["input_tokens"],
            "output_tokens": played.output_tokens + tokens["output_tokens"],
            "latency_s": time.perf_counter() - started})

    async def _strict(self, ctx: QuizContext, item: Item, answer: str) -> tuple[Verdict, dict[str, int]]:
        """The strict judge's verdict (``correct`` or ``incorrect`` from a mechanical check; the judge prompt's
        verdict otherwise) and the tokens it spent."""
        check = mechanical(item, answer)
        if check is not None:
            return ("correct" if check.right else "incorrect"), {"input_tokens": 0, "output_tokens": 0}
        assert self.agents is not None
        grade, usage = await ctx.call(self.agents.grade, [SystemMessage(JUDGE_SYSTEM),
                                                          HumanMessage(judge_prompt(item, answer))])
        return grade.verdict, {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]}


def done_ids(out_dir: Path) -> dict[str, ItemResult]:
    """The items a run in ``out_dir`` already finished (``items.jsonl``), by id; a torn last line (the run
    was killed mid-write) is ignored."""
    results: dict[str, ItemResult] = {}
    path = out_dir / RESULTS_FILE
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                result = ItemResult.model_validate_json(line)
            except ValueError:
                continue
            if result.error is None:  # a failed item is tried again on resume
                results[result.id] = result
    return results


async def run_items(runner: Runner, items: Iterable[Item], out_dir: Path, concurrency: int,
                    on_done: Callable[[ItemResult], None] = lambda _: None) -> list[ItemResult]:
    """Evaluate ``items`` with at most ``concurrency`` at once, appending each result to ``items.jsonl`` in
    ``out_dir`` as it finishes (``on_done`` is told too: the progress bar). Returns the results in the order
    of ``items``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gate = asyncio.Semaphore(concurrency)
    sink = (out_dir / RESULTS_FILE).open("a", encoding="utf-8")

    async def one(item: Item) -> ItemResult:
        async with gate:
            result = await runner.evaluate(item)
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
