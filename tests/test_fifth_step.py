"""The agent table is the one place a step is added: a test-only fifth step (``tests/fifth_step.py``, the
Teacher's tip between the review and the answer) registered in ``graphs.agents.STEPS`` and nowhere else
flows through the JSON result, the SSE stream, AG-UI (the protocol's own ``@ag-ui/client``), the page in
Chromium and ``question-app eval``, each a real ``question-app`` process started with the step registered."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import new_page, open_page
from tests.conftest import CANARY_KEY
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.service import ROOT, clean_env, start_service, stop
from tests.test_ag_ui_client import STEP, install_client, play, types
from tests.test_api import parse_sse
from tests.test_eval import IDS, eval_env, script

TIP = "Think of what a plant takes from the air."
LAUNCHER = [sys.executable, "-m", "tests.fifth_step"]  # registers the step, then runs question-app


@pytest.fixture(scope="module")
def service(llm_server: FakeOpenAI, otlp: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    install_client()
    env = clean_env(OPENAI_BASE_URL=llm_server.base_url, OPENAI_API_KEY=CANARY_KEY, OPENAI_MODEL="gpt-5.2-chat",
                    LLM_MAX_RETRIES="0", LLM_TIMEOUT_S="5", OTEL_SDK_DISABLED="true", PYTHONPATH=str(ROOT))
    process, base = start_service(env, tmp_path_factory.mktemp("fifth") / "service.log", command=LAUNCHER)
    yield base
    stop(process)


@pytest.fixture
def tipped(fake_llm: FakeOpenAI) -> FakeOpenAI:
    fake_llm.script("Question", question="Which gas do plants take in?", reference_answer="carbon dioxide")
    fake_llm.script("Tip", tip=TIP)
    fake_llm.script("StudentAnswer", answer="carbon dioxide")
    fake_llm.script("Grade", verdict="correct", feedback="Right.")
    return fake_llm


def test_the_json_result_lists_the_step_in_table_order(service: str, tipped: FakeOpenAI) -> None:
    played = httpx.post(f"{service}/ask", json={"subject": "science"}, timeout=30).json()
    assert [(s["step"], s["agent"], s["outcome"]) for s in played["steps"]] == [
        ("ask", "teacher", None), ("review", "reviewer", "accepted"), ("tip", "teacher", "given"),
        ("answer", "student", None), ("grade", "teacher", "correct")]
    assert played["steps"][2]["detail"] == TIP and played["verdict"] == "correct"
    assert [r.tool_name for r in tipped.requests] == ["Question", "Review", "Tip", "StudentAnswer", "Grade"]
    kept = httpx.get(f"{service}/sessions/{played['session_id']}", timeout=10).json()["rounds"][-1]
    assert ("tip", "given") in [(s["step"], s["outcome"]) for s in kept["steps"]]


def test_the_sse_stream_sends_the_step_by_its_kind(service: str, tipped: FakeOpenAI) -> None:
    with httpx.stream("POST", f"{service}/ask", json={"subject": "science"},
                      headers={"accept": "text/event-stream"}, timeout=30) as r:
        events = parse_sse(r.read().decode())
    assert [name for name, _ in events] == ["trace", "question", "review", "tip", "answer", "grade", "round"]
    tip = dict(events)["tip"]
    assert {k: tip[k] for k in ("step", "agent", "speaker", "status", "text", "outcome", "by")} == {
        "step": "tip", "agent": "teacher", "speaker": "Teacher", "status": "finished", "text": TIP,
        "outcome": "given", "by": "agent"}


def test_the_ag_ui_client_gets_the_step_and_its_message(service: str, tipped: FakeOpenAI) -> None:
    (played,) = play(f"{service}/ag-ui", [{"message": "a science question"}], key=None)["runs"]
    assert played["error"] is None and played["outcome"] == "success"
    assert types(played) == ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT", *STEP * 5, "STATE_SNAPSHOT", "RUN_FINISHED"]
    steps = [e["stepName"] for e in played["events"] if e["type"] == "STEP_STARTED"]
    assert steps == ["teacher.ask", "reviewer.review", "teacher.tip", "student.answer", "teacher.grade"]
    said = [(m.get("name"), m["content"]) for m in played["messages"] if m["role"] == "assistant"]
    assert said[2] == ("Teacher", TIP), said
    assert [s["step"] for s in played["result"]["steps"]] == ["ask", "review", "tip", "answer", "grade"]


def test_the_page_shows_the_step_as_a_turn(service: str, tipped: FakeOpenAI, browser: Browser) -> None:
    with new_page(browser) as page:
        open_page(page, service)
        page.get_by_label("Subject").fill("science")
        page.get_by_role("button", name="Play a round").click()
        card = page.locator("#rounds .round").first
        expect(card.locator(".verdict")).to_have_text("✓ Correct", timeout=15_000)
        turns = card.locator(".turn.step")
        expect(turns).to_have_count(2)
        assert [turns.nth(i).get_attribute("data-step") for i in range(2)] == ["review", "tip"]
        tip = card.locator('.turn.step[data-step="tip"]')
        expect(tip.locator(".who")).to_have_text("Teacher")
        expect(tip.locator(".step-text")).to_have_text(f"given: {TIP}")


def test_the_evaluation_reports_the_step_by_its_outcome(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    script(fake_llm)
    fake_llm.script("Tip", tip=TIP)
    env = {**eval_env(fake_llm), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*LAUNCHER, "eval", "--ids", *IDS[:3], "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=env["EVAL_CWD"])
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["by_step"]) == ["review", "tip", "grade"]
    assert report["by_step"]["tip"]["given"]["strict"]["n"] == 3
    assert "| step `tip`: outcome |" in (tmp_path / "report.md").read_text()
    assert len(fake_llm.requests_for("Tip")) == 3
