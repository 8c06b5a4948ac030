"""``question-app optimize``: beam search over rewrites of one agent's system prompt, guided by textual
"gradients" — the LLM's own critique of the items a prompt got wrong (ProTeGi: Pryzant et al. 2023,
"Automatic Prompt Optimization with 'Gradient Descent' and Beam Search", EMNLP).

    question-app optimize --agent student --start 1 --rounds 2 --beam 2 --expand 2 --budget 600

Round 0 scores the starting prompt on the set's ``train`` split (the strict judge's accuracy). Each round,
every prompt in the beam shows the LLM up to ``ERRORS_SHOWN`` items it got wrong; the LLM says why the prompt
led there (the gradient) and writes a rewrite, ``--expand`` times; every rewrite that keeps the template's
placeholders is scored on ``train``, and the best ``--beam`` prompts go on. The best prompt found is then run
on the ``validation`` split beside the starting one (paired, exact McNemar): it becomes a new prompt version
file only when its validation accuracy is higher than the start's. ``--budget`` bounds the LLM calls of the
whole search (each scored item costs its Student, Teacher and judge calls, each rewrite one); the search stops
before a step would pass it. Everything is traced: one trace for the search, a span per round and candidate
(``quiz.optimize.*``), each candidate's train score as a ``gen_ai.evaluation.result`` event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from langchain_core.messages import HumanMessage, SystemMessage
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from pydantic import BaseModel, Field

from app import bootstrap
from app.errors import classify
from app.llm import LLM
from app.settings import Settings
from evals import report
from evals.dataset import SET_PATH, Item, load
from evals.runner import ItemResult, Runner, new_run_id, run_items, write_json
from evals.stats import mcnemar_exact
from graphs import agents, prompts
from graphs.prompts import AgentPrompt
from graphs.structured import StructuredCall, call_structured
from telemetry import contract as C
from telemetry.sdk import Telemetry

log = logging.getLogger("evals.optimize")
ERRORS_SHOWN = 5  # wrong items shown to the LLM per rewrite

REWRITE_SYSTEM = (
    "You improve the system prompt of an agent in a quiz. You are shown the prompt and questions it answered "
    "wrongly under it, with its answers and the reference answers. First say in one or two sentences what in "
    "the prompt led to these mistakes; then write a better system prompt. Keep every placeholder in curly "
    "braces exactly as it is, add no new ones, and keep the prompt short. Do not put any quiz answer in it."
)
REWRITE_PROMPT = (
    "The system prompt:\n<prompt>\n{system}\n</prompt>\n"
    "Placeholders it must keep: {placeholders}\n"
    "Questions answered wrongly:\n{errors}"
)


class Rewrite(BaseModel):
    """The LLM's textual gradient and the prompt it proposes."""

    critique: str = Field(description="Why the prompt led to these wrong answers, in one or two sentences.")
    system: str = Field(description="The rewritten system prompt, with the same {placeholders}.")


def successes(results: list[ItemResult], agent: str) -> list[bool]:
    """What a prompt of ``agent`` is judged by, per item: for the Student's, the strict judge found the answer
    correct; for the Teacher's (which grades), the Teacher's verdict agrees with the strict judge's (correct or
    not). A failed item is no success."""
    if agent == "teacher":
        return [r.error is None and (r.teacher == "correct") == (r.strict == "correct") for r in results]
    return [r.strict == "correct" for r in results]


METRICS = {"student": "the strict judge's accuracy", "teacher": "agreement with the strict judge"}


@dataclass
class Candidate:
    """A prompt in the search: its ``system`` template, where it came from, and its train score."""

    id: str
    prompt: AgentPrompt
    round: int
    parent: str | None = None
    critique: str | None = None
    results: list[ItemResult] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The share of train items that are successes (``successes``) for this prompt's agent."""
        won = successes(self.results, self.prompt.name)
        return sum(won) / len(won) if won else 0.0


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a ``str.format`` template uses. Raises ``ValueError`` for what is not a plain template: a
    stray brace, and any field with a format spec, a conversion or an attribute or index
    (``{persona:>999999999}`` would allocate a gigabyte on every use, ``{persona.__class__}`` reads objects)."""
    import string

    names = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: "
                             "only plain {name} placeholders are allowed")
        names.add(name)
    return names


def calls_for(items: list[Item], steps: list[agents.Step]) -> int:
    """LLM calls that scoring ``items`` takes without retries: a round's calls with a preset question (the agent
    table's ``steps``: the Student, the Teacher's grade …), and the strict judge's prompt for ``judge`` items."""
    per_round = agents.llm_calls_per_round(steps, preset=True)
    return sum(per_round + (item.match == "judge") for item in items)


