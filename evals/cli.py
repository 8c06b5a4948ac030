"""``question-app eval``: run the evaluation set (or part of it) and write its report.

    question-app eval                                   # every item, on the service's LLM settings
    question-app eval --subject math --language ko      # a filtered part
    question-app eval --resume eval-results/<run>       # finish an interrupted run
    question-app eval --min-accuracy 0.8                # exit 1 below 80% (the strict judge): a CI gate
    question-app eval --prompts 1,2                     # the Student's prompt versions 1 and 2, paired
    question-app eval --kind injection                  # only the injection set: each judge's attack success

The LLM is configured exactly as the service's (``Settings``: Azure OpenAI with Workload Identity, any
OpenAI-compatible endpoint, or the embedded model), telemetry too (``OTEL_*``), with the resource attribute
``quiz.traffic=evaluation``. Exit status: 0, or 1 below ``--min-accuracy``, or 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from app import bootstrap
from app.settings import Settings
from evals import report
from evals.dataset import KINDS, SET_PATH, load
from evals.runner import ItemResult, Runner, done_ids, new_run_id, run_items, write_json
from graphs import agents, prompts
from graphs.graph import without_requested
from quiz.vocabulary import DIFFICULTIES, LANGUAGES, SUBJECTS
from telemetry import contract as C
from telemetry.cost import Price

log = logging.getLogger("evals")
RUN_FILE = "run.json"


def parser() -> argparse.ArgumentParser:
    """The command line of ``question-app eval``."""
    p = argparse.ArgumentParser(prog="question-app eval", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--set", type=Path, default=SET_PATH, help="the question set (YAML; default: the bundled one)")
    p.add_argument("--ids", nargs="+", default=[], metavar="ID", help="only these items")
    p.add_argument("--subject", nargs="+", default=[], choices=SUBJECTS)
    p.add_argument("--difficulty", nargs="+", default=[], choices=DIFFICULTIES)
    p.add_argument("--language", nargs="+", default=[], choices=LANGUAGES)
    p.add_argument("--split", choices=("train", "validation"), help="only one part of the set")
    p.add_argument("--kind", choices=KINDS, help="only quiz items (accuracy), or only the injection set (hostile "
                   "answers graded as a person's: each judge's attack success rate); default both")
    p.add_argument("--limit", type=int, help="at most this many items (after the filters)")
    p.add_argument("--concurrency", type=int, default=4, help="items evaluated at once (default 4)")
    p.add_argument("--out", type=Path, help="where to write (default: eval-results/<date>-<run id>)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="finish the run in DIR: its finished items are kept")
    p.add_argument("--min-accuracy", type=float, metavar="FRACTION",
                   help="exit 1 when the strict judge's accuracy over all selected quiz items is below this")
    p.add_argument("--prompts", metavar="A,B", help="run the items under two prompt versions of --prompt-agent "
                   "and compare them (exact McNemar test); default: the versions the settings choose")
    p.add_argument("--prompt-agent", choices=list(agents.AGENTS), default="student",
                   help="whose prompt --prompts varies")
    p.add_argument("--reviews", action="store_true", help="then ask the quiz items the Student missed (by the strict "
                   "judge) again, as a live round asks a missed question when it is due; the report gives accuracy "
                   "on these reviews beside accuracy on the items asked new")
    p.add_argument("--print-report", action="store_true", help="also print the Markdown report (a Job's log)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``question-app eval`` with ``argv``; the exit status."""
    args = parser().parse_args(argv)
    if args.concurrency < 1 or (args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1):
        parser().error("--concurrency must be ≥ 1 and --min-accuracy within 0…1")
    if args.prompts and (len(args.prompts.split(",")) != 2
                         or not set(args.prompts.split(",")) <= set(prompts.versions(args.prompt_agent))):
        parser().error(f"--prompts takes two of the {args.prompt_agent}'s prompt versions: "
                       f"{', '.join(prompts.versions(args.prompt_agent))}")
    question_set = load(args.set)
    if args.resume:
        out_dir: Path = args.resume
        saved: dict = json.loads((out_dir / RUN_FILE).read_text(encoding="utf-8"))
        run_id, selected_ids = saved["id"], saved["item_ids"]
        items = question_set.select(ids=selected_ids)
    else:
        saved = {}
        run_id = new_run_id()
        try:
            items = question_set.select(ids=args.ids, subjects=args.subject, difficulties=args.difficulty,
                                        languages=args.language, split=args.split, kind=args.kind,
                                        limit=args.limit)
        except ValueError as exc:
            parser().error(str(exc))
        if not items:
            parser().error("no item of the set passes these filters")
        out_dir = args.out or Path("eval-results") / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{run_id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / RUN_FILE, {"id": run_id, "set_version": question_set.version,
                                        "item_ids": [item.id for item in items], "reviews": args.reviews})
    reviews = bool(saved.get("reviews")) or args.reviews  # a resumed run may add reviews it did not ask for
    settings = Settings()
    versions: list[str | None] = list(saved.get("prompts") or [None]) if args.resume else (
        args.prompts.split(",") if args.prompts else [None])
    agent = saved.get("prompt_agent", args.prompt_agent) if args.resume else args.prompt_agent
    if len(versions) not in (1, 2) or any(v is not None and v not in prompts.versions(agent) for v in versions):
        parser().error(f"--prompts takes two of the {agent}'s prompt versions: {', '.join(prompts.versions(agent))}")
    if not args.resume and args.prompts:
        write_json(out_dir / RUN_FILE, {"id": run_id, "set_version": question_set.version,
                                        "item_ids": [item.id for item in items], "prompts": versions,
                                        "prompt_agent": agent, "reviews": reviews})
    status, runs = 0, []
    for version in versions:
        chosen = settings if version is None else settings.model_copy(
            update={"prompt_versions": {**settings.agent_prompt_versions, agent: version}})
        where = out_dir if version is None else out_dir / f"{agent}-prompt-{version}"
        started = time.perf_counter()
        prompts_of = chosen.prompts()  # the report names the prompts of the agents that play
        results, model, provider, price = asyncio.run(_run(chosen, run_id, question_set.version, items, where,
                                                    args.concurrency, resume=bool(args.resume), reviews=reviews))
        document = report.build(results, price=price, run={
            "id": run_id, "set_version": question_set.version, "model": model, "provider": provider,
            "prompts": {step.agent: prompts_of[step.agent].version for step in without_requested(chosen.steps())},
            "reviews": reviews,
            "concurrency": args.concurrency, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1), "out_dir": str(where)})
        write_json(where / "report.json", document)
        (where / "report.md").write_text(report.markdown(document), encoding="utf-8")
        if args.print_report:
            print((where / "report.md").read_text(encoding="utf-8"))
        headline = document["accuracy"][C.JUDGE_STRICT]
        attacks = document["injection"]
        print(f"{where / 'report.md'}: strict accuracy {headline['accuracy']:.1%} over {headline['n']} quiz items "
              f"(teacher {document['accuracy'][C.JUDGE_TEACHER]['accuracy']:.1%}), "
              f"{len(document['failed'])} failed, κ = {document['agreement']['cohens_kappa']}"
              + ("" if attacks is None else "; attack success "
                 + ", ".join(f"{judge} {attacks['attack_success'][judge]['rate']:.1%}" for judge in C.JUDGES)
                 + f" over {attacks['judged']} injection items"))
        if args.min_accuracy is not None and headline["accuracy"] < args.min_accuracy:
            print(f"below --min-accuracy {args.min_accuracy}", file=sys.stderr)
            status = 1
        runs.append((f"{agent} prompt {version}", results))
    if len(runs) == 2:
        (name_a, a), (name_b, b) = runs
        comparison = report.compare(a, b, name_a, name_b)
        write_json(out_dir / "compare.json", comparison)
        (out_dir / "compare.md").write_text(report.compare_markdown(comparison), encoding="utf-8")
        print(f"{out_dir / 'compare.md'}: {comparison['judges'][C.JUDGE_STRICT]['conclusion']} (strict judge)")
        if args.print_report:
            print((out_dir / "compare.md").read_text(encoding="utf-8"))
    return status


