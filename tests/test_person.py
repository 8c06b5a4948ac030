"""A person plays the Student: the round pauses after the question (LangGraph ``interrupt``) and the person's
answer resumes it into grading — in JSON and in the stream, on every store, once per round."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.test_ag_ui import latest


def ask(client: TestClient, status: int = 200, **body: object) -> dict:
    r = client.post("/ask", json=body)
    assert r.status_code == status, r.text
    return r.json()


def sse(client: TestClient, **body: object) -> list[tuple[str, dict]]:
    """The events of a streamed /ask: ``[(event, data), …]``."""
    with client.stream("POST", "/ask", json=body, headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_the_person_answers_and_the_teacher_grades_that_answer(client: TestClient, fake_llm: FakeOpenAI) -> None:
    # The reference answer has a space, which no id has (trace ids are hex, session ids URL-safe base64): "not in
    # the JSON" cannot match an id by chance, as "1492" matched a random trace id about once in 2,250 runs.
    reference = "in 1492"
    fake_llm.script("Question", question="In which year did Columbus reach the Americas?", reference_answer=reference)
    fake_llm.script("Grade", verdict="correct", feedback="Right: 1492.")
    pending = ask(client, subject="history", difficulty="easy", student="person")

    assert pending["status"] == "awaiting_answer" and pending["round"] == 1
    assert pending["question"] == "In which year did Columbus reach the Americas?"
    assert reference not in json.dumps(pending)  # the reference answer stays with the Teacher
    assert [r.tool_name for r in fake_llm.requests] == ["Question", "Review"]  # the Student agent never ran
    assert pending["usage"]["total_tokens"] > 0
    sid = pending["session_id"]
    looked = client.get(f"/sessions/{sid}").json()
    assert looked["student"] == "person" and looked["rounds"] == []
    assert looked["awaiting_answer"] == {"round": 1, "question": pending["question"], "options": [], "hints": []}
    assert reference not in json.dumps(looked)

    graded = ask(client, session_id=sid, answer="  It was 1492 \n")
    assert (graded["status"], graded["round"], graded["answered_by"]) == ("graded", 1, "person")
    assert (graded["student_answer"], graded["verdict"], graded["reference_answer"]) == ("It was 1492", "correct",
                                                                                          reference)
    assert [r.tool_name for r in fake_llm.requests] == ["Question", "Review", "Grade"]
    assert "<answer>It was 1492</answer>" in fake_llm.requests_for("Grade")[0].prompt_text
    assert graded["usage"]["total_tokens"] > pending["usage"]["total_tokens"]  # the question's and the grade's

    looked = client.get(f"/sessions/{sid}").json()
    assert looked["awaiting_answer"] is None and looked["rounds_played"] == 1
    assert (looked["rounds"][0]["answered_by"], looked["rounds"][0]["answer"]) == ("person", "It was 1492")
    assert looked["rounds"][0]["trace_id"] == graded["trace_id"]


def test_a_round_is_graded_once_and_the_next_round_waits_for_its_answer(client: TestClient) -> None:
    sid = ask(client, student="person")["session_id"]
    ask(client, session_id=sid, answer="first")

    again = ask(client, 409, session_id=sid, answer="second")  # no second grade of the same round
    assert again["type"] == "/problems/no-answer-awaited" and "graded once" in again["detail"]
    assert client.get(f"/sessions/{sid}").json()["rounds_played"] == 1

    nxt = ask(client, session_id=sid, message="next")  # the session stays in person mode
    assert (nxt["status"], nxt["round"]) == ("awaiting_answer", 2)
    skipped = ask(client, 409, session_id=sid)  # a new round cannot jump the question that waits
    assert skipped["type"] == "/problems/answer-awaited" and "answer" in skipped["detail"]
    assert ask(client, session_id=sid, answer="x")["round"] == 2

    back = ask(client, session_id=sid, student="model")  # the agent plays the Student again
    assert (back["status"], back["round"], back["answered_by"]) == ("graded", 3, "model")
    assert ask(client, 409, session_id=sid, answer="late")["type"] == "/problems/no-answer-awaited"


def test_two_answers_at_once_are_graded_once(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client()
    sid = ask(client, student="person")["session_id"]
    fake_llm.latency_s = 0.5
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda a: client.post("/ask", json={"session_id": sid, "answer": a}), ["a", "b"]))
    assert sorted(r.status_code for r in replies) == [200, 409]
    assert len(fake_llm.requests_for("Grade")) == 1
    assert client.get(f"/sessions/{sid}").json()["rounds_played"] == 1


def test_the_stream_ends_with_the_question_then_continues_with_the_answer(client: TestClient,
                                                                         fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="Name a noble gas.", reference_answer="neon gas")  # a space: in no id
    first = sse(client, subject="science", student="person")
    assert [name for name, _ in first] == ["trace", "question", "review", "awaiting_answer"]
    pending = first[-1][1]
    assert pending["status"] == "awaiting_answer" and pending["question"] == "Name a noble gas."
    assert "neon gas" not in json.dumps(first)

    second = sse(client, session_id=pending["session_id"], answer="argon")
    assert [name for name, _ in second] == ["trace", "answer", "grade", "round"]
    assert second[1][1] | {"student_answer": "argon", "answered_by": "person", "by": "person", "text": "argon",
                           "speaker": "Student"} == second[1][1]
    assert second[-1][1]["answered_by"] == "person" and second[-1][1]["reference_answer"] == "neon gas"


def test_a_failed_grading_keeps_the_question_waiting_and_a_retry_grades_the_new_answer(
        client: TestClient, fake_llm: FakeOpenAI) -> None:
    sid = ask(client, student="person")["session_id"]
    fake_llm.fail_next(Fault("status", 500), times=2)  # the grading call and its one retry
    failed = client.post("/ask", json={"session_id": sid, "answer": "my first try"})
    assert failed.status_code == 502, failed.text

    looked = client.get(f"/sessions/{sid}").json()
    assert looked["awaiting_answer"]["round"] == 1 and looked["rounds_played"] == 0
    graded = ask(client, session_id=sid, answer="my second try")
    assert (graded["round"], graded["student_answer"]) == (1, "my second try")
    assert "my second try" in fake_llm.requests_for("Grade")[-1].prompt_text
    assert ask(client, 409, session_id=sid, answer="third")["type"] == "/problems/no-answer-awaited"


@pytest.mark.parametrize("body", [
    {"answer": "1492"},  # which round?
    {"session_id": "Zq3v9yH0b7wQpL2xT5mN1c", "answer": "1492", "subject": "math"},
    {"session_id": "Zq3v9yH0b7wQpL2xT5mN1c", "answer": " \n\t "},
    {"session_id": "Zq3v9yH0b7wQpL2xT5mN1c", "answer": "a" * 1001},
    {"student": "teacher"},
])
def test_a_malformed_answer_is_a_422_that_says_what_to_fix(client: TestClient, body: dict) -> None:
    problem = ask(client, 422, **body)
    assert problem["type"] == "/problems/validation" and problem["errors"]


def test_an_answer_to_an_unknown_session_is_404(client: TestClient) -> None:
    assert ask(client, 404, session_id="N" * 22, answer="x")["type"] == "/problems/session-not-found"


def test_telemetry_says_who_answered(client: TestClient, telemetry_env: OTLPReceiver) -> None:
    asked = ask(client, subject="math", student="person")
    sid = asked["session_id"]
    person = ask(client, session_id=sid, answer="4")
    model = ask(client, subject="math")

    def rounds_by_answerer() -> dict[str, float]:
        """Each series' latest (cumulative) count, summed by who answered."""
        counts: dict[str, float] = {}
        for p in latest(telemetry_env.metric_points()):
            if p.name == "quiz.rounds":
                by = p.attributes["quiz.answered_by"]
                counts[by] = counts.get(by, 0) + p.value
        return counts

    assert telemetry_env.wait_for(lambda: rounds_by_answerer() == {"person": 1, "model": 1})
    telemetry_env.wait_for(lambda: {s.name for s in telemetry_env.trace(person["trace_id"])} >= {
        "invoke_workflow quiz", "invoke_agent teacher"})
    # The model's round exports in its own batch: wait for its workflow span too before reading it.
    telemetry_env.wait_for(lambda: "invoke_workflow quiz" in {s.name for s in telemetry_env.trace(model["trace_id"])})
    workflow = {s.trace_id: s for s in telemetry_env.spans() if s.name == "invoke_workflow quiz"}
    assert workflow[person["trace_id"]].attributes["quiz.answered_by"] == "person"
    assert workflow[model["trace_id"]].attributes["quiz.answered_by"] == "model"
    # The grading request's round links to the request that asked (two traces, one round).
    (link,) = workflow[person["trace_id"]].links
    assert link[0] == asked["trace_id"] and link[1] in {s.span_id for s in telemetry_env.trace(asked["trace_id"])}
    assert workflow[model["trace_id"]].links == []
    # Only the Teacher ran in the person's grading request: no Student agent span, no student step metric.
    assert "invoke_agent student" not in {s.name for s in telemetry_env.trace(person["trace_id"])}

    def grades() -> list[str]:
        return [e.attributes["quiz.answered_by"] for e in telemetry_env.events("gen_ai.evaluation.result")
                if e.attributes.get("gen_ai.conversation.id") == sid]

    assert telemetry_env.wait_for(lambda: grades() == ["person"])
    # The grade judges the person's answer, which came with the grading request: it is attached to that
    # request's round span (a model's answer: to the Student's step span, tests/test_telemetry.py).
    (grade,) = [e for e in telemetry_env.events("gen_ai.evaluation.result")
                if e.attributes.get("gen_ai.conversation.id") == sid]
    assert (grade.trace_id, grade.span_id) == (person["trace_id"], workflow[person["trace_id"]].span_id)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_paused_round_survives_a_restart_and_moves_between_replicas(store: str, make_client, tmp_path: Path,
                                                                      request) -> None:
    url = f"sqlite:///{tmp_path}/sessions.db" if store == "sqlite" else request.getfixturevalue("postgres").url
    first = make_client(checkpointer_url=url)
    pending = ask(first, subject="geography", student="person")
    if store == "sqlite":  # one node: the process restarts between question and answer
        first.__exit__(None, None, None)
    second = make_client(checkpointer_url=url)  # Postgres: another replica, the first still running
    assert second.get(f"/sessions/{pending['session_id']}").json()["awaiting_answer"]["round"] == 1
    graded = ask(second, session_id=pending["session_id"], answer="Seoul")
    assert (graded["round"], graded["subject"], graded["student_answer"]) == (1, "geography", "Seoul")
    if store == "postgres":
        assert ask(first, 409, session_id=pending["session_id"], answer="again")["type"] == \
            "/problems/no-answer-awaited"


def test_a_paused_round_expires_with_its_idle_session_in_memory(make_client) -> None:
    ttl = 2.0
    client = make_client(session_ttl_s=ttl)
    sid = ask(client, student="person")["session_id"]
    time.sleep(ttl + 0.5)
    assert ask(client, 404, session_id=sid, answer="too late")["type"] == "/problems/session-not-found"


def test_clients_that_send_none_of_the_new_fields_get_the_same_round(client: TestClient) -> None:
    played = ask(client, subject="science")
    assert played["status"] == "graded" and played["answered_by"] == "model"
    names = [name for name, _ in sse(client, session_id=played["session_id"])]
    assert names == ["trace", "question", "review", "answer", "grade", "round"]
