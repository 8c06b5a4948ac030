"""``POST /ag-ui`` checked with the protocol's own Python models (``ag-ui-protocol``): every event parses as
an AG-UI ``Event``, in protocol order; the thread is the session; a person answers through interrupt and
resume; failures are ``RUN_ERROR`` with the problem type ``/ask`` would return; same auth, limits and
telemetry as ``/ask``. The protocol's TypeScript client plays the same in ``tests/test_ag_ui_client.py``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from ag_ui.core import (
    CustomEvent,
    Event,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageStartEvent,
)
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from tests.conftest import HEX32
from tests.fakes import wait_until
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import MetricPoint, OTLPReceiver

EVENTS: TypeAdapter[Any] = TypeAdapter(Event)
ROUND = ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT",
         *["STEP_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "STEP_FINISHED"] * 4,
         "STATE_SNAPSHOT", "RUN_FINISHED"]


def run_input(thread_id: str | None = None, message: str | None = None, **fields: Any) -> dict[str, Any]:
    """A ``RunAgentInput`` as an AG-UI client sends it (camelCase on the wire), validated by the protocol's
    own model before it is sent."""
    messages = [{"id": str(uuid.uuid4()), "role": "user", "content": message}] if message else []
    body = {"threadId": thread_id or str(uuid.uuid4()), "runId": str(uuid.uuid4()), "messages": messages,
            "state": {}, "tools": [], "context": [], "forwardedProps": {}, **fields}
    RunAgentInput.model_validate(body)
    return body


def parsed(lines: Iterator[str], after: int = 0) -> Iterator[Any]:
    """The events of a stream's lines as they arrive, each an ``id:`` line (``<attempt>.<seq>``, numbered on
    from ``after``), one ``data:`` line and a blank line, parsed by ``ag_ui.core.Event``."""
    for seq, line in enumerate(lines, start=after + 1):
        assert line == f"id: 1.{seq}", line
        data = next(lines)
        assert data.startswith("data: "), data
        event = EVENTS.validate_python(json.loads(data.removeprefix("data: ")))
        assert next(lines, "") == "", "one data line per event"
        yield event


@contextmanager
def running(client: TestClient, body: dict[str, Any],
            headers: dict[str, str] | None = None) -> Iterator[Iterator[Any]]:
    """POST a run; its events as they arrive. The stream stays open until the ``with`` block ends."""
    with client.stream("POST", "/ag-ui", json=body, headers={"accept": "text/event-stream", **(headers or {})}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        resumed = (headers or {}).get("last-event-id")
        yield parsed(r.iter_lines(), int(resumed.split(".")[1]) if resumed else 0)


def run(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[Any]:
    """POST a run; all its events."""
    with running(client, body, headers) as events:
        return list(events)


def types(events: list[Any]) -> list[str]:
    return [e.type.value for e in events]


def texts(events: list[Any]) -> list[tuple[str | None, str | None, str]]:
    """The text messages: (role, author, text)."""
    starts = {e.message_id: e for e in events if isinstance(e, TextMessageStartEvent)}
    return [(starts[e.message_id].role, starts[e.message_id].name, e.delta) for e in events
            if isinstance(e, TextMessageContentEvent)]


def script_round(fake_llm: FakeOpenAI, verdict: str = "correct") -> None:
    fake_llm.script("Question", question="What is the chemical symbol of gold?", reference_answer="Au-REF")
    fake_llm.script("Review", verdict="accept", reason="One correct answer, fits the subject.")
    fake_llm.script("StudentAnswer", answer="Au")
    fake_llm.script("Grade", verdict=verdict, feedback="Well recalled.")


def test_a_run_is_one_round_in_protocol_order(client: TestClient, fake_llm: FakeOpenAI) -> None:
    script_round(fake_llm)
    body = run_input(message="an easy science question please")
    events = run(client, body)
    assert types(events) == ROUND
    started, trace, before = events[:3]
    assert isinstance(started, RunStartedEvent) and (started.thread_id, started.run_id) == (
        body["threadId"], body["runId"]) and started.protocol_version == "1.0"
    assert isinstance(trace, CustomEvent) and trace.name == "trace"
    assert HEX32.match(trace.value["trace_id"]) and trace.value["session_id"] == body["threadId"]
    assert [e.step_name for e in events if isinstance(e, StepStartedEvent)] == \
        [e.step_name for e in events if isinstance(e, StepFinishedEvent)] == \
        ["teacher.ask", "reviewer.review", "student.answer", "teacher.grade"]
    assert texts(events) == [("assistant", "Teacher", "What is the chemical symbol of gold?"),
                             ("assistant", "Reviewer", "One correct answer, fits the subject."),
                             ("assistant", "Student", "Au"),
                             ("assistant", "Teacher", "Correct. Well recalled.")]
    assert isinstance(before, StateSnapshotEvent) and before.snapshot == {
        "session_id": body["threadId"], "subject": "science", "difficulty": "easy", "language": "en",
        "student": "model", "learner_id": None, "adaptive": False, "format": "open", "round": 1, "rounds_played": 0,
        "score": {"correct": 0, "partially_correct": 0, "incorrect": 0}, "awaiting_answer": None}
    finished = events[-1]
    assert isinstance(finished, RunFinishedEvent) and finished.outcome is None
    result: dict[str, Any] = finished.result or {}
    assert result["reference_answer"] == "Au-REF" and result["trace_id"] == trace.value["trace_id"]
    (usage,) = finished.usage or []
    assert (usage.input_tokens, usage.output_tokens) == (result["usage"]["input_tokens"],
                                                         result["usage"]["output_tokens"])
    assert usage.total_tokens == (usage.input_tokens or 0) + (usage.output_tokens or 0) > 0
    assert (usage.provider, usage.model) == ("openai", "gpt-5.2-chat")
    # The reference answer appears only in the round's result, never before grading ends.
    assert not any("Au-REF" in e.model_dump_json() for e in events[:-1])
    assert all(e.timestamp for e in events)


def test_the_thread_is_the_session_and_the_score_counts_every_round(client: TestClient,
                                                                     fake_llm: FakeOpenAI) -> None:
    thread = str(uuid.uuid4())  # a client-made id (CopilotKit makes a UUID v4): a new session under it
    script_round(fake_llm, verdict="correct")
    first = run(client, run_input(thread, "math, hard"))
    script_round(fake_llm, verdict="incorrect")
    second = run(client, run_input(thread))  # no new user words: the next round, same settings
    assert first[-1].result["round"] == 1 and second[-1].result["round"] == 2
    assert second[-1].result["session_id"] == thread and second[-1].result["subject"] == "math"
    after = second[-2]
    assert isinstance(after, StateSnapshotEvent)
    assert after.snapshot["score"] == {"correct": 1, "partially_correct": 0, "incorrect": 1}
    assert (after.snapshot["round"], after.snapshot["rounds_played"]) == (2, 2)
    session = client.get(f"/sessions/{thread}").json()
    assert session["rounds_played"] == 2 and session["difficulty"] == "hard"
    assert session["score"] == after.snapshot["score"]
    # A reset starts the count again (the reset round is scripted incorrect too).
    reset = run(client, run_input(thread, "reset"))
    assert reset[-1].result["round"] == 1
    assert reset[-2].snapshot["score"] == client.get(f"/sessions/{thread}").json()["score"] == {
        "correct": 0, "partially_correct": 0, "incorrect": 1}


def test_settings_forwarded_props_beat_the_message_which_beats_the_state(client: TestClient) -> None:
    thread = str(uuid.uuid4())
    echoed = {"subject": "history", "difficulty": "easy", "language": "en", "round": 3, "score": {}}
    played = run(client, run_input(thread, "let's do math", state=echoed, forwardedProps={"difficulty": "hard"}))
    result = played[-1].result
    assert (result["subject"], result["difficulty"], result["language"]) == ("math", "hard", "en")
    korean = run(client, run_input(thread, "과학 문제 내줘", state=played[-2].snapshot))
    assert (korean[-1].result["subject"], korean[-1].result["language"]) == ("science", "ko")
    assert texts(korean)[-1][2].startswith(("정답입니다.", "부분 정답입니다.", "오답입니다."))


def test_a_person_answers_through_interrupt_and_resume(client: TestClient, fake_llm: FakeOpenAI) -> None:
    script_round(fake_llm)
    thread = str(uuid.uuid4())
    asked = run(client, run_input(thread, forwardedProps={"student": "person", "subject": "chemistry"}))
    assert types(asked) == ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT", *ROUND[3:8] * 2, "STATE_SNAPSHOT",
                            "RUN_FINISHED"]
    finished = asked[-1]
    assert finished.outcome.type == "interrupt"
    (interrupt,) = finished.outcome.interrupts
    assert (interrupt.id, interrupt.reason, interrupt.message) == (
        "round-1", "answer_awaited", "What is the chemical symbol of gold?")
    answer_schema, hint_schema = interrupt.response_schema["anyOf"]  # an answer, or a request for a hint
    assert answer_schema["required"] == ["answer"] and hint_schema["required"] == ["hint"] and interrupt.expires_at
    assert interrupt.metadata == {"round": 1, "options": [], "hints": [], "hints_left": 2}
    assert asked[-2].snapshot["awaiting_answer"] == {"round": 1, "question": "What is the chemical symbol of gold?",
                                                     "options": [], "hints": []}
    assert not any("Au-REF" in e.model_dump_json() for e in asked)
    assert finished.result["status"] == "awaiting_answer"

    answered = run(client, run_input(thread, resume=[
        {"interruptId": interrupt.id, "status": "resolved", "payload": {"answer": "Au, from aurum"}}]))
    assert types(answered) == ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT", "TEXT_MESSAGE_START",
                               "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "STEP_STARTED", "TEXT_MESSAGE_START",
                               "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "STEP_FINISHED", "STATE_SNAPSHOT",
                               "RUN_FINISHED"]
    assert texts(answered)[0] == ("user", "Student", "Au, from aurum")
    graded = answered[-1]
    assert graded.outcome is None and graded.result["answered_by"] == "person"
    assert graded.result["reference_answer"] == "Au-REF"
    # A resumed run reports only its own LLM calls (the grade), the round its total (question + grade).
    (usage,) = graded.usage
    asked_usage = finished.result["usage"]
    assert usage.input_tokens == graded.result["usage"]["input_tokens"] - asked_usage["input_tokens"] > 0
    assert "Au, from aurum" in fake_llm.requests_for("Grade")[-1].prompt_text


def run_error(events: list[Any]) -> RunErrorEvent:
    assert types(events)[:2] == ["RUN_STARTED", "CUSTOM"] and isinstance(events[-1], RunErrorEvent)
    assert "RUN_FINISHED" not in types(events)
    return events[-1]


def test_a_waiting_question_must_be_answered_by_its_own_interrupt(client: TestClient) -> None:
    thread = str(uuid.uuid4())
    run(client, run_input(thread, forwardedProps={"student": "person"}))
    # A new round while the question waits, a cancel, a stale interrupt id: refused, the question still waits.
    assert run_error(run(client, run_input(thread, "next"))).code == "/problems/answer-awaited"
    cancelled = run_error(run(client, run_input(thread, resume=[{"interruptId": "round-1", "status": "cancelled"}])))
    assert cancelled.code == "/problems/answer-awaited" and "cannot be skipped" in cancelled.message
    stale = run_error(run(client, run_input(thread, resume=[
        {"interruptId": "round-7", "status": "resolved", "payload": {"answer": "x"}}])))
    assert stale.code == "/problems/no-answer-awaited" and "round-1" in stale.message
    assert client.get(f"/sessions/{thread}").json()["awaiting_answer"]["round"] == 1
    run(client, run_input(thread, resume=[
        {"interruptId": "round-1", "status": "resolved", "payload": {"answer": "x"}}]))
    again = run_error(run(client, run_input(thread, resume=[
        {"interruptId": "round-1", "status": "resolved", "payload": {"answer": "y"}}])))
    assert again.code == "/problems/no-answer-awaited"
    # Nothing waits: a cancelled resume is moot and the run plays the next round.
    assert run(client, run_input(thread, resume=[{"interruptId": "round-1", "status": "cancelled"}],
                                 forwardedProps={"student": "model"}))[-1].result["round"] == 2


def test_an_llm_failure_is_run_error_with_the_problem_type_and_the_session_is_unchanged(
        client: TestClient, fake_llm: FakeOpenAI) -> None:
    thread = str(uuid.uuid4())
    run(client, run_input(thread))
    fake_llm.fail_next(Fault("status", 500), times=2)  # the first call and its one retry
    events = run(client, run_input(thread))
    error = run_error(events)
    assert types(events) == ["RUN_STARTED", "CUSTOM", "STATE_SNAPSHOT", "STEP_STARTED", "RUN_ERROR"]
    assert error.code == "/problems/llm-upstream" and error.message
    problem = (error.metadata or {})["problem"]
    assert (problem["status"], problem["type"], problem["trace_id"]) == (502, error.code, events[1].value["trace_id"])
    assert client.get(f"/sessions/{thread}").json()["rounds_played"] == 1
    assert run(client, run_input(thread))[-1].result["round"] == 2  # the failed round left no trace


@pytest.mark.parametrize(("body", "field"), [
    ({"threadId": "not a session id"}, ["body", "threadId"]),
    ({"forwardedProps": {"difficulty": "impossible"}}, ["body", "forwardedProps", "difficulty"]),
    ({"state": {"student": "teacher"}}, ["body", "state", "student"]),
    ({"resume": [{"interruptId": "round-1", "status": "resolved", "payload": {"answer": " "}}]},
     ["body", "resume", 0, "resolved", "payload", "answer"]),
    ({"resume": [{"interruptId": "round-1", "status": "resolved"}]}, ["body", "resume", 0, "resolved", "payload"]),
    ({"messages": "hello"}, ["body", "messages"]),
])
def test_invalid_input_is_a_422_before_any_event(client: TestClient, body: dict, field: list) -> None:
    r = client.post("/ag-ui", json={**run_input(), **body})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert field in [e["loc"] for e in r.json()["errors"]], r.json()


def test_same_auth_as_ask_and_a_body_limit_that_fits_long_threads(make_client) -> None:
    client = make_client(api_keys="k-ag-ui-1", ag_ui_max_body_bytes=128 * 1024)
    body = run_input()
    assert client.post("/ag-ui", json=body).status_code == 401
    assert client.post("/ag-ui", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert run(client, body, {"authorization": "Bearer k-ag-ui-1"})[-1].result["round"] == 1
    # A client sends the whole conversation every run: 50 earlier rounds of five messages (~110 KB) are over
    # /ask's MAX_BODY_BYTES (16 KiB) and fine here; past AG_UI_MAX_BODY_BYTES it is 413, naming the setting.
    said = [{"id": str(uuid.uuid4()), "role": "assistant", "name": "Teacher", "content": "q" * 350}
            for _ in range(250)]
    long_thread = run_input(body["threadId"], messages=said)
    assert 64 * 1024 < len(json.dumps(long_thread)) < 128 * 1024
    assert run(client, long_thread, {"x-api-key": "k-ag-ui-1"})[-1].result["round"] == 2
    too_long = run_input(body["threadId"], messages=said * 2)
    refused = client.post("/ag-ui", json=too_long, headers={"x-api-key": "k-ag-ui-1"})
    assert refused.status_code == 413 and "AG_UI_MAX_BODY_BYTES" in refused.json()["detail"]
    assert client.post("/ask", json={"message": "x" * 17_000}, headers={"x-api-key": "k-ag-ui-1"}).status_code == 413


def latest(points: list[MetricPoint]) -> list[MetricPoint]:
    """Each series' latest point (a series: the metric's name, its attributes and its resource). OTLP metric
    exports are cumulative by default: every export repeats the total so far, so points of several exports
    must not be summed — that counts the same events once per export."""
    last: dict[tuple[str, str, str], MetricPoint] = {}
    for point in points:
        key = (point.name, json.dumps(point.attributes, sort_keys=True), json.dumps(point.resource, sort_keys=True))
        if key not in last or point.time_ns >= last[key].time_ns:
            last[key] = point
    return list(last.values())


def test_the_same_telemetry_as_ask(client: TestClient, fake_llm: FakeOpenAI, telemetry_env: OTLPReceiver) -> None:
    events = run(client, run_input())
    trace_id = events[1].value["trace_id"]
    names = {"POST /ag-ui", "invoke_workflow quiz", "invoke_agent teacher", "invoke_agent student"}
    assert telemetry_env.wait_for(lambda: {s.name for s in telemetry_env.trace(trace_id)} >= names)
    fake_llm.fail_next(Fault("status", 500), times=2)
    failed = run(client, run_input())
    failed_trace = failed[1].value["trace_id"]

    def server_span() -> Any:
        return next((s for s in telemetry_env.trace(failed_trace) if s.name == "POST /ag-ui"), None)

    span = telemetry_env.wait_for(server_span)
    assert span.attributes["error.type"] == "upstream" and span.attributes["http.response.status_code"] == 200

    def errors_on_route() -> float:
        return sum(p.value for p in latest(telemetry_env.metric_points())
                   if p.name == "quiz.errors" and p.attributes.get("http.route") == "/ag-ui")

    assert telemetry_env.wait_for(lambda: errors_on_route() == 1)


def test_the_endpoint_is_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/ag-ui"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/QuizRunInput")
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"401", "413", "422"} <= set(operation["responses"])


STEP_TOOLS = {"teacher.ask": "Question", "reviewer.review": "Review", "student.answer": "StudentAnswer",
              "teacher.grade": "Grade"}  # each step's one LLM call, by the structured-output tool it forces


def test_each_step_is_announced_while_its_llm_call_is_in_flight(client: TestClient, fake_llm: FakeOpenAI) -> None:
    """STEP_STARTED reaches the client before the step's LLM call is answered, STEP_FINISHED after it (a
    client can show who is at work)."""
    fake_llm.latency_s = 0.3
    arrived: dict[tuple[str, str], float] = {}
    with running(client, run_input()) as events:
        for event in events:
            if isinstance(event, StepStartedEvent | StepFinishedEvent):
                arrived[event.type.value, event.step_name] = time.monotonic()
    assert set(arrived) == {(kind, step) for kind in ("STEP_STARTED", "STEP_FINISHED") for step in STEP_TOOLS}
    for step, tool in STEP_TOOLS.items():
        (call,) = fake_llm.requests_for(tool)
        # No guessed bound: the fake server answers latency_s after the request reached it, at the earliest
        # (``received_at`` is taken before its sleep, on the test's own monotonic clock). A STEP_STARTED held
        # back with the step's other events would arrive after that moment; a step cannot finish before it.
        answered = call.received_at + fake_llm.latency_s
        assert arrived["STEP_STARTED", step] < answered <= arrived["STEP_FINISHED", step], (
            step, arrived["STEP_STARTED", step] - answered, arrived["STEP_FINISHED", step] - answered)


def test_limits_are_run_errors_with_retry_after(make_client) -> None:
    """Past MAX_CONCURRENT_ROUNDS a run is shed at once (overloaded), and a second run of the same thread
    while one plays is refused (round-in-progress): both with the problem's retry_after."""
    client = make_client(max_concurrent_rounds=1)
    thread = str(uuid.uuid4())
    with running(client, run_input(thread)) as playing:
        held(playing)
        shed = run_error(run(client, run_input()))
        assert shed.code == "/problems/overloaded" and (shed.metadata or {})["problem"]["retry_after"] == 1
        assert list(playing)[-1].result["round"] == 1
    roomy = make_client(max_concurrent_rounds=4)
    with running(roomy, run_input(thread)) as playing:
        held(playing)
        busy = run_error(run(roomy, run_input(thread)))
        assert busy.code == "/problems/round-in-progress" and (busy.metadata or {})["problem"]["retry_after"] == 2
        assert list(playing)[-1].result["round"] == 1  # another app, another (in-memory) store
    assert client.app_state["rounds"].in_flight == roomy.app_state["rounds"].in_flight == 0


