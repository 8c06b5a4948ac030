"""Spans and metrics as they arrive at a real OTLP/gRPC receiver (what the Collector would get)."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind

from tests.conftest import CANARY_KEY
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import SPANS_PER_ROUND, OTLPReceiver, Span


def round_trace(otlp: OTLPReceiver, trace_id: str, expected_spans: int = SPANS_PER_ROUND) -> list[Span]:
    return otlp.wait_for(lambda: (s := otlp.trace(trace_id)) and len(s) >= expected_spans and s)


def failed_round_trace(otlp: OTLPReceiver, trace_id: str) -> dict[str, list[Span]]:
    """The spans of a round that failed at the Teacher's first step, once all have arrived: the server span
    ends last, and may come in a later export batch than the rest."""
    wanted = {"POST /ask", "invoke_workflow quiz", "invoke_agent teacher", "chat gpt-5.2-chat"}
    return otlp.wait_for(lambda: wanted <= set(names := by_name(otlp.trace(trace_id))) and names)


def by_name(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_one_request_is_one_trace_with_the_graph_and_llm_calls_beneath_the_server_span(
        client: TestClient, telemetry_env: OTLPReceiver, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Grade", verdict="partially_correct")
    body = client.post("/ask", json={"subject": "math", "difficulty": "hard"}).json()

    spans = round_trace(telemetry_env, body["trace_id"])
    names = by_name(spans)
    assert sorted(names) == ["POST /ask", "chat gpt-5.2-chat", "execute_task review_loop",
                             "execute_task reviewer_review", "execute_task student_answer",
                             "execute_task teacher_ask", "execute_task teacher_grade", "invoke_agent quiz",
                             "invoke_agent reviewer", "invoke_agent student", "invoke_agent teacher",
                             "invoke_workflow quiz", "quiz.workflow"]
    (server,) = names["POST /ask"]
    (workflow,) = names["invoke_workflow quiz"]
    (graph,) = names["invoke_agent quiz"]  # the LangChain instrumentation's, around the LangGraph run
    (run,) = names["quiz.workflow"]
    nodes = {n: v[0] for n, v in names.items() if n.startswith("execute_task ") and n != "execute_task review_loop"}
    assert len(nodes) == 4 and all(len(names[n]) == 1 for n in nodes)
    agents = names["invoke_agent teacher"] + names["invoke_agent reviewer"] + names["invoke_agent student"]
    chats = names["chat gpt-5.2-chat"]
    assert (server.kind, workflow.kind, len(agents), len(chats)) == ("SERVER", "INTERNAL", 4, 4)
    assert {a.kind for a in agents} == {"INTERNAL"} and {c.kind for c in chats} == {"CLIENT"}
    # One LLM span per call (openai-v2's), none from the LangChain instrumentation.
    assert [s for s in spans if s.kind == "CLIENT"] == chats
    assert {c.scope for c in chats} != {"opentelemetry.instrumentation.langchain"}

    # Parentage: server → workflow → the graph run → a node per step → its agent step → its LLM call.
    assert server.parent_span_id == ""
    assert workflow.parent_span_id == server.span_id
    assert (graph.parent_span_id, run.parent_span_id) == (workflow.span_id, graph.span_id)
    assert {n.parent_span_id for n in nodes.values()} == {run.span_id}
    step_node = {"ask": "teacher_ask", "review": "reviewer_review", "answer": "student_answer",
                 "grade": "teacher_grade"}
    for agent in agents:
        assert agent.parent_span_id == nodes[f"execute_task {step_node[agent.attributes['quiz.step']]}"].span_id
    assert sorted(c.parent_span_id for c in chats) == sorted(a.span_id for a in agents)
    steps = [a.attributes["quiz.step"] for a in sorted(agents, key=lambda s: s.start_ns)]
    assert steps == ["ask", "review", "answer", "grade"]
    (loop,) = names["execute_task review_loop"]  # the review's edge: back to the Teacher, or on
    # The graph's drawing on its span (drawn once per process, graphs.graph._draw_once): the table's nodes.
    assert list(graph.attributes["gen_ai.workflow.nodes"]) == ["teacher_ask", "reviewer_review", "student_answer",
                                                             "teacher_grade"]
    assert "reviewer_review -> teacher_ask" in graph.attributes["gen_ai.workflow.edges"]
    assert loop.parent_span_id == nodes["execute_task reviewer_review"].span_id
    # No content from the LangChain instrumentation either (the graph state holds the reference answer).
    content = ("traceloop.entity.input", "traceloop.entity.output", "gen_ai.task.input", "gen_ai.task.output",
               "gen_ai.input", "gen_ai.output", "gen_ai.system_instructions")
    assert not [k for s in spans for k in s.attributes if k.startswith(content)]

    # The stable HTTP names, which the azuremonitor exporter maps to `requests`; not the old ones, which it
    # would only copy into customDimensions (OTEL_SEMCONV_STABILITY_OPT_IN=http, not http/dup).
    assert server.attributes["http.request.method"] == "POST" and server.attributes["http.route"] == "/ask"
    assert server.attributes["http.response.status_code"] == 200
    assert not {"http.method", "http.status_code", "http.target", "http.url"} & set(server.attributes)

    # GenAI semantic conventions.
    for chat in chats:
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "gpt-5.2-chat"
        # One conversation end to end: the spans that carry tokens name the session too.
        assert chat.attributes["gen_ai.conversation.id"] == body["session_id"]
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    for agent in agents:
        assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert agent.attributes["gen_ai.agent.name"] in {"teacher", "reviewer", "student"}
        assert agent.attributes["gen_ai.conversation.id"] == body["session_id"]
        assert agent.attributes["quiz.round"] == 1
    assert workflow.attributes["gen_ai.conversation.id"] == body["session_id"]
    assert workflow.attributes["quiz.subject"] == "math"
    assert workflow.attributes["quiz.difficulty"] == "hard"
    assert workflow.attributes["quiz.verdict"] == "partially_correct"
    assert workflow.attributes["gen_ai.usage.input_tokens"] == body["usage"]["input_tokens"]
    # One provider per call: the workflow, the graph run, its agents and their chat spans agree.
    assert {s.attributes["gen_ai.provider.name"] for s in spans if "gen_ai.operation.name" in s.attributes} \
        == {"openai"}

    # The Teacher's grade is an evaluation of the Student's answer (GenAI gen_ai.evaluation.result event),
    # attached to the span of the step it judges.
    (grade,) = telemetry_env.wait_for(lambda: [e for e in telemetry_env.events("gen_ai.evaluation.result")
                                               if e.trace_id == body["trace_id"]])
    (student,) = names["invoke_agent student"]
    assert grade.span_id == student.span_id
    assert grade.attributes["gen_ai.evaluation.name"] == "correctness"
    assert grade.attributes["gen_ai.evaluation.score.label"] == "partially_correct"
    assert grade.attributes["gen_ai.evaluation.score.value"] == 0.5
    assert grade.attributes["gen_ai.conversation.id"] == body["session_id"]
    assert "gen_ai.evaluation.explanation" not in grade.attributes  # content: off unless captured
    assert grade.resource["service.name"] == "question-app"

    # Resource: the standard variables are honoured.
    assert server.resource["service.name"] == "question-app"
    assert server.resource["service.namespace"] == "otel-app"
    assert server.resource["deployment.environment.name"] == "test"
    assert server.resource["service.version"]


def test_the_langchain_instrumentation_builds_no_llm_span_to_drop(client: TestClient) -> None:
    """openai-v2 traces each LLM call; the LangChain instrumentation's LLM spans would be built (their JSON
    attributes, their metrics) only to be dropped: its handler does not build them (telemetry.sdk.LangChainRuns)."""
    started: list[tuple[str | None, SpanKind]] = []

    class Seen(SpanProcessor):
        def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
            scope = span.instrumentation_scope
            started.append((scope.name if scope else None, span.kind))

    client.app_state["rounds"].quiz.telemetry.tracer_provider.add_span_processor(Seen())
    assert client.post("/ask", json={"subject": "math"}).status_code == 200
    langchain = [kind for scope, kind in started if scope == "opentelemetry.instrumentation.langchain"]
    assert langchain and SpanKind.CLIENT not in langchain  # its graph spans, and no LLM span
    clients = [scope for scope, kind in started if kind == SpanKind.CLIENT]
    assert len(clients) == 4 and "opentelemetry.instrumentation.langchain" not in clients  # openai-v2's, one a call


def test_metrics_arrive_with_bounded_labels(client: TestClient, telemetry_env: OTLPReceiver,
                                            fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Grade", verdict="correct")
    played = [client.post("/ask", json={"subject": "A very particular topic nobody else asks about"}).json(),
              client.post("/ask", json={"subject": "science"}).json()]
    wanted = {"http.server.request.duration", "http.server.active_requests", "gen_ai.client.operation.duration",
              "gen_ai.client.token.usage", "quiz.rounds", "quiz.agent.step.duration", "process.cpu.time",
              "process.memory.usage"}

    def subjects() -> set[str]:
        return {p.attributes["quiz.subject"] for p in telemetry_env.metric_points() if p.name == "quiz.rounds"}

    telemetry_env.wait_for(lambda: wanted <= telemetry_env.metric_names() and len(subjects()) == 2)
    points = telemetry_env.metric_points()

    units = {p.name: p.unit for p in points}
    assert units["http.server.request.duration"] == "s"
    assert units["gen_ai.client.operation.duration"] == "s"
    assert units["gen_ai.client.token.usage"] == "{token}"
    assert units["quiz.agent.step.duration"] == "s"
    token_types = {p.attributes.get("gen_ai.token.type") for p in points if p.name == "gen_ai.client.token.usage"}
    assert token_types == {"input", "output"}
    rounds = [p for p in points if p.name == "quiz.rounds"]
    assert {p.attributes["quiz.subject"] for p in rounds} == {"other", "science"}  # free text is not a label
    assert {p.attributes["quiz.verdict"] for p in rounds} == {"correct"}
    steps = {(p.attributes["gen_ai.agent.name"], p.attributes["quiz.step"]) for p in points
             if p.name == "quiz.agent.step.duration"}
    assert steps == {("teacher", "ask"), ("reviewer", "review"), ("student", "answer"), ("teacher", "grade")}
    labels = json.dumps([p.attributes for p in points])
    for body in played:  # no session id or trace id is ever a label
        assert body["session_id"] not in labels and body["trace_id"] not in labels


def test_no_secret_and_no_content_in_telemetry_by_default(client: TestClient, telemetry_env: OTLPReceiver,
                                                          fake_llm: FakeOpenAI, caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    caplog.set_level(logging.DEBUG)
    fake_llm.script("Question", question="Content-canary question?", reference_answer="content-canary-answer")
    body = client.post("/ask", json={"subject": "math"}).json()
    fake_llm.fail_next(Fault("status", 401))
    client.post("/ask", json={"subject": "math"})
    spans = round_trace(telemetry_env, body["trace_id"])
    telemetry_env.wait_for(lambda: "quiz.rounds" in telemetry_env.metric_names())

    everything = json.dumps([[s.name, s.attributes, s.resource] for s in telemetry_env.spans()]
                            + [[p.attributes, p.resource] for p in telemetry_env.metric_points()])
    assert CANARY_KEY not in everything
    assert CANARY_KEY not in caplog.text
    assert "content-canary" not in everything  # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT unset
    assert all("gen_ai.input.messages" not in s.attributes for s in spans)


def test_content_capture_is_a_switch(make_client, telemetry_env: OTLPReceiver, fake_llm: FakeOpenAI,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    client = make_client()
    fake_llm.script("Question", question="Captured question?", reference_answer="forty-two")
    body = client.post("/ask", json={"subject": "math"}).json()
    chats = [s for s in round_trace(telemetry_env, body["trace_id"]) if s.kind == "CLIENT"]
    assert any("Captured question?" in str(s.attributes.get("gen_ai.input.messages", "")) for s in chats)
    assert CANARY_KEY not in json.dumps([s.attributes for s in chats])


def test_a_failed_round_is_marked_on_its_spans_and_counted(client: TestClient, telemetry_env: OTLPReceiver,
                                                           fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("status", 429, {"Retry-After": "1"}), times=2)
    r = client.post("/ask", json={"subject": "math"})
    assert r.status_code == 503
    trace_id = r.json()["trace_id"]
    # server, workflow, the Teacher's step and its one LLM span (the client's retry is inside that call)
    spans = failed_round_trace(telemetry_env, trace_id)
    (workflow,) = spans["invoke_workflow quiz"]
    assert workflow.status_code == 2 and workflow.attributes["error.type"] == "rate_limited"
    assert spans["POST /ask"][0].attributes["http.response.status_code"] == 503
    assert all(c.status_code == 2 for c in spans["chat gpt-5.2-chat"])
    errors = telemetry_env.wait_for(lambda: [p for p in telemetry_env.metric_points() if p.name == "quiz.errors"])
    assert {(p.attributes["error.type"], p.attributes["http.route"]) for p in errors} == {("rate_limited", "/ask")}
    # An exception event on the failed spans is what App Insights turns into `exceptions` rows.
    assert any(e.name == "exception" for c in spans["chat gpt-5.2-chat"] + spans["invoke_agent teacher"]
               for e in c.events)
    assert not telemetry_env.events("gen_ai.evaluation.result")  # nothing was graded


def test_a_failed_streamed_round_is_a_failed_request_on_its_server_span(
        client: TestClient, telemetry_env: OTLPReceiver, fake_llm: FakeOpenAI) -> None:
    """The stream answered 200 before the round failed: the server span and quiz.errors still say it failed."""
    fake_llm.fail_next(Fault("status", 500), times=2)
    with client.stream("POST", "/ask", json={"subject": "math"}, headers={"Accept": "text/event-stream"}) as r:
        text = "".join(r.iter_text())
    assert r.status_code == 200 and "event: error" in text
    trace_id = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])["trace_id"]
    spans = failed_round_trace(telemetry_env, trace_id)
    (server,) = spans["POST /ask"]
    assert server.attributes["http.response.status_code"] == 200
    assert server.status_code == 2 and server.attributes["error.type"] == "upstream"
    errors = telemetry_env.wait_for(lambda: [p for p in telemetry_env.metric_points() if p.name == "quiz.errors"])
    assert {(p.attributes["error.type"], p.attributes["http.route"]) for p in errors} == {("upstream", "/ask")}


def test_the_grades_explanation_is_content_and_follows_the_capture_switch(
        make_client, telemetry_env: OTLPReceiver, fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    fake_llm.script("Grade", verdict="incorrect", feedback="Close, but 7 × 8 is 56.")
    body = make_client().post("/ask", json={}).json()
    (grade,) = telemetry_env.wait_for(lambda: [e for e in telemetry_env.events("gen_ai.evaluation.result")
                                               if e.trace_id == body["trace_id"]])
    assert grade.attributes["gen_ai.evaluation.explanation"] == body["feedback"] == "Close, but 7 × 8 is 56."
    assert (grade.attributes["gen_ai.evaluation.score.label"], grade.attributes["gen_ai.evaluation.score.value"]) \
        == ("incorrect", 0.0)


def test_incoming_trace_context_is_continued(client: TestClient, telemetry_env: OTLPReceiver) -> None:
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = client.post("/ask", json={}, headers={"traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"})
    assert r.json()["trace_id"] == parent_trace


@pytest.mark.parametrize("collector", ["down", "slow"])
def test_a_collector_that_is_down_or_slow_never_slows_ask(make_client, telemetry_env: OTLPReceiver,
                                                          monkeypatch: pytest.MonkeyPatch, collector: str) -> None:
    if collector == "down":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    else:
        telemetry_env.delay_s = 3.0
    client = make_client()
    client.post("/ask", json={})  # warm up
    durations = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.post("/ask", json={}).status_code == 200
        durations.append(time.perf_counter() - started)
    assert max(durations) < 1.0, durations


def test_shutdown_flushes_pending_spans_events_and_metrics(make_client, telemetry_env: OTLPReceiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing would be exported for a minute: only the shutdown flush can deliver these.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "60000")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    client = make_client()
    trace_id = client.post("/ask", json={}).json()["trace_id"]
    time.sleep(0.5)
    assert telemetry_env.trace(trace_id) == []
    assert trace_id not in [e.trace_id for e in telemetry_env.events("gen_ai.evaluation.result")]
    client.__exit__(None, None, None)  # lifespan shutdown, as on SIGTERM
    assert len(telemetry_env.trace(trace_id)) == SPANS_PER_ROUND
    assert trace_id in [e.trace_id for e in telemetry_env.events("gen_ai.evaluation.result")]
    assert "quiz.rounds" in telemetry_env.metric_names()


def test_sdk_disabled_exports_nothing_and_still_plays(make_client, telemetry_env: OTLPReceiver,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "test.case=sdk-disabled")  # (late exports of other tests differ)
    client = make_client()
    body = client.post("/ask", json={}).json()
    assert body["round"] == 1 and body["trace_id"] is None
    client.__exit__(None, None, None)
    time.sleep(0.5)
    mine = [x for x in telemetry_env.spans() + telemetry_env.metric_points() if "test.case" in x.resource]
    assert mine == []


def test_shutdown_is_bounded_when_the_collector_is_unreachable(make_client, telemetry_env: OTLPReceiver,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    budget = 1.5
    client = make_client(telemetry_shutdown_timeout_s=budget)
    for _ in range(3):
        assert client.post("/ask", json={}).status_code == 200
    started = time.perf_counter()
    client.__exit__(None, None, None)
    # The budget, plus 1.5 s for the rest of the lifespan's shutdown on a busy 2-core machine; without the
    # bound it would take OTEL_EXPORTER_OTLP_TIMEOUT (10 s) or more.
    assert time.perf_counter() - started < budget + 1.5


def test_the_newest_app_in_a_process_owns_the_instrumentation(make_client, telemetry_env: OTLPReceiver,
                                                               fake_llm: FakeOpenAI) -> None:
    """Instrumentors are process-wide: an app built before (and never started or shut down) must not keep
    the LLM and LangGraph spans of the next one, and a closed app must not take them away from it."""
    from app.http.factory import create_app
    from tests.conftest import settings_for

    idle = create_app(settings_for(fake_llm))  # built, never started: instrumented first
    first = make_client()
    second = make_client()
    first.__exit__(None, None, None)  # the older app shuts down while the newer one serves
    body = second.post("/ask", json={}).json()
    spans = round_trace(telemetry_env, body["trace_id"])
    assert len(spans) == SPANS_PER_ROUND
    ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in ids for s in spans if s.name != "POST /ask")  # one tree, nothing lost
    idle.state.telemetry.shutdown(0.5)  # (owns nothing any more: the serving app's spans are unaffected)
    body = second.post("/ask", json={}).json()
    assert len(round_trace(telemetry_env, body["trace_id"])) == SPANS_PER_ROUND


def test_the_standard_variable_turns_the_graph_spans_off(make_client, telemetry_env: OTLPReceiver,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=langchain: 7 spans and some CPU less per round (docs)."""
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "langchain")
    body = make_client().post("/ask", json={}).json()
    round_trace(telemetry_env, body["trace_id"], SPANS_PER_ROUND - 7)
    time.sleep(0.5)  # (more would have arrived by now, in the same export batch)
    spans = by_name(telemetry_env.trace(body["trace_id"]))
    assert sorted(spans) == ["POST /ask", "chat gpt-5.2-chat", "invoke_agent reviewer", "invoke_agent student",
                             "invoke_agent teacher", "invoke_workflow quiz"]
    (workflow,) = spans["invoke_workflow quiz"]
    assert {a.parent_span_id for name in ("teacher", "reviewer", "student") for a in spans[f"invoke_agent {name}"]} \
        == {workflow.span_id}


