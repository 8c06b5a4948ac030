"""POST /ask as a user sees it: rounds, sessions, streaming, validation, /health and the OpenAPI document."""

from __future__ import annotations

import json
import time
from importlib.metadata import version

import pytest
from fastapi.testclient import TestClient

from tests.conftest import HEX32
from tests.fakes import wait_until
from tests.fakes.openai_server import FakeOpenAI, Fault

VERDICTS = {"correct", "partially_correct", "incorrect"}


def ask(client: TestClient, **body: object):
    return client.post("/ask", json=body)


def test_ask_returns_a_graded_round(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="What is 7 x 8?", reference_answer="56")
    fake_llm.script("StudentAnswer", answer="54")
    fake_llm.script("Grade", verdict="incorrect", feedback="7 x 8 is 56, not 54.")

    r = ask(client, subject="math", difficulty="easy", language="en")

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["round"] == 1
    assert (body["subject"], body["difficulty"], body["language"]) == ("math", "easy", "en")
    assert body["question"] == "What is 7 x 8?"
    assert body["student_answer"] == "54"
    assert body["verdict"] == "incorrect"
    assert body["feedback"] == "7 x 8 is 56, not 54."
    assert body["reference_answer"] == "56"
    assert body["model"] == "gpt-5.2-chat"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    assert HEX32.match(body["trace_id"])
    assert len(body["session_id"]) >= 22
    # The trace context comes back in the W3C `traceresponse` header too.
    assert r.headers["traceresponse"].split("-")[1] == body["trace_id"]
    # Four LLM calls, each a forced function call (structured output), in graph order: the Reviewer checks the
    # question before the Student sees it.
    assert [req.tool_name for req in fake_llm.requests] == ["Question", "Review", "StudentAnswer", "Grade"]


@pytest.mark.parametrize("verdict", sorted(VERDICTS))
def test_verdict_is_the_teachers_grade(client: TestClient, fake_llm: FakeOpenAI, verdict: str) -> None:
    fake_llm.script("Grade", verdict=verdict)
    assert ask(client, subject="history").json()["verdict"] == verdict


def test_session_continues_with_same_settings_and_no_repeats(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="Which planet is largest?", reference_answer="Jupiter")
    first = ask(client, subject="science", difficulty="hard", language="en").json()
    fake_llm.script("Question", question="What gas do plants absorb?", reference_answer="CO2")

    second = ask(client, session_id=first["session_id"]).json()

    assert second["session_id"] == first["session_id"]
    assert second["round"] == 2
    assert (second["subject"], second["difficulty"], second["language"]) == ("science", "hard", "en")
    # The Teacher is told its earlier question, so it does not repeat it.
    assert "Which planet is largest?" in fake_llm.requests_for("Question")[-1].prompt_text


def test_new_settings_apply_to_the_next_round(client: TestClient) -> None:
    first = ask(client, subject="math", difficulty="easy").json()
    second = ask(client, session_id=first["session_id"], difficulty="hard").json()
    assert (second["round"], second["subject"], second["difficulty"]) == (2, "math", "hard")


def test_sessions_are_isolated(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="Secret question of A?", reference_answer="A")
    a = ask(client, subject="math").json()
    fake_llm.script("Question", question="Question of B?", reference_answer="B")
    b = ask(client, subject="history").json()
    fake_llm.requests.clear()

    b2 = ask(client, session_id=b["session_id"]).json()

    assert a["session_id"] != b["session_id"]
    assert (b2["subject"], b2["round"]) == ("history", 2)
    prompt = fake_llm.requests_for("Question")[0].prompt_text
    assert "Question of B?" in prompt and "Secret question of A?" not in prompt


def test_unknown_session_is_404_problem(client: TestClient) -> None:
    r = ask(client, session_id="A" * 22)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == "/problems/session-not-found"
    assert problem["status"] == 404
    assert "Omit session_id" in problem["detail"]
    assert HEX32.match(problem["trace_id"])


