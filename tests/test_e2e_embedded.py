"""End to end, as a user would: the README's run command, nothing configured, the embedded model.

The service is started as a subprocess with the exact command from README.md, plays two rounds of one
session over real HTTP against the real llama.cpp server it starts itself, exports its spans to the
OTLP receiver, and shuts down cleanly on SIGTERM. The model's words are not asserted (135M parameters):
shape, session continuation, the embedded-model notices and telemetry are.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from evals import dataset
from quiz.bank import STARTER
from quiz.checks import ambiguous, check
from tests.browser import new_page, open_page
from tests.conftest import HEX32
from tests.fakes import free_port
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.service import clean_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_command(kind: str) -> str:
    """The command under the README's ``<!-- {kind}-command -->`` marker."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {kind}-command -->\s*```(?:bash|sh)?\n(.+?)\n```", text)
    assert match, f"README.md has no {kind} command block"
    return match.group(1).strip()




@pytest.fixture
def service(otlp: OTLPReceiver, tmp_path: Path):
    port = free_port()
    # A user's plain shell: nothing configured, and not inside the test run's virtual environment.
    env = {k: v for k, v in clean_env().items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(PORT=str(port), OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
               OTEL_METRIC_EXPORT_INTERVAL="1000")
    log = (tmp_path / "service.log").open("w+")
    process = subprocess.Popen(readme_command("run"), shell=True, cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            assert process.poll() is None, f"service exited: {Path(log.name).read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - started < 240, "service did not become healthy in 240 s"
            time.sleep(0.25)
        yield base, process, Path(log.name)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_a_person_plays_in_the_browser_on_the_embedded_model(service, otlp: OTLPReceiver, browser: Browser) -> None:
    """The issue's "done when": the README's run command, the page at /, rounds with the embedded model and as
    the Student, a reload that shows the session, and feedback that reaches the OTLP receiver. The embedded
    model asks from the starter question bank (QUESTION_SOURCE=auto): real questions in the chosen language,
    and a person's right answer is graded correct, a wrong one incorrect, whatever the 135M Teacher says."""
    base, _, _ = service
    bank = {item.question: item for item in dataset.load(STARTER).items}
    with new_page(browser) as page:
        open_page(page, base)
        expect(page.locator("#model")).to_contain_text("Embedded demo model (smollm2-135m-instruct)")
        page.get_by_label("Subject").fill("geography")
        page.get_by_label("Difficulty").select_option("easy")
        page.get_by_role("button", name="Play a round").click()
        rounds = page.locator("#rounds .round")
        expect(rounds.first.locator(".reference-text")).not_to_be_empty(timeout=120_000)
        first = bank[rounds.first.locator(".question").inner_text()]  # a bank item: KeyError otherwise
        assert (first.subject, first.difficulty, first.language) == ("geography", "easy", "en")
        expect(rounds.first.locator(".checked")).to_contain_text(f"From the question bank ({first.id})")

        page.get_by_label("I'll answer").check()
        for answer, verdict in ((None, "✓ Correct"), ("I do not know", "✗ Incorrect")):
            page.get_by_role("button", name="Next round").click()
            expect(page.get_by_label("Your answer")).to_be_focused(timeout=120_000)
            item = bank[rounds.first.locator(".question").inner_text()]
            page.keyboard.type(answer or item.reference)
            page.keyboard.press("Enter")
            expect(rounds.first.locator(".reference-text")).to_have_text(item.reference, timeout=120_000)
            expect(rounds.first.locator(".student .who")).to_have_text("You")
            expect(rounds.first.locator(".verdict")).to_have_text(verdict)

        page.reload()
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(rounds).to_have_count(3)
        expect(page.locator("#score")).to_contain_text("Rounds played: 3")
        expect(rounds.first.locator(".answer-text")).to_have_text("I do not know")
        expect(rounds.first.locator(".verdict")).to_have_text("✗ Incorrect")
        session_id = page.evaluate("localStorage.getItem('question-app.session')")
        rounds.nth(2).get_by_role("button", name="Thumbs up").click()
        expect(rounds.nth(2).get_by_role("status")).to_have_text("Thank you — feedback recorded.")
        if os.environ.get("PAGE_PNG"):  # the README's picture of the page
            page.screenshot(path=os.environ["PAGE_PNG"], full_page=True)

    def feedback() -> list:
        return [e for e in otlp.events("gen_ai.evaluation.result")
                if e.attributes.get("gen_ai.evaluation.name") == "user_feedback"
                and e.attributes.get("gen_ai.conversation.id") == session_id]

    (event,) = otlp.wait_for(feedback, timeout_s=20)
    assert event.attributes["gen_ai.evaluation.score.label"] == "up" and event.attributes["quiz.round"] == 1


def test_two_rounds_of_one_session_on_the_embedded_model(service, otlp: OTLPReceiver) -> None:
    base, process, log = service

    health = httpx.get(f"{base}/health").json()
    assert health["embedded"] is True and health["provider"] == "embedded"
    assert health["model"] == "smollm2-135m-instruct"

    with httpx.Client(base_url=base, timeout=180) as http:
        first = http.post("/ask", json={"subject": "math", "difficulty": "easy", "language": "en"})
        assert first.status_code == 200, first.text
        one = first.json()
        second = http.post("/ask", json={"session_id": one["session_id"]})
        assert second.status_code == 200, second.text
        two = second.json()

    for body in (one, two):
        assert body["model"] == "smollm2-135m-instruct"
        # The starter bank's items (QUESTION_SOURCE=auto on the embedded model), graded by their own check.
        item = {i.id: i for i in dataset.load(STARTER).items}[body["item_id"]]
        assert (body["source"], body["question"], body["reference_answer"]) == ("bank", item.question, item.reference)
        if ambiguous(body["student_answer"], item.question, item.match):  # a rambling answer: the Teacher's
            assert body["checked_by"] is None and body["verdict"] == body["teacher_verdict"]
        else:
            right = check(body["student_answer"], item.reference, item.match, item.accept, item.tolerance)
            assert right is not None and body["verdict"] == ("correct" if right.right else "incorrect")
        assert body["verdict"] in {"correct", "partially_correct", "incorrect"}
        assert all(isinstance(body[k], str) for k in ("question", "student_answer", "feedback", "reference_answer"))
        assert body["usage"]["total_tokens"] > 0
        assert HEX32.match(body["trace_id"])
    assert (one["round"], two["round"]) == (1, 2)
    assert two["session_id"] == one["session_id"]
    assert (two["subject"], two["difficulty"]) == ("math", "easy")

    # The same OpenAI-protocol client and instrumentation as production: real LLM spans reach the receiver.
    # A bank item's round: the Teacher asks nothing; the Reviewer, the Student and the Teacher's grade call it.
    runs = sum(step["runs"] for step in one["steps"] if step["step"] != "ask")
    def chats() -> list:
        return [s for s in otlp.trace(one["trace_id"]) if s.name == "chat smollm2-135m-instruct"]
    found = otlp.wait_for(lambda: len(now := chats()) >= runs and now, timeout_s=20)
    assert len(found) >= runs >= 3 and all(c.attributes["gen_ai.usage.output_tokens"] > 0 for c in found)

    # SIGTERM (as Kubernetes sends it to the pod): a clean shutdown that stops the model server too.
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while process.poll() is None or subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True).stdout:
        assert time.monotonic() < deadline, "processes left 30 s after SIGTERM"
        time.sleep(0.1)
    output = log.read_text()
    assert "EMBEDDED model" in output  # it says so
    assert "Application shutdown complete" in output


def test_an_evaluation_runs_on_the_embedded_model(otlp: OTLPReceiver, tmp_path: Path) -> None:
    """CI's smoke test of ``question-app eval`` on the real path (the embedded model, nothing configured):
    the report's shape and the telemetry, never the 135M model's accuracy."""
    ids = ["math-easy-en-1", "geography-easy-ko-1", "trap-einstein-nobel-en"]  # numeric, contains, judge
    otlp.clear()
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
                    OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_METRIC_EXPORT_INTERVAL="1000")
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "question-app"), "eval", "--ids", *ids, "--out",
                           str(tmp_path), "--concurrency", "2"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "EMBEDDED model" in done.stderr and "strict accuracy" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["items"] == 3 and report["judged"] + len(report["failed"]) == 3
    assert report["run"]["model"] == "smollm2-135m-instruct" and report["run"]["set_version"] >= 1
    assert set(report["accuracy"]) == {"teacher", "strict"} and set(report["by_language"]) == {"en", "ko"}
    assert report["tokens"]["total"] > 0 and "Judges' agreement" in (tmp_path / "report.md").read_text()
    results = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == sorted(ids)

    def roots() -> list:
        return [s for s in otlp.spans() if s.name == "invoke_workflow quiz" and "quiz.eval.item" in s.attributes]

    otlp.wait_for(lambda: len(roots()) == 3, timeout_s=15)
    assert {s.resource["quiz.traffic"] for s in roots()} == {"evaluation"}
    assert {s.attributes["quiz.eval.item"] for s in roots()} == set(ids)
