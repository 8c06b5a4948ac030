"""The protocol's own TypeScript client plays the quiz: ``@ag-ui/client``'s ``HttpAgent`` (from the npm
registry, pinned in ``tests/ag_ui/package-lock.json``, installed here with ``npm ci``) run by Node against
``question-app`` as a real process on loopback with the fake LLM. The client verifies every event against
the protocol's schemas and order rules (a violation fails its run), and ``tests/ag_ui/play.mjs`` parses each
event again with ``@ag-ui/core``'s ``EventSchemas``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import CANARY_KEY
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.service import ROOT, clean_env, start_service, stop

CLIENT = ROOT / "tests" / "ag_ui"
KEY = "ag-ui-client-key-31c9"


def install_client() -> None:
    """``npm ci`` the pinned client when ``node_modules`` is missing or older than the lock file."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js is missing: run `python3 tests/prerequisites.py`"
    installed = CLIENT / "node_modules" / ".package-lock.json"
    lock = CLIENT / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CLIENT, check=True,
                       timeout=300)


@pytest.fixture(scope="module")
def service(llm_server: FakeOpenAI, otlp: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The AG-UI endpoint of a ``question-app`` process that requires an API key."""
    install_client()
    env = clean_env(OPENAI_BASE_URL=llm_server.base_url, OPENAI_API_KEY=CANARY_KEY, OPENAI_MODEL="gpt-5.2-chat",
                    LLM_MAX_RETRIES="0", LLM_TIMEOUT_S="5", API_KEYS=KEY,
                    OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                    OTEL_METRIC_EXPORT_INTERVAL="500")
    process, base = start_service(env, tmp_path_factory.mktemp("ag-ui") / "service.log")
    yield f"{base}/ag-ui"
    stop(process)


def play(url: str, runs: list[dict[str, Any]], key: str | None = KEY, thread_id: str | None = None) -> dict[str, Any]:
    """Run ``play.mjs``: one ``HttpAgent`` (one thread) plays ``runs``; its report."""
    config = {"url": url, "runs": runs, "headers": {"Authorization": f"Bearer {key}"} if key else {},
              "threadId": thread_id}
    done = subprocess.run(["node", str(CLIENT / "play.mjs"), json.dumps(config)], cwd=CLIENT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for played in report["runs"]:
        assert played["invalid"] == [], played["invalid"]  # every event parsed by the protocol's EventSchemas
    return report


def types(played: dict[str, Any]) -> list[str]:
    return [event["type"] for event in played["events"]]


STEP = ["STEP_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "STEP_FINISHED"]


def test_the_protocol_client_plays_rounds_on_one_thread_and_a_person_round(service: str,
                                                                             fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="What is the chemical symbol of gold?", reference_answer="Au")
    fake_llm.script("Review", verdict="accept", reason="One answer, and it is science.")
    fake_llm.script("StudentAnswer", answer="Au")
    fake_llm.script("Grade", verdict="correct", feedback="Right.")
    fake_llm.script("Hint", hint="Its symbol comes from the Latin aurum.")
    report = play(service, [{"message": "an easy science question"}, {},
                            {"forwardedProps": {"student": "person"}}, {"hint": True}, {"answer": "Au, I think"}])
    first, second, asked, hinted, answered = report["runs"]
    for played in report["runs"]:
        assert played["error"] is None
    assert types(first) == ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT", *STEP * 4, "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert first["outcome"] == "success" and first["result"]["round"] == 1
    assert first["result"]["subject"] == "science" and first["result"]["difficulty"] == "easy"
    # The same thread continues: round 2, and the client's state is the session's.
    assert second["result"]["round"] == 2 and second["result"]["session_id"] == report["threadId"]
    assert second["state"]["score"] == {"correct": 2, "partially_correct": 0, "incorrect": 0}
    # Authors of the messages the client keeps: the Teacher, the Reviewer and the Student agent.
    authored = [(m["role"], m.get("name"), m["content"]) for m in second["messages"]]
    assert authored[:5] == [("user", None, "an easy science question"),
                            ("assistant", "Teacher", "What is the chemical symbol of gold?"),
                            ("assistant", "Reviewer", "One answer, and it is science."),
                            ("assistant", "Student", "Au"), ("assistant", "Teacher", "Correct. Right.")]
    # A person plays the Student: the run ends with an interrupt, the next one resumes it.
    assert asked["outcome"] == "interrupt" and "result" not in asked  # HttpAgent keeps results of successes
    (interrupt,) = asked["pendingInterrupts"]
    assert (interrupt["id"], interrupt["reason"]) == ("round-3", "answer_awaited")
    assert interrupt["message"] == "What is the chemical symbol of gold?"
    assert asked["state"]["awaiting_answer"] == {"round": 3, "question": interrupt["message"], "options": [],
                                                "hints": []}
    # The person asks for a hint: the Tutor speaks and the run ends with a new interrupt for the same question.
    assert hinted["outcome"] == "interrupt" and types(hinted)[3:8] == STEP
    (again,) = hinted["pendingInterrupts"]
    assert (again["id"], again["message"]) == ("round-3-hint-1", interrupt["message"])
    assert again["metadata"] == {"round": 3, "options": [], "hints": ["Its symbol comes from the Latin aurum."],
                                 "hints_left": 1}
    assert ("assistant", "Tutor", "Its symbol comes from the Latin aurum.") in [
        (m["role"], m.get("name"), m["content"]) for m in hinted["messages"]]
    assert answered["outcome"] == "success" and answered["pendingInterrupts"] == []
    assert answered["result"]["hints"] == ["Its symbol comes from the Latin aurum."]
    assert answered["result"]["credit"] == 0.5  # right, after a hint
    assert (answered["result"]["answered_by"], answered["result"]["student_answer"]) == ("person", "Au, I think")
    assert ("user", "Student", "Au, I think") in [(m["role"], m.get("name"), m["content"])
                                                  for m in answered["messages"]]
    assert answered["state"]["awaiting_answer"] is None and answered["state"]["rounds_played"] == 3


def test_the_protocol_client_gets_run_error_for_an_llm_failure(service: str, fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("status", 500))
    report = play(service, [{"message": "history"}, {}])
    failed, retried = report["runs"]
    assert types(failed) == ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT", "STEP_STARTED", "RUN_ERROR"]
    error = failed["events"][-1]
    assert error["code"] == "/problems/llm-upstream" and error["metadata"]["problem"]["status"] == 502
    assert "outcome" not in failed  # no RUN_FINISHED
    assert retried["error"] is None and retried["result"]["round"] == 1  # the failed round left no trace


def test_the_readme_client_example_runs(service: str, fake_llm: FakeOpenAI) -> None:
    """The AG-UI example of docs/how-to/ag-ui-client.md, as written there, with only the URL and the key filled in."""
    readme = (ROOT / "docs" / "how-to" / "ag-ui-client.md").read_text()
    found = re.search(r"<!-- ag-ui-example -->\s*```js\n(.+?)```", readme, re.S)
    assert found
    placeholder = '{ url: "http://127.0.0.1:8000/ag-ui" }'
    assert placeholder in found.group(1)
    code = found.group(1).replace(placeholder, json.dumps({"url": service,
                                                           "headers": {"Authorization": f"Bearer {KEY}"}}))
    fake_llm.script("Grade", verdict="correct", feedback="Right.")
    example = CLIENT / "readme-example.mjs"  # beside node_modules, so that its import resolves
    example.write_text(code)
    try:
        done = subprocess.run(["node", str(example)], cwd=CLIENT, capture_output=True, text=True, timeout=60)
    finally:
        example.unlink()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "user: an easy science question"
    assert lines[1].startswith("Teacher: ") and lines[2].startswith("Reviewer: ")
    assert lines[3].startswith("Student: ") and lines[4] == "Teacher: Correct. Right."
    assert lines[5] == "verdict: correct score: { correct: 1, partially_correct: 0, incorrect: 0 }"
    assert lines[6].startswith("Teacher asks: ")
    assert lines[7] == "verdict: correct score: { correct: 2, partially_correct: 0, incorrect: 0 }"


def test_the_protocol_client_is_refused_without_a_key(service: str) -> None:
    (refused,) = play(service, [{"message": "math"}], key=None)["runs"]
    assert refused["events"] == [] and refused["error"]["status"] == 401
