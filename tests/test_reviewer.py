"""The Reviewer, the fourth agent: it checks each question before anyone answers it, sends a rejected one back
to the Teacher once, and the round says what happened. Added through the agent table only (graphs/); it plays by
default and ``DISABLED_AGENTS=reviewer`` switches it off."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.test_api import parse_sse


def reviews(*verdicts: str) -> Callable[[str], dict[str, Any]]:
    """A responder that reviews with ``verdicts`` in turn (then accepts)."""
    queue = list(verdicts)

    def respond(prompt: str) -> dict[str, Any]:
        verdict = queue.pop(0) if queue else "accept"
        return {"verdict": verdict, "reason": "It has two correct answers." if verdict == "reject" else "Fine."}

    return respond


def stream(client: TestClient, **body: Any) -> list[tuple[str, dict[str, Any]]]:
    with client.stream("POST", "/ask", json=body, headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        return parse_sse(r.read().decode())


def test_an_accepted_question_goes_on_and_the_round_says_so(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="What is 2 + 2?", reference_answer="4")
    played = client.post("/ask", json={"subject": "math"}).json()
    assert [(s["step"], s["agent"], s["outcome"], s["runs"]) for s in played["steps"]] == [
        ("ask", "teacher", None, 1), ("review", "reviewer", "accepted", 1), ("answer", "student", None, 1),
        ("grade", "teacher", played["verdict"], 1)]
    review = fake_llm.requests_for("Review")[0].body["messages"]
    assert "What is 2 + 2?" in json.dumps(review) and "<subject>math</subject>" in json.dumps(review)
    # The Reviewer comes before the Student: the Student's call is the third.
    assert [r.tool_name for r in fake_llm.requests] == ["Question", "Review", "StudentAnswer", "Grade"]


def test_a_rejected_question_goes_back_to_the_teacher_once_with_the_reason(client: TestClient,
                                                                           fake_llm: FakeOpenAI) -> None:
    fake_llm.respond("Review", reviews("reject"))
    events = stream(client, subject="history")
    assert [name for name, _ in events] == ["trace", "question", "review", "question", "review", "answer", "grade",
                                            "round"]
    first, second = (data for name, data in events if name == "review")
    assert (first["outcome"], first["speaker"], first["text"]) == ("rejected", "Reviewer",
                                                                   "It has two correct answers.")
    assert second["outcome"] == "accepted" and second["accepted"] is True
    asks = fake_llm.requests_for("Question")
    assert len(asks) == 2 and "It has two correct answers." in json.dumps(asks[1].body["messages"])
    assert "It has two correct answers." not in json.dumps(asks[0].body["messages"])
    steps = {s["step"]: s for s in events[-1][1]["steps"]}
    assert (steps["review"]["outcome"], steps["review"]["runs"], steps["ask"]["runs"]) == ("accepted", 2, 2)


def test_a_question_rejected_twice_is_kept_and_the_round_says_so(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.respond("Review", reviews("reject", "reject", "reject"))
    played = client.post("/ask", json={"subject": "science"}).json()
    review = next(s for s in played["steps"] if s["step"] == "review")
    assert (review["outcome"], review["runs"], review["detail"]) == ("rejected", 2, "It has two correct answers.")
    assert len(fake_llm.requests_for("Question")) == 2 and len(fake_llm.requests_for("Review")) == 2
    assert played["verdict"]  # graded all the same
    kept = client.get(f"/sessions/{played['session_id']}").json()["rounds"][-1]
    assert next(s for s in kept["steps"] if s["step"] == "review")["outcome"] == "rejected"


def test_a_reason_never_gives_the_reference_answer_away(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="Which gas do plants take in?", reference_answer="carbon dioxide")
    fake_llm.script("Review", verdict="reject", reason="The answer carbon dioxide is too easy.")
    events = stream(client, subject="science", student="person")
    assert [name for name, _ in events] == ["trace", "question", "review", "question", "review", "awaiting_answer"]
    assert "carbon dioxide" not in json.dumps(events)  # the person has not answered yet


def test_the_reviewer_can_be_switched_off(make_client: Callable[..., TestClient], fake_llm: FakeOpenAI) -> None:
    played = make_client().post("/ask", json={}).json()  # on by default
    assert [s["step"] for s in played["steps"]] == ["ask", "review", "answer", "grade"]
    fake_llm.clear()
    client = make_client(disabled_agents="reviewer")
    played = client.post("/ask", json={}).json()
    assert [s["step"] for s in played["steps"]] == ["ask", "answer", "grade"]
    assert [r.tool_name for r in fake_llm.requests] == ["Question", "StudentAnswer", "Grade"]
    events = stream(client, subject="math")
    assert [name for name, _ in events] == ["trace", "question", "answer", "grade", "round"]


def test_a_review_is_traced_and_counted_by_outcome(client: TestClient, fake_llm: FakeOpenAI,
                                                   telemetry_env: OTLPReceiver) -> None:
    fake_llm.respond("Review", reviews("reject"))
    trace_id = client.post("/ask", json={"subject": "math", "difficulty": "hard"}).json()["trace_id"]
    def reviewer_spans() -> list[Any] | None:
        found = [s for s in telemetry_env.trace(trace_id) if s.name == "invoke_agent reviewer"]
        return found if len(found) == 2 else None  # the question was reviewed twice

    spans = telemetry_env.wait_for(reviewer_spans)
    assert {(s.attributes["quiz.step"], s.attributes["gen_ai.prompt.name"], s.attributes["quiz.prompt.version"])
            for s in spans} == {("review", "reviewer", "1")}
    points = telemetry_env.wait_for(lambda: [p for p in telemetry_env.metric_points()
                                             if p.name == "quiz.agent.step.outcomes"
                                             and p.attributes.get("quiz.step") == "review"
                                             and p.attributes.get("quiz.difficulty") == "hard"] or None)
    outcomes = {p.attributes["quiz.step.outcome"] for p in points}
    assert outcomes <= {"accepted", "rejected"} and "rejected" in outcomes
    assert {p.attributes["gen_ai.agent.name"] for p in points} == {"reviewer"}
    assert {p.attributes["quiz.subject"] for p in points} == {"math"}


def test_an_evaluation_item_rejected_is_reviewed_once_and_never_asked_again(fake_llm: FakeOpenAI,
                                                                            tmp_path: Path) -> None:
    """A preset question is not the Teacher's to rewrite: the loop back to asking does not run, as the
    optimiser's call budget counts (graphs.agents.llm_calls_per_round)."""
    from tests.test_eval import eval_env, question_app

    fake_llm.respond("Review", reviews("reject", "reject"))
    done = question_app("--ids", "math-easy-en-1", "--out", str(tmp_path), env=eval_env(fake_llm))
    assert done.returncode == 0, done.stderr
    assert len(fake_llm.requests_for("Review")) == 1 and fake_llm.requests_for("Question") == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["by_step"]["review"]) == ["rejected"]