def held(events: Iterator[Any]) -> None:
    """Read a run's events up to its first ``STATE_SNAPSHOT``: the run has taken its place among
    ``MAX_CONCURRENT_ROUNDS`` and its thread's lease before it sends the snapshot (``app/http/ag_ui.py``,
    ``_run``), and holds both until its stream ends — the stream stays open, so the run still plays."""
    assert next((e for e in events if isinstance(e, StateSnapshotEvent)), None) is not None, "no STATE_SNAPSHOT"


def test_a_run_closed_early_plays_on_and_the_same_input_resumes_it(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(max_concurrent_rounds=1)
    rounds = client.app_state["rounds"]
    fake_llm.latency_s = 0.3
    thread = str(uuid.uuid4())
    body = run_input(thread)
    with running(client, body) as events:
        seen = [next(events) for _ in range(5)]  # RUN_STARTED, trace, STATE_SNAPSHOT, STEP_STARTED, TEXT_MESSAGE_START
        assert rounds.in_flight == 1  # the run holds its place
    assert fake_llm.requests_for("Grade") == []
    # The client went away (a dropped connection, or HttpAgent's abortRun): the run plays on to its end.
    wait_until(lambda: rounds.in_flight == 0, 5, "the run ended and released its place")
    assert len(fake_llm.requests_for("Grade")) == 1
    # The same input again, with the last id seen: the events missed, once and in order, and no second round.
    rest = run(client, body, {"last-event-id": "1.5"})
    assert len(fake_llm.requests_for("Grade")) == 1
    kinds = types(seen + rest)
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED" and kinds.count("RUN_STARTED") == 1
    assert rest[-1].result["round"] == 1 and rest[-1].run_id == body["runId"]
    fake_llm.latency_s = 0.0
    assert run(client, run_input(thread))[-1].result["round"] == 2