@dataclass
class Search:
    """One optimisation run's shared parts and its LLM-call budget."""

    llm: LLM
    tel: Telemetry
    settings: Settings
    run_id: str
    set_version: int
    agent: str
    out_dir: Path
    concurrency: int
    budget: int
    calls: int = 0
    rewrite: StructuredCall[Rewrite] | None = None
    dropped: list[dict[str, Any]] = field(default_factory=list)  # rewrites not scored, and why

    def __post_init__(self) -> None:
        self.rewrite = StructuredCall.bind("rewrite", self.llm.chat, Rewrite)

    def affordable(self, cost: int) -> bool:
        """Whether ``cost`` more LLM calls stay within ``--budget``."""
        return self.calls + cost <= self.budget

    def calls_for(self, items: list[Item]) -> int:
        """``calls_for`` with the configured steps."""
        return calls_for(items, self.settings.steps())

    def _prompts(self, prompt: AgentPrompt) -> dict[str, AgentPrompt]:
        return {**self.settings.prompts(), prompt.name: prompt}

    async def score(self, candidate: Candidate, items: list[Item], split: str) -> list[ItemResult]:
        """Run ``items`` under ``candidate``'s prompt; the results (also in ``out_dir/<split>/<id>``)."""
        self.calls += self.calls_for(items)
        runner = Runner(self.llm, self.tel, self.settings, self.run_id, self.set_version,
                        prompts=self._prompts(candidate.prompt))
        with self.tel.tracer.start_as_current_span(C.SPAN_OPTIMIZE_CANDIDATE, attributes={
                C.ATTR_OPTIMIZE_CANDIDATE: candidate.id, C.ATTR_OPTIMIZE_ROUND: candidate.round,
                C.ATTR_OPTIMIZE_SPLIT: split}) as span:
            results = await run_items(runner, items, self.out_dir / split / candidate.id, self.concurrency)
            won = successes(results, self.agent)
            accuracy = sum(won) / len(won) if won else 0.0
            span.set_attribute(C.ATTR_OPTIMIZE_SCORE, accuracy)
            self.tel.evaluations.record(C.EVALUATION_PROMPT_ACCURACY, split, accuracy, None, {
                C.ATTR_OPTIMIZE_CANDIDATE: candidate.id, C.ATTR_OPTIMIZE_ROUND: candidate.round,
                C.ATTR_OPTIMIZE_SPLIT: split, C.ATTR_EVAL_JUDGE: C.JUDGE_STRICT})
        return results

    async def propose(self, parent: Candidate, round_no: int, index: int) -> Candidate | None:
        """One rewrite of ``parent`` from its wrong train items; ``None`` when the LLM failed or the rewrite
        lost a placeholder (logged)."""
        assert self.rewrite is not None
        missed = [r for r, won in zip(parent.results, successes(parent.results, self.agent), strict=True)
                  if not won][:ERRORS_SHOWN]
        errors = "\n".join(f"- Q: {r.question}\n  student's answer: {r.answer or '(none)'}\n  reference: {r.reference}"
                           + (f"\n  the grade it gave: {r.teacher}; the right grade: {r.strict}"
                              if self.agent == "teacher" else "") for r in missed)
        needed = placeholders(parent.prompt.system)
        self.calls += 1
        try:
            rewrite, _ = await call_structured(self.rewrite, [
                SystemMessage(REWRITE_SYSTEM),
                HumanMessage(REWRITE_PROMPT.format(system=parent.prompt.system,
                                                   placeholders=", ".join(f"{{{n}}}" for n in sorted(needed)),
                                                   errors=errors or "(none)"))],
                attempts=self.settings.structured_output_attempts, deadline_s=self.settings.llm_call_deadline_s)
        except Exception as exc:
            if classify(exc, self.settings.rate_limit_retry_after_s) is None:
                raise
            log.warning("rewrite of %s failed: %s", parent.id, exc)
            self.dropped.append({"parent": parent.id, "round": round_no, "reason": f"the LLM failed: {exc}"})
            return None
        try:
            found = placeholders(rewrite.system)
        except ValueError as exc:  # not a str.format template at all (a stray brace)
            self._drop(parent, round_no, rewrite.system, f"not a template: {exc}")
            return None
        if found != needed:
            self._drop(parent, round_no, rewrite.system, f"placeholders {sorted(found)} instead of {sorted(needed)}")
            return None
        prompt = parent.prompt.model_copy(update={"system": rewrite.system,
                                                  "version": f"{parent.prompt.version}+r{round_no}.{index}"})
        return Candidate(f"r{round_no}.{index}-{parent.id}", prompt, round_no, parent.id, rewrite.critique)


    def _drop(self, parent: Candidate, round_no: int, system: str, reason: str) -> None:
        log.warning("rewrite of %s dropped: %s", parent.id, reason)
        self.dropped.append({"parent": parent.id, "round": round_no, "reason": reason, "system": system})