@pytest.mark.parametrize(("message", "expected"), [
    ("보통 난이도로 수학 문제 풀래", ("math", "medium", "ko")),
    ("give me a hard history question", ("history", "hard", "en")),
    ("쉬운 과학 문제", ("science", "easy", "ko")),
])
def test_message_is_parsed_into_settings(client: TestClient, message: str, expected: tuple[str, str, str]) -> None:
    body = ask(client, message=message).json()
    assert (body["subject"], body["difficulty"], body["language"]) == expected


def test_explicit_fields_win_over_the_message(client: TestClient) -> None:
    body = ask(client, message="hard math", subject="geography").json()
    assert (body["subject"], body["difficulty"]) == ("geography", "hard")


def test_next_and_reset_messages(client: TestClient) -> None:
    first = ask(client, subject="english", difficulty="easy").json()
    second = ask(client, session_id=first["session_id"], message="next").json()
    assert second["round"] == 2
    reset = ask(client, session_id=first["session_id"], message="reset").json()
    assert reset["round"] == 1
    assert (reset["session_id"], reset["subject"], reset["difficulty"]) == (first["session_id"], "english", "easy")


def test_korean_difficulty_aliases(client: TestClient) -> None:
    assert ask(client, subject="math", difficulty="어려움").json()["difficulty"] == "hard"
    assert ask(client, subject="math", difficulty="쉬움").json()["difficulty"] == "easy"


def test_new_session_defaults(client: TestClient) -> None:
    body = ask(client).json()
    assert (body["subject"], body["difficulty"], body["language"]) == ("general", "medium", "en")


