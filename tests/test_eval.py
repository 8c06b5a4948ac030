"""``question-app eval``: the question set and its schema, the statistics (against SciPy and published worked
examples), the strict judge's checks, and the command end to end — its real entry point as a process, the
fake OpenAI-protocol server scripted to answer some items right and some wrong — proving the report's
arithmetic, the exit status, a failed item, resume after a kill, and the telemetry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from scipy.stats import binomtest

from evals.dataset import SCHEMA_PATH, SET_PATH, QuestionSet, load
from evals.judges import contains, mechanical, numbers
from evals.stats import cohens_kappa, mcnemar_exact, wilson
from quiz.vocabulary import DIFFICULTIES, LANGUAGES, SUBJECTS
from telemetry import contract as C
from telemetry.cost import load_prices
from tests.conftest import CANARY_KEY
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.service import clean_env

# --- the set -------------------------------------------------------------------------------------------


def test_the_set_covers_every_subject_difficulty_and_language_with_traps_and_two_splits() -> None:
    question_set = load()
    items = question_set.items
    assert len(items) >= 90 and question_set.version >= 1
    cells = Counter((i.subject, i.difficulty, i.language) for i in items if i.trap is None)
    assert set(cells) == {(s, d, lang) for s in SUBJECTS for d in DIFFICULTIES for lang in LANGUAGES}
    assert {i.trap for i in items if i.trap} == {"plausible_wrong", "false_premise", "unit"}
    assert all(sum(1 for i in items if i.trap == kind and i.language == "ko") for kind in ("false_premise", "unit"))
    splits = Counter(i.split for i in items)
    assert splits["train"] >= 40 and splits["validation"] >= 40


def test_the_committed_schema_is_the_loaders_and_the_file_passes_it() -> None:
    committed = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert committed == QuestionSet.model_json_schema(), "regenerate evals/questions.schema.json"
    jsonschema.validate(yaml.safe_load(SET_PATH.read_text(encoding="utf-8")), committed)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["items"].append(dict(d["items"][0])), "duplicate id"),
    (lambda d: d["items"][0].update(subject="astrology"), "subject"),
    (lambda d: d["items"][0].update(reference="fifty-six"), "must be a number"),
    (lambda d: d["items"][0].update(surprise=True), "surprise"),
])
def test_a_broken_item_is_refused_naming_it(change, message: str, tmp_path: Path) -> None:
    data = yaml.safe_load(SET_PATH.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load(path)


# --- statistics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (45, 98), (1, 1), (57, 60)])
def test_wilson_intervals_are_scipys(k: int, n: int) -> None:
    ours = wilson(k, n)
    theirs = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-9)


def test_cohens_kappa_matches_the_worked_example() -> None:
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15 → p_o = 0.7, p_e = 0.5, κ = 0.4
    # (Wikipedia, "Cohen's kappa", worked example).
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(["x"] * 4, ["x"] * 4) is None and cohens_kappa([], []) is None


@pytest.mark.parametrize(("only_a", "only_b", "both"), [(0, 0, 5), (1, 6, 10), (3, 12, 40), (9, 9, 0), (0, 7, 3)])
def test_exact_mcnemar_is_a_binomial_test_of_the_discordant_pairs(only_a: int, only_b: int, both: int) -> None:
    a = [True] * only_a + [False] * only_b + [True] * both
    b = [False] * only_a + [True] * only_b + [True] * both
    result = mcnemar_exact(a, b)
    expected = 1.0 if only_a + only_b == 0 else binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert (result.only_a, result.only_b) == (only_a, only_b)
    assert result.p_value == pytest.approx(expected)
    assert result.difference == pytest.approx((only_b - only_a) / len(a))


# --- the strict judge's mechanical checks --------------------------------------------------------------


def item(**fields: Any):
    from evals.dataset import Item

    base = {"id": "x-1", "subject": "math", "difficulty": "easy", "language": "en", "question": "q?",
            "reference": "56", "match": "numeric", "split": "train"}
    return Item.model_validate({**base, **fields})


def right(checked_item: Any, answer: str) -> bool:
    check = mechanical(checked_item, answer)
    assert check is not None
    return check.right


def test_numeric_checks_find_the_number_within_tolerance() -> None:
    assert numbers("1,024 and 5,050 or 3.5") == [1024, 5050, 3.5]
    assert right(item(), "7 × 8 = 56.") and not right(item(), "It is 54.")
    speed = item(reference="16.67", tolerance=0.05)
    assert right(speed, "about 16.7 m/s") and not right(speed, "60 km/h")
    assert right(item(reference="300000", accept=["30만"]), "초속 약 30만 km")


def test_contains_checks_whole_words_in_english_and_substrings_in_korean() -> None:
    assert contains("The symbol is Na.", "Na") and not contains("banana", "na")
    assert contains("서울입니다.", "서울") and contains("It's O(log n) time", "O(log n)")
    assert not right(item(match="contains", reference="Canberra"), "Sydney")
    assert mechanical(item(match="judge", reference="x"), "anything") is None


# --- the command, end to end ----------------------------------------------------------------------------

RIGHT = {"math-easy-en-1", "math-medium-en-1", "math-hard-en-1", "science-easy-en-1", "science-medium-en-1",
         "history-easy-en-1"}  # the Student answers these right
LENIENT = {"history-medium-en-1"}  # answered wrong, but the Teacher grades it correct (a judge disagreement)
IDS = ["math-easy-en-1", "math-medium-en-1", "math-hard-en-1", "math-easy-ko-1", "science-easy-en-1",
       "science-medium-en-1", "science-hard-en-1", "history-easy-en-1", "history-medium-en-1",
       "trap-einstein-nobel-en"]


def script(fake: FakeOpenAI) -> None:
    """The Student answers ``RIGHT`` items with the reference, others wrongly; the Teacher grades by that
    (and leniently for ``LENIENT``); the independent judge says correct only for the right answer."""
    items = {i.question: i for i in load().items}

    def asked(prompt: str):
        return next(i for q, i in items.items() if q in prompt)

    def student(prompt: str) -> dict[str, Any]:
        found = asked(prompt)
        return {"answer": found.reference if found.id in RIGHT else "I am not sure, maybe 7 or Paris."}

    def grade(prompt: str) -> dict[str, Any]:
        found = asked(prompt)
        right = found.id in RIGHT or ("independent examiner" not in prompt and found.id in LENIENT)
        return {"verdict": "correct" if right else "incorrect", "feedback": "Graded by the script."}

    fake.respond("StudentAnswer", student)
    fake.respond("Grade", grade)


def eval_env(fake: FakeOpenAI, otlp: OTLPReceiver | None = None) -> dict[str, str]:
    env = clean_env(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=CANARY_KEY, OPENAI_MODEL="gpt-5.2-chat",
                    LLM_MAX_RETRIES="0", LLM_TIMEOUT_S="5", EVAL_CWD=tempfile.mkdtemp(prefix="eval-cwd-"))
    if otlp is None:
        env["OTEL_SDK_DISABLED"] = "true"
    else:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                   OTEL_BLRP_SCHEDULE_DELAY="100", OTEL_METRIC_EXPORT_INTERVAL="300")
    return env


def question_app(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "question-app"), "eval", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=Path(env["EVAL_CWD"]))


def test_the_report_says_what_the_judges_found(fake_llm: FakeOpenAI, otlp: OTLPReceiver, tmp_path: Path) -> None:
    script(fake_llm)
    otlp.clear()
    done = question_app("--ids", *IDS, "--out", str(tmp_path), "--concurrency", "3", "--min-accuracy", "0.7",
                        env=eval_env(fake_llm, otlp))
    assert done.returncode == 1, done.stderr  # 6 of 10 right: below the gate
    report = json.loads((tmp_path / "report.json").read_text())
    strict, teacher = report["accuracy"]["strict"], report["accuracy"]["teacher"]
    # The strict judge: the 6 right answers; the Teacher also passes the lenient one.
    assert (strict["correct"], strict["n"], teacher["correct"]) == (6, 10, 7)
    expected = binomtest(6, 10).proportion_ci(method="wilson")
    assert strict["ci95"] == [round(expected.low, 4), round(expected.high, 4)]
    assert report["by_language"]["ko"]["strict"]["correct"] == 0
    math_ci = binomtest(3, 4).proportion_ci(method="wilson")
    assert report["by_subject"]["math"]["strict"] == {"correct": 3, "n": 4, "accuracy": 0.75,
                                                      "ci95": [round(math_ci.low, 4), round(math_ci.high, 4)]}
    # κ over correct / not correct: 9 agreements of 10; teacher 7 right, strict 6 right.
    p_o, p_e = 0.9, 0.7 * 0.6 + 0.3 * 0.4
    assert report["agreement"]["cohens_kappa"] == pytest.approx(round((p_o - p_e) / (1 - p_e), 4))
    assert [d["id"] for d in report["agreement"]["disagreements"]] == ["history-medium-en-1"]
    tokens = report["tokens"]
    price = load_prices().price("gpt-5.2-chat")  # the shipped table's (no cached tokens here)
    assert price is not None and tokens["input"] > 0 and report["cost_usd"] == pytest.approx(
        (tokens["input"] * price.input + tokens["output"] * price.output) / 1e6, abs=1e-6)
    markdown = (tmp_path / "report.md").read_text()
    assert "| strict | 60.0% (6/10; 95% CI" in markdown and "history-medium-en-1" in markdown
    # The judge prompt ran for the one `judge` item only; the Teacher never wrote a question.
    judged = [r for r in fake_llm.requests_for("Grade") if "independent examiner" in r.prompt_text]
    assert len(judged) == 1 and "Einstein" in judged[0].prompt_text
    assert fake_llm.requests_for("Question") == []

    # Telemetry: one trace per item, both verdicts as evaluation events, counts by judge, apart from live.
    def roots() -> list:
        return [s for s in otlp.spans() if s.name == C.SPAN_ROUND and C.ATTR_EVAL_ITEM in s.attributes]

    otlp.wait_for(lambda: len(roots()) == 10)
    assert len({s.trace_id for s in roots()}) == 10
    assert all(s.resource[C.RESOURCE_TRAFFIC] == C.TRAFFIC_EVALUATION for s in roots())
    events = otlp.wait_for(lambda: len(otlp.events(C.EVENT_EVALUATION_RESULT)) == 20
                           and otlp.events(C.EVENT_EVALUATION_RESULT))
    assert Counter(e.attributes[C.ATTR_EVAL_JUDGE] for e in events) == {"teacher": 10, "strict": 10}

    def counted() -> dict[tuple[str, str], float]:
        latest: dict[tuple, float] = {}  # cumulative sums: the last value of each series
        for point in otlp.metric_points():
            if point.name == C.METRIC_EVAL_ITEMS:
                latest[tuple(sorted(point.attributes.items()))] = point.value
        totals: Counter[tuple[str, str]] = Counter()
        for series, value in latest.items():
            labels = dict(series)
            totals[(labels[C.ATTR_EVAL_JUDGE], labels[C.ATTR_VERDICT])] += int(value)
        return dict(totals)

    otlp.wait_for(lambda: counted() == {("teacher", "correct"): 7, ("teacher", "incorrect"): 3,
                                        ("strict", "correct"): 6, ("strict", "incorrect"): 4})

    passing = question_app("--ids", *IDS[:3], "--out", str(tmp_path / "gate"), "--min-accuracy", "0.9",
                           env=eval_env(fake_llm))
    assert passing.returncode == 0, passing.stderr


def test_a_failed_item_is_reported_and_counted_as_not_correct(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    script(fake_llm)
    fake_llm.fail_next(Fault("status", 500))  # the first item's Student call (concurrency 1, no retries)
    done = question_app("--ids", *IDS[:3], "--out", str(tmp_path), "--concurrency", "1", env=eval_env(fake_llm))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failed"] == [{"id": "math-easy-en-1", "error": "upstream", "detail": "The language model failed"}]
    assert (report["items"], report["judged"], report["accuracy"]["strict"]["correct"]) == (3, 2, 2)
    assert "math-easy-en-1: upstream" in (tmp_path / "report.md").read_text()


def test_an_interrupted_run_resumes_where_it_stopped(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    script(fake_llm)
    fake_llm.latency_s = 0.15
    process = subprocess.Popen([str(Path(sys.executable).parent / "question-app"), "eval", "--ids", *IDS,
                                "--out", str(tmp_path), "--concurrency", "1"], env=eval_env(fake_llm),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "items.jsonl"
    deadline = time.monotonic() + 60
    while not (results.exists() and len(results.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {json.loads(line)["id"] for line in results.read_text().splitlines() if line.endswith("}")}
    assert 3 <= len(before) < len(IDS)
    fake_llm.latency_s = 0.0
    asked_before = len(fake_llm.requests_for("StudentAnswer"))
    done = question_app("--resume", str(tmp_path), env=eval_env(fake_llm))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["items"] == len(IDS) and report["accuracy"]["strict"]["correct"] == 6
    # Only the unfinished items were played again.
    again = [r.prompt_text for r in fake_llm.requests_for("StudentAnswer")[asked_before:]]
    assert len(again) <= len(IDS) - len(before) + 1  # the one in flight at the kill may be played twice
    assert not any(q in p for p in again for q in (i.question for i in load().items if i.id in before))


def test_bad_arguments_exit_2_with_a_message(fake_llm: FakeOpenAI) -> None:
    done = question_app("--ids", "no-such-item", env=eval_env(fake_llm))
    assert done.returncode == 2 and "no-such-item" in done.stderr
    assert question_app("--min-accuracy", "7", env=eval_env(fake_llm)).returncode == 2


# --- prompt versions ------------------------------------------------------------------------------------

V2_ALSO_RIGHT = {"math-easy-ko-1", "science-hard-en-1", "history-medium-en-1", "trap-einstein-nobel-en"}
V2_NOW_WRONG = {"math-hard-en-1"}


def script_versions(fake: FakeOpenAI) -> None:
    """Student prompt 2 (its system prompt asks for the final answer first) gets four more items right and
    one fewer; the Teacher and the judge grade by whether the answer is the reference."""
    items = {i.question: i for i in load().items}

    def asked(prompt: str):
        return next(i for q, i in items.items() if q in prompt)

    def student(prompt: str) -> dict[str, Any]:
        found = asked(prompt)
        v2 = "Start with the final answer" in prompt
        right = (found.id in RIGHT and not (v2 and found.id in V2_NOW_WRONG)) or (v2 and found.id in V2_ALSO_RIGHT)
        return {"answer": found.reference if right else "no idea"}

    def grade(prompt: str) -> dict[str, Any]:
        found = asked(prompt)
        right = f"<answer>{found.reference}</answer>" in prompt
        return {"verdict": "correct" if right else "incorrect", "feedback": "ok"}

    fake.respond("StudentAnswer", student)
    fake.respond("Grade", grade)


def test_two_prompt_versions_are_compared_on_the_same_items(fake_llm: FakeOpenAI, otlp: OTLPReceiver,
                                                            tmp_path: Path) -> None:
    script_versions(fake_llm)
    otlp.clear()
    done = question_app("--ids", *IDS, "--prompts", "1,2", "--out", str(tmp_path), env=eval_env(fake_llm, otlp))
    assert done.returncode == 0, done.stderr
    comparison = json.loads((tmp_path / "compare.json").read_text())
    strict = comparison["judges"]["strict"]
    a, b = "student prompt 1", "student prompt 2"
    assert (strict[a]["correct"], strict[b]["correct"]) == (6, 9)
    assert (strict["only_a"], strict["only_b"]) == (1, 4) and strict["difference"] == pytest.approx(0.3)
    assert strict["p_value"] == pytest.approx(binomtest(1, 5, 0.5).pvalue, abs=1e-6)  # 0.375
    assert strict["conclusion"].startswith("student prompt 2 is better by 30.0%") and "within chance" in \
        strict["conclusion"]
    assert {c["id"] for c in strict["changed"]} == V2_ALSO_RIGHT | V2_NOW_WRONG
    for version, right_count in (("1", 6), ("2", 9)):
        one = json.loads((tmp_path / f"student-prompt-{version}" / "report.json").read_text())
        assert one["run"]["prompts"] == {"teacher": "2", "reviewer": "1", "student": version}
        assert one["accuracy"]["strict"]["correct"] == right_count
    assert "| strict | 60.0% (6/10" in (tmp_path / "compare.md").read_text()
    # The agent spans say which prompt produced them.
    students = otlp.wait_for(lambda: len([s for s in otlp.spans() if s.name == "invoke_agent student"]) == 20
                             and [s for s in otlp.spans() if s.name == "invoke_agent student"])
    assert Counter(s.attributes["quiz.prompt.version"] for s in students) == {"1": 10, "2": 10}
    assert {s.attributes["gen_ai.prompt.name"] for s in students} == {"student"}


def test_a_prompt_version_that_does_not_exist_is_refused(fake_llm: FakeOpenAI, make_client) -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match="no student prompt version '9'; there are: 1, 2"):
        Settings(student_prompt_version="9")
    assert question_app("--ids", "math-easy-en-1", "--prompts", "1,9", env=eval_env(fake_llm)).returncode == 2


def test_live_agent_spans_name_their_prompt(client, telemetry_env: OTLPReceiver) -> None:
    trace_id = client.post("/ask", json={}).json()["trace_id"]
    agents = telemetry_env.wait_for(lambda: [s for s in telemetry_env.trace(trace_id)  # every step's span
                                             if s.name.startswith("invoke_agent ") and s.name != "invoke_agent quiz"]
                                    if len([s for s in telemetry_env.trace(trace_id)
                                            if s.name.startswith("invoke_agent ")]) >= 5 else None)
    assert {(s.attributes["gen_ai.prompt.name"], s.attributes["quiz.prompt.version"]) for s in agents} == {
        ("teacher", "2"), ("reviewer", "1"), ("student", "1")}


def test_model_text_in_the_markdown_report_is_text_never_markup() -> None:
    from evals.report import build, markdown
    from evals.runner import ItemResult

    hostile = "<img src=x onerror=alert(1)> `code` | cell"
    result = ItemResult(id="x-1", subject="math", difficulty="easy", language="en", split="train", question="q",
                        reference="56", answer=hostile, teacher="correct", strict="incorrect", strict_by="numeric")
    text = markdown(build([result], price=None, run={"id": "r", "set_version": 1, "model": "m",
                                                      "provider": "p", "concurrency": 1, "seconds": 1.0}))
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt; \\`code\\` \\| cell" in text


def test_missed_items_are_asked_again_as_reviews_and_the_report_sets_them_apart(fake_llm: FakeOpenAI,
                                                                                tmp_path: Path) -> None:
    """`--reviews`: the quiz items the Student missed (by the strict judge) are asked again, as a live round asks a
    missed question when it is due; accuracy stays over the items asked new, and `by_kind` puts the reviews
    beside it. A resumed run asks no review twice."""
    items = {i.question: i for i in load().items}
    seen: Counter[str] = Counter()
    missed_first, missed_always = "math-medium-en-1", "math-hard-en-1"

    def student(prompt: str) -> dict[str, Any]:
        found = next(i for q, i in items.items() if q in prompt)
        seen[found.id] += 1
        wrong = found.id == missed_always or (found.id == missed_first and seen[found.id] == 1)
        return {"answer": "I do not know" if wrong else found.reference}

    fake_llm.respond("StudentAnswer", student)
    fake_llm.script("Grade", verdict="correct", feedback="Graded by the script.")
    ids = ["math-easy-en-1", missed_first, missed_always, "science-easy-en-1"]
    done = question_app("--ids", *ids, "--reviews", "--out", str(tmp_path), env=eval_env(fake_llm))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["quiz_items"], report["items"]) == (4, 6)
    assert (report["accuracy"]["strict"]["correct"], report["accuracy"]["strict"]["n"]) == (2, 4)  # new items
    kinds = report["by_kind"]
    assert (kinds["new"]["strict"]["correct"], kinds["new"]["strict"]["n"]) == (2, 4)
    assert (kinds["review"]["strict"]["correct"], kinds["review"]["strict"]["n"]) == (1, 2)
    assert report["run"]["reviews"] is True and seen == Counter({**dict.fromkeys(ids, 1), missed_first: 2,
                                                                 missed_always: 2})
    markdown = (tmp_path / "report.md").read_text()
    assert "| new | 4 |" in markdown and "| review | 2 |" in markdown
    lines = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert sorted((line["id"], line["review"]) for line in lines if line["review"]) == [
        (missed_always, True), (missed_first, True)]

    again = question_app("--resume", str(tmp_path), env=eval_env(fake_llm))  # everything done: nothing asked
    assert again.returncode == 0, again.stderr
    assert sum(seen.values()) == 6
    assert json.loads((tmp_path / "report.json").read_text())["by_kind"] == kinds