def next_version(*directories: Path) -> str:
    """One more than the largest numeric version in any of ``directories`` (the bundled prompts among them, so
    a version written elsewhere can be copied in without a clash)."""
    numbers = [int(p.stem) for d in directories for p in d.glob("*.yaml") if p.stem.isdigit()]
    return str(max(numbers, default=0) + 1)


def write_version(directory: Path, prompt: AgentPrompt, provenance: str) -> Path:
    """``prompt`` as the next version file in ``directory`` (a YAML document under a provenance comment)."""
    directory.mkdir(parents=True, exist_ok=True)
    version = next_version(directory, prompts.PROMPT_DIR / prompt.name)
    document = prompt.model_dump()
    document["version"] = version
    path = directory / f"{version}.yaml"
    comment = "".join(f"# {line}\n" for line in provenance.splitlines())
    path.write_text(comment + yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=110),
                    encoding="utf-8")
    return path


async def search(settings: Settings, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """The whole optimisation: the beam search on ``train``, the check on ``validation``, the new version."""
    question_set = load(args.set)
    # Quiz items only: an injection item's answer is fixed (no Student prompt changes it), and its hostile words
    # are not shown to the rewriting LLM as a mistake to learn from.
    train = question_set.select(split="train", kind="quiz", limit=args.train_limit)
    validation = question_set.select(split="validation", kind="quiz", limit=args.validation_limit)
    started = time.perf_counter()
    async with bootstrap.process(settings, traffic=C.TRAFFIC_EVALUATION) as (tel, llm):
        s = Search(llm, tel, settings, run_id, question_set.version, args.agent, args.out, args.concurrency,
                   args.budget)
        start = Candidate(f"v{args.start}", prompts.load(args.agent, args.start, agents.agent(args.agent).prompt), 0)
        history: list[dict[str, Any]] = []
        with tel.tracer.start_as_current_span(C.SPAN_OPTIMIZE, attributes={
                C.ATTR_EVAL_RUN: run_id, GenAI.GEN_AI_PROMPT_NAME: args.agent, C.ATTR_PROMPT_VERSION: args.start}):
            stopped = None
            if not s.affordable(s.calls_for(train) + 2 * s.calls_for(validation)):
                stopped = "the budget does not cover scoring the start on train and validation"
            else:
                start.results = await s.score(start, train, "train")
            history.append(_row(start, kept=True))
            beam = [start]
            for round_no in range(1, args.rounds + 1):
                if stopped:
                    break
                with tel.tracer.start_as_current_span(C.SPAN_OPTIMIZE_ROUND, attributes={
                        C.ATTR_OPTIMIZE_ROUND: round_no}):
                    fresh: list[Candidate] = []
                    for parent in beam:
                        for index in range(1, args.expand + 1):
                            # Reserve the final validation run of the winner and the start.
                            if not s.affordable(1 + s.calls_for(train) + 2 * s.calls_for(validation)):
                                stopped = f"budget reached in round {round_no}"
                                break
                            child = await s.propose(parent, round_no, len(fresh) + index)
                            if child is None:
                                continue
                            child.results = await s.score(child, train, "train")
                            fresh.append(child)
                        if stopped:
                            break
                    ranked = sorted(beam + fresh, key=lambda c: c.score, reverse=True)[:args.beam]
                    history += [_row(c, kept=c in ranked) for c in fresh]
                    beam = ranked
            best = max(beam, key=lambda c: c.score)
            outcome: dict[str, Any] = {"best": best.id, "best_train": round(best.score, 4),
                                       "start_train": round(start.score, 4)}
            if not start.results:
                outcome.update(accepted=False, reason=stopped)
            elif best is start:  # a rewrite must score strictly higher to displace the start
                outcome.update(accepted=False, reason="no rewrite scored higher than the start on train")
            else:
                start_val = await s.score(start, validation, "validation")
                best_val = await s.score(best, validation, "validation")
                comparison = paired(start_val, best_val, args.agent, f"{args.agent} prompt {args.start}", best.id)
                better = comparison["only_b"] > comparison["only_a"]
                outcome.update(validation=comparison, accepted=better)
                if better:
                    provenance = (f"Written by question-app optimize (run {run_id}, set v{question_set.version}) from "
                                  f"{args.agent} prompt {args.start}: train {start.score:.1%} → {best.score:.1%}; "
                                  f"validation {comparison['conclusion']}.\nCritique that led here: {best.critique}")
                    path = write_version(args.write_to / args.agent, best.prompt, provenance)
                    outcome.update(written=str(path), version=path.stem)
                else:
                    outcome["reason"] = f"not better on validation: {comparison['conclusion']}"
    return {"run": {"id": run_id, "agent": args.agent, "start": args.start, "set_version": question_set.version,
                    "model": llm.model, "train_items": len(train), "validation_items": len(validation),
                    "beam": args.beam, "expand": args.expand, "rounds": args.rounds, "budget": args.budget,
                    "llm_calls": s.calls, "seconds": round(time.perf_counter() - started, 1),
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds")},
            "stopped": stopped, "candidates": history, "dropped": s.dropped, "outcome": outcome}


def paired(a: list[ItemResult], b: list[ItemResult], agent: str, name_a: str, name_b: str) -> dict[str, Any]:
    """``a`` and ``b`` (the same items under two prompts) compared on ``successes``: each share, B − A, and
    the exact McNemar test of the items only one of them won."""
    test = mcnemar_exact(successes(a, agent), successes(b, agent))
    share_a, share_b = (sum(successes(r, agent)) / len(r) if r else 0.0 for r in (a, b))
    better = name_b if test.difference > 0 else name_a
    conclusion = ("no item changed" if test.only_a + test.only_b == 0 else
                  f"{better} is better by {abs(test.difference):.1%} "
                  + (f"(p = {test.p_value:.3g} < {report.ALPHA}: more than chance)" if test.p_value < report.ALPHA
                     else f"(p = {test.p_value:.3g}: within chance)"))
    return {"metric": METRICS[agent], "items": test.n, "a": name_a, "b": name_b, name_a: round(share_a, 4),
            name_b: round(share_b, 4), "difference": round(test.difference, 4), "only_a": test.only_a,
            "only_b": test.only_b, "p_value": round(test.p_value, 6), "test": "exact McNemar (two-sided)",
            "conclusion": conclusion}


def _row(candidate: Candidate, kept: bool) -> dict[str, Any]:
    return {"id": candidate.id, "round": candidate.round, "parent": candidate.parent,
            "train": round(candidate.score, 4), "kept": kept, "critique": candidate.critique,
            "system": candidate.prompt.system}


def markdown(document: dict[str, Any]) -> str:
    """The optimisation report as Markdown."""
    run, outcome = document["run"], document["outcome"]
    lines = [f"# Prompt optimisation {run['id']}: {run['agent']} prompt {run['start']}, {run['model']}", "",
             f"{run['train_items']} train and {run['validation_items']} validation items; beam {run['beam']}, "
             f"{run['expand']} rewrites per prompt, {run['rounds']} round{'s' if run['rounds'] != 1 else ''}; "
             f"{run['llm_calls']} of "
             f"{run['budget']} LLM calls; {run['seconds']:.0f} s." + (f" Stopped: {document['stopped']}."
                                                                       if document["stopped"] else ""),
             "", "| candidate | round | parent | train accuracy | kept | critique |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c['id']} | {c['round']} | {c['parent'] or '–'} | {c['train']:.1%} | "
              f"{'yes' if c['kept'] else 'no'} | {report.cell(c['critique'])} |" for c in document["candidates"]]
    if document["dropped"]:
        lines += ["", f"Rewrites dropped before scoring: {len(document['dropped'])}", ""]
        lines += [f"- from {d['parent']} in round {d['round']}: {d['reason']} — {report.cell(d.get('system'))}"
                  for d in document["dropped"]]
    lines += ["", f"Best on train: {outcome['best']} ({outcome['best_train']:.1%}; the start "
                  f"{outcome['start_train']:.1%})."]
    if "validation" in outcome:
        v = outcome["validation"]
        lines += ["", f"On {v['items']} validation items ({v['metric']}, {v['test']}): {v['a']} {v[v['a']]:.1%}, "
                      f"{v['b']} {v[v['b']]:.1%}; only {v['a']}: {v['only_a']}, only {v['b']}: {v['only_b']}; "
                      f"{v['conclusion']}."]
    lines += ["", f"Written: `{outcome['written']}` (version {outcome['version']})." if outcome.get("accepted")
              else f"Not written: {outcome.get('reason')}."]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    """The command line of ``question-app optimize``."""
    p = argparse.ArgumentParser(prog="question-app optimize", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--agent", choices=list(agents.AGENTS), default="student", help="whose system prompt to optimise")
    p.add_argument("--start", help="the prompt version to start from (default: the one the service plays by default, "
                   "the agent table's: the Teacher's 2, the Student's 1)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--beam", type=int, default=2, help="prompts kept after each round")
    p.add_argument("--expand", type=int, default=2, help="rewrites proposed per kept prompt and round")
    p.add_argument("--budget", type=int, default=600, help="the most LLM calls the whole search may make")
    p.add_argument("--train-limit", type=int, help="score on the first N train items only")
    p.add_argument("--validation-limit", type=int, help="check on the first N validation items only")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--set", type=Path, default=SET_PATH)
    p.add_argument("--out", type=Path, help="where to write (default: eval-results/optimize-<date>-<run id>)")
    p.add_argument("--write-to", type=Path, default=prompts.PROMPT_DIR,
                   help="where the new version goes: <dir>/<agent>/<n>.yaml (default: the bundled prompts)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``question-app optimize``; 0 whether or not a better prompt was found (the report says which),
    2 for bad arguments."""
    args = parser().parse_args(argv)
    args.start = args.start or agents.agent(args.agent).prompt_version
    if min(args.rounds, args.beam, args.expand, args.budget, args.concurrency) < 1:
        parser().error("--rounds, --beam, --expand, --budget and --concurrency must be ≥ 1")
    if args.start not in prompts.versions(args.agent):
        parser().error(f"no {args.agent} prompt version {args.start!r}: {', '.join(prompts.versions(args.agent))}")
    run_id = new_run_id()
    args.out = args.out or Path("eval-results") / f"optimize-{datetime.now(UTC):%Y%m%d-%H%M%S}-{run_id}"
    args.out.mkdir(parents=True, exist_ok=True)
    document = asyncio.run(search(Settings(), args, run_id))
    write_json(args.out / "optimize.json", document)
    (args.out / "optimize.md").write_text(markdown(document), encoding="utf-8")
    outcome = document["outcome"]
    print(f"{args.out / 'optimize.md'}: " + (f"new {args.agent} prompt version {outcome['version']} written to "
                                             f"{outcome['written']}" if outcome.get("accepted")
                                             else f"no new version ({outcome.get('reason')})"))
    print(json.dumps({"llm_calls": document["run"]["llm_calls"], "best_train": outcome["best_train"]}),
          file=sys.stderr)
    return 0