def test_feedback_on_a_round_is_an_evaluation_attached_to_that_rounds_trace(
        make_client, telemetry_env: OTLPReceiver, fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()
    fake_llm.script("Grade", verdict="incorrect")
    body = client.post("/ask", json={}).json()
    sid = body["session_id"]
    rated = client.post(f"/sessions/{sid}/rounds/1/feedback",
                        json={"rating": "down", "comment": "content-canary: my answer was right"})
    assert rated.status_code == 204, rated.text

    def feedback() -> list:
        return [e for e in telemetry_env.events("gen_ai.evaluation.result")
                if e.attributes["gen_ai.evaluation.name"] == "user_feedback"]

    (event,) = telemetry_env.wait_for(feedback)
    spans = round_trace(telemetry_env, body["trace_id"])
    (grading,) = [s for s in spans if s.attributes.get("quiz.step") == "grade"]
    assert (event.trace_id, event.span_id) == (body["trace_id"], grading.span_id)  # the round's own trace
    assert event.attributes["gen_ai.evaluation.score.label"] == "down"
    assert event.attributes["gen_ai.evaluation.score.value"] == 0.0
    assert (event.attributes["quiz.verdict"], event.attributes["quiz.round"]) == ("incorrect", 1)
    assert event.attributes["gen_ai.conversation.id"] == sid
    assert "content-canary" not in json.dumps(event.attributes)  # a comment is content: off by default
    counted = telemetry_env.wait_for(lambda: [p for p in telemetry_env.metric_points() if p.name == "quiz.feedback"])
    assert {(p.attributes["quiz.rating"], p.attributes["quiz.verdict"], p.value) for p in counted} \
        == {("down", "incorrect", 1)}

    unknown_round = client.post(f"/sessions/{sid}/rounds/2/feedback", json={"rating": "up"})
    assert (unknown_round.status_code, unknown_round.json()["type"]) == (404, "/problems/round-not-found")
    unknown_session = client.post(f"/sessions/{'Q' * 22}/rounds/1/feedback", json={"rating": "up"})
    assert (unknown_session.status_code, unknown_session.json()["type"]) == (404, "/problems/session-not-found")
    for bad in ({"rating": "meh"}, {}, {"rating": "up", "comment": "x" * 1001}, {"rating": "up", "extra": 1}):
        assert client.post(f"/sessions/{sid}/rounds/1/feedback", json=bad).status_code == 422, bad

    # With content capture on, the comment is the evaluation's explanation.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    assert client.post(f"/sessions/{sid}/rounds/1/feedback",
                       json={"rating": "up", "comment": "On second thought, fair."}).status_code == 204
    explained = telemetry_env.wait_for(lambda: [e for e in feedback() if "gen_ai.evaluation.explanation"
                                                in e.attributes])
    assert explained[0].attributes["gen_ai.evaluation.explanation"] == "On second thought, fair."