@pytest.mark.parametrize(("body", "field"), [
    ({"difficulty": "extreme"}, "difficulty"),
    ({"language": "fr"}, "language"),
    ({"subject": "x" * 81}, "subject"),
    ({"subject": "   "}, "subject"),
    ({"session_id": "not valid!"}, "session_id"),
    ({"message": "m" * 501}, "message"),
    ({"subject": "math", "colour": "blue"}, "colour"),
])
def test_invalid_input_is_422_naming_the_field(client: TestClient, fake_llm: FakeOpenAI, body: dict,
                                               field: str) -> None:
    r = client.post("/ask", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert field in problem["detail"]
    assert any(field in [str(p) for p in e["loc"]] for e in problem["errors"])
    assert fake_llm.requests == []  # nothing reached the LLM


def test_body_that_is_not_utf8_json_is_a_clear_400(client: TestClient) -> None:
    r = client.post("/ask", content=b"\xff\xfe not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "UTF-8 JSON" in r.json()["detail"]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/ask", content=b'{"subject": "math",', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    assert client.get("/nope").json()["type"] == "/problems/not-found"
    r = client.get("/ask")
    assert r.status_code == 405 and r.json()["type"] == "/problems/method-not-allowed"


def test_oversized_body_is_413(client: TestClient, fake_llm: FakeOpenAI) -> None:
    r = client.post("/ask", content=json.dumps({"message": "x" * 20_000}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["type"] == "/problems/body-too-large"
    assert fake_llm.requests == []


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * 1024

    r = client.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_streaming_sends_one_event_per_agent_step(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="What is H2O?", reference_answer="water")
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    with client.stream("POST", "/ask", json={"subject": "science"},
                       headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.read().decode())

    assert [e for e, _ in events] == ["trace", "question", "review", "answer", "grade", "round"]
    trace, question, review, _, grade, final = (d for _, d in events)
    # Each event says who spoke and what, so a client renders a step it does not know; no reference answer early.
    assert question == {"kind": "question", "round": 1, "step": "ask", "agent": "teacher", "speaker": "Teacher",
                        "status": "finished", "text": "What is H2O?", "outcome": None, "by": "agent",
                        "question": "What is H2O?", "options": []}
    assert (review["speaker"], review["outcome"], review["accepted"]) == ("Reviewer", "accepted", True)
    assert "water" not in json.dumps([question, review, _])
    assert grade | {"verdict": "correct", "feedback": "Yes.", "outcome": "correct", "text": "Yes.", "step": "grade"} \
        == grade
    assert [s["step"] for s in final["steps"]] == ["ask", "review", "answer", "grade"]
    assert final["steps"][-1] == {"step": "grade", "agent": "teacher", "outcome": "correct", "detail": None, "runs": 1}
    assert final["reference_answer"] == "water"
    assert trace["trace_id"] == final["trace_id"] and HEX32.match(trace["trace_id"])
    assert trace["session_id"] == final["session_id"]


def test_a_stream_closed_early_loses_nothing_the_round_plays_on_and_resumes(make_client,
                                                                           fake_llm: FakeOpenAI) -> None:
    client = make_client(max_concurrent_rounds=1)
    rounds = client.app_state["rounds"]
    fake_llm.latency_s = 0.3
    with client.stream("POST", "/ask", json={}, headers={"accept": "text/event-stream"}) as r:
        assert r.headers["cache-control"] == "no-cache"
        lines = r.iter_lines()
        seen = [next(lines) for _ in range(6)]  # id, event, data, blank: trace; id, event: question
        assert seen[0] == "id: 1.1" and seen[1] == "event: trace"
        assert seen[5] == "event: question" and seen[4] == "id: 1.2"
        session_id = json.loads(seen[2].removeprefix("data: "))["session_id"]
        # Streamed as it happens: the question is here before the grading call has even left.
        assert fake_llm.requests_for("Grade") == []
        assert rounds.in_flight == 1  # the round holds its place
    # The client went away: the round plays on, holding its place until it ends.
    wait_until(lambda: rounds.in_flight == 0, 5, "the round ended and released its place")
    assert len(fake_llm.requests_for("Grade")) == 1
    # The client reconnects with the last id it saw and gets what it missed, once, in order.
    with client.stream("GET", f"/sessions/{session_id}/round",
                       headers={"accept": "text/event-stream", "last-event-id": "1.2"}) as r:
        events = parse_sse(r.read().decode())
    assert [e for e, _ in events] == ["review", "answer", "grade", "round"]
    assert events[-1][1]["session_id"] == session_id and events[-1][1]["round"] == 1
    fake_llm.latency_s = 0.0
    assert client.post("/ask", json={"session_id": session_id}).json()["round"] == 2


def test_streaming_reports_errors_as_an_event(client: TestClient, fake_llm: FakeOpenAI) -> None:
    # The Teacher's call succeeds; the Student's call fails on both attempts (LLM_MAX_RETRIES=1).
    fake_llm.fail_next(Fault("pass"))
    fake_llm.fail_next(Fault("status", 500), times=2)
    with client.stream("POST", "/ask", json={"subject": "math"}, headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    assert [e for e, _ in events] == ["trace", "question", "error"]
    assert events[-1][1]["status"] == 502
    assert events[-1][1]["type"] == "/problems/llm-upstream"
    assert events[-1][1]["trace_id"] == events[0][1]["trace_id"]


def test_streaming_unknown_session_is_still_a_plain_404(client: TestClient) -> None:
    r = client.post("/ask", json={"session_id": "B" * 22}, headers={"accept": "text/event-stream"})
    assert r.status_code == 404


def test_health_answers_without_calling_the_llm(client: TestClient, fake_llm: FakeOpenAI) -> None:
    started = time.perf_counter()
    r = client.get("/health")
    assert r.status_code == 200
    assert time.perf_counter() - started < 1.0
    assert r.json() == {"status": "ok", "provider": "openai_compatible", "model": "gpt-5.2-chat",
                        "embedded": False, "checkpointer": "memory", "version": version("question-app")}
    assert fake_llm.requests == []


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ask_op = spec["paths"]["/ask"]["post"]
    assert {"200", "404", "422", "502", "503", "504"} <= set(ask_op["responses"])
    assert "text/event-stream" in ask_op["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_wrong_content_type_is_a_clear_4xx(client: TestClient, fake_llm: FakeOpenAI, content_type: str) -> None:
    r = client.post("/ask", content=b'{"subject": "math"}', headers={"content-type": content_type})
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert fake_llm.requests == []
