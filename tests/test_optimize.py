"""``question-app optimize`` end to end, as a process against the fake OpenAI-protocol server: the scripted
model answers right only under some system prompts, and proposes scripted rewrites — so the search must keep
a better candidate (and write it as a new version), reject a worse one, reject one that is better on train
but not on validation, drop a rewrite that loses a placeholder, and stay within its budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evals.dataset import load
from graphs.prompts import StudentPrompt
from telemetry import contract as C
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.test_eval import eval_env

ITEMS = {i.question: i for i in load().items}
TRAIN = [i.id for i in load().select(split="train", limit=4)]


def asked(prompt: str):
    return next(i for q, i in ITEMS.items() if q in prompt)


def script(fake: FakeOpenAI, rewrite: str, right_when: Any) -> None:
    """The Student answers with the reference when ``right_when(prompt, item)``; the Rewrite tool proposes
    ``rewrite``; the Teacher and the judge grade by the reference."""
    def student(prompt: str) -> dict[str, Any]:
        item = asked(prompt)
        return {"answer": item.reference if right_when(prompt, item) else "no idea"}

    def grade(prompt: str) -> dict[str, Any]:
        item = asked(prompt)
        return {"verdict": "correct" if f"<answer>{item.reference}</answer>" in prompt else "incorrect",
                "feedback": "ok"}

    fake.respond("StudentAnswer", student)
    fake.respond("Grade", grade)
    fake.respond("Rewrite", lambda _: {"critique": "It never asks for the final answer.", "system": rewrite})


def chat_requests(fake: FakeOpenAI) -> int:
    """The chat completions the fake LLM has received: the calls really made, retries and all."""
    return sum(r.path.endswith("/chat/completions") for r in fake.requests)


def optimize(tmp_path: Path, fake: FakeOpenAI, *args: str, otlp: OTLPReceiver | None = None) -> dict[str, Any]:
    done = subprocess.run([str(Path(sys.executable).parent / "question-app"), "optimize", "--rounds", "1",
                           "--beam", "1", "--expand", "1", "--train-limit", "4", "--validation-limit", "4",
                           "--out", str(tmp_path / "out"), "--write-to", str(tmp_path / "prompts"), *args],
                          env=eval_env(fake, otlp), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "out" / "optimize.json").read_text())


GOOD = "GOOD-RULE: state the final answer first. {persona} Answer in {language}."


def test_a_better_prompt_is_kept_and_written_as_the_next_version(fake_llm: FakeOpenAI, otlp: OTLPReceiver,
                                                                tmp_path: Path) -> None:
    script(fake_llm, GOOD, lambda prompt, item: "GOOD-RULE" in prompt)
    otlp.clear()
    document = optimize(tmp_path, fake_llm, otlp=otlp)
    outcome = document["outcome"]
    assert (outcome["start_train"], outcome["best_train"]) == (0.0, 1.0) and outcome["accepted"] is True
    validation = outcome["validation"]
    assert (validation["only_a"], validation["only_b"], validation["metric"]) == (0, 4, "the strict judge's accuracy")
    written = Path(outcome["written"])
    assert written == tmp_path / "prompts" / "student" / "3.yaml"  # after the bundled 1 and 2
    text = written.read_text()
    assert text.startswith("# Written by question-app optimize") and "never asks for the final answer" in text
    prompt = StudentPrompt.model_validate(yaml.safe_load(text))
    assert (prompt.version, prompt.system) == ("3", GOOD)
    assert [c["id"] for c in document["candidates"]] == ["v1", "r1.1-v1"]
    # The search's own count is the calls the LLM received, within the budget.
    assert chat_requests(fake_llm) == document["run"]["llm_calls"] <= document["run"]["budget"]
    assert "Written:" in (tmp_path / "out" / "optimize.md").read_text()
    # Traced: the search, its round, each candidate's score as an evaluation.
    names = otlp.wait_for(lambda: {s.name for s in otlp.spans()} >= {C.SPAN_OPTIMIZE, C.SPAN_OPTIMIZE_ROUND,
                                                                    C.SPAN_OPTIMIZE_CANDIDATE} and otlp.spans())
    (root,) = [s for s in names if s.name == C.SPAN_OPTIMIZE]
    candidates = [s for s in names if s.name == C.SPAN_OPTIMIZE_CANDIDATE]
    assert {s.trace_id for s in candidates} == {root.trace_id}
    assert sorted((s.attributes[C.ATTR_OPTIMIZE_CANDIDATE], s.attributes[C.ATTR_OPTIMIZE_SPLIT],
                   s.attributes[C.ATTR_OPTIMIZE_SCORE]) for s in candidates) == [
        ("r1.1-v1", "train", 1.0), ("r1.1-v1", "validation", 1.0), ("v1", "train", 0.0), ("v1", "validation", 0.0)]
    scores = otlp.wait_for(lambda: [e for e in otlp.events(C.EVENT_EVALUATION_RESULT)
                                    if e.attributes.get("gen_ai.evaluation.name") == C.EVALUATION_PROMPT_ACCURACY])
    assert len(scores) == 4


def test_a_worse_prompt_is_rejected_and_nothing_is_written(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    script(fake_llm, "BAD-RULE: {persona} Answer in {language}.", lambda prompt, item: "BAD-RULE" not in prompt)
    outcome = optimize(tmp_path, fake_llm)["outcome"]
    assert (outcome["start_train"], outcome["best_train"], outcome["accepted"]) == (1.0, 1.0, False)
    assert outcome["best"] == "v1" and "no rewrite scored higher" in outcome["reason"]
    assert not (tmp_path / "prompts").exists()


def test_a_prompt_better_on_train_only_is_rejected_on_validation(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    script(fake_llm, GOOD, lambda prompt, item: "GOOD-RULE" in prompt and item.id in TRAIN)
    outcome = optimize(tmp_path, fake_llm)["outcome"]
    assert outcome["best_train"] == 1.0 and outcome["accepted"] is False
    assert outcome["reason"].startswith("not better on validation") and not (tmp_path / "prompts").exists()


@pytest.mark.parametrize("rewrite", ["GOOD-RULE without the persona, in {language}.",
                                     "GOOD-RULE {persona} in {language}. }",  # not a template (seen on SmolLM2)
                                     "GOOD-RULE {persona} in {language} {answer}."])
def test_a_rewrite_that_is_not_the_same_template_is_dropped(fake_llm: FakeOpenAI, tmp_path: Path,
                                                             rewrite: str) -> None:
    script(fake_llm, rewrite, lambda prompt, item: "GOOD-RULE" in prompt)
    document = optimize(tmp_path, fake_llm)
    assert [c["id"] for c in document["candidates"]] == ["v1"] and document["outcome"]["accepted"] is False
    (dropped,) = document["dropped"]
    assert dropped["parent"] == "v1" and dropped["system"] == rewrite
    assert "Rewrites dropped before scoring: 1" in (tmp_path / "out" / "optimize.md").read_text()


def test_the_budget_bounds_the_search(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    script(fake_llm, GOOD, lambda prompt, item: "GOOD-RULE" in prompt)
    document = optimize(tmp_path, fake_llm, "--budget", "10")
    assert document["run"]["llm_calls"] == 0 and document["outcome"]["accepted"] is False
    assert "budget" in document["stopped"] and fake_llm.requests == []
    # Three calls per item (review, answer, grade), 4 train and 4 validation items: scoring the start on train
    # is 12, each rewrite 1 + 12, and the final validation of both 24 is kept in reserve: room for one rewrite.
    document = optimize(tmp_path, fake_llm, "--budget", "55", "--expand", "3")
    assert chat_requests(fake_llm) <= 55 and len(document["candidates"]) == 2  # what the LLM received
    assert document["run"]["llm_calls"] == chat_requests(fake_llm)  # and what the search reports
    assert document["stopped"] == "budget reached in round 1"


def test_the_teachers_prompt_is_optimised_for_agreement_with_the_strict_judge(fake_llm: FakeOpenAI,
                                                                             tmp_path: Path) -> None:
    """The Teacher grades: under its rewritten prompt it grades like the strict judge; under the start it
    passes every answer. Its score is agreement with the strict judge, not the Student's accuracy."""
    def student(prompt: str) -> dict[str, Any]:
        item = asked(prompt)
        return {"answer": item.reference if item.id in TRAIN[:2] else "no idea"}

    def grade(prompt: str) -> dict[str, Any]:
        item = asked(prompt)
        honest = "independent examiner" in prompt or "GOOD-RULE" in prompt
        right = f"<answer>{item.reference}</answer>" in prompt
        return {"verdict": "correct" if right or not honest else "incorrect", "feedback": "ok"}

    fake_llm.respond("StudentAnswer", student)
    fake_llm.respond("Grade", grade)
    fake_llm.respond("Rewrite", lambda _: {"critique": "It passes wrong answers.",
                                           "system": "GOOD-RULE: grade strictly. Write in {language}."})
    document = optimize(tmp_path, fake_llm, "--agent", "teacher")
    outcome = document["outcome"]
    assert (outcome["start_train"], outcome["best_train"], outcome["accepted"]) == (0.5, 1.0, True)
    assert outcome["validation"]["metric"] == "agreement with the strict judge"
    assert Path(outcome["written"]) == tmp_path / "prompts" / "teacher" / "3.yaml"  # after the bundled 1 and 2


@pytest.mark.parametrize("template", ["{persona:>999999999} answer", "{persona!r}", "{persona.__class__}",
                                      "{personas[0]}", "{} positional", "a stray { brace"])
def test_a_rewrite_that_is_not_a_plain_template_is_refused(template: str) -> None:
    """An optimiser rewrite is model output: a format spec (``{persona:>999999999}`` allocates a gigabyte each
    time the prompt is used), a conversion, an attribute or index, a positional field or a stray brace makes it
    not a template, and the search drops it (``Search.propose``: ``ValueError`` → "not a template")."""
    from evals.optimize import placeholders

    with pytest.raises(ValueError):
        placeholders(template)
    assert placeholders("You are {persona}; answer in {language}. {{literal}}") == {"persona", "language"}


@pytest.mark.parametrize("version", ["../teacher/1", "1/../../x", ".hidden", "", "a" * 65])
def test_a_prompt_version_is_a_name_never_a_path(version: str) -> None:
    """``PROMPT_VERSIONS`` comes from the environment and is joined into a path under graphs/prompt_files."""
    from graphs.prompts import load

    with pytest.raises(ValueError, match="never a path"):
        load("student", version, StudentPrompt)
    assert load("student", "1", StudentPrompt).version == "1"