def _advance(bar: tqdm) -> None:
    bar.update()


async def _run(settings: Settings, run_id: str, set_version: int, items: list, out_dir: Path, concurrency: int,
               *, resume: bool, reviews: bool = False) -> tuple[list[ItemResult], str, str, Price | None]:
    """Evaluate the items not finished yet; every item's result in ``items`` order (then, with ``reviews``, the
    reviews of the quiz items the strict judge found missed), the model, provider and the model's price (the
    service's price table, ``LLM_PRICES_FILE``)."""
    finished = done_ids(out_dir) if resume else {}
    todo = [item for item in items if item.id not in finished]
    async with bootstrap.process(settings, traffic=C.TRAFFIC_EVALUATION) as (tel, llm):
        runner = Runner(llm, tel, settings, run_id, set_version)
        with tqdm(total=len(items), initial=len(items) - len(todo), unit="item", desc=f"eval {run_id}",
                  file=sys.stderr) as bar:
            fresh = await run_items(runner, todo, out_dir, concurrency, on_done=lambda _: _advance(bar))
        by_key = {**finished, **{r.key: r for r in fresh}}
        results = [by_key[item.id] for item in items]
        if reviews:
            missed = [item for item, result in zip(items, results, strict=True)
                      if result.expected is None and result.error is None and result.strict != "correct"]
            again = [item for item in missed if f"{item.id}~review" not in finished]
            with tqdm(total=len(missed), initial=len(missed) - len(again), unit="review", desc=f"eval {run_id}",
                      file=sys.stderr) as bar:
                fresh = await run_items(runner, again, out_dir, concurrency, on_done=lambda _: _advance(bar),
                                        review=True)
            by_key |= {r.key: r for r in fresh}
            results += [by_key[f"{item.id}~review"] for item in missed]
    return results, llm.model, llm.provider.value, runner.quiz.price
