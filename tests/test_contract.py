"""The service emits exactly what docs/telemetry.md promises (names, kinds, parents, units, labels)."""

from __future__ import annotations

import concurrent.futures
import re
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import QuizError
from graphs import agents
from telemetry import contract
from tests.fakes import wait_until
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import SPANS_PER_ROUND, LogRecord, OTLPReceiver, Span
from tests.promnames import prometheus_name

DOC = (Path(__file__).resolve().parents[1] / "docs" / "telemetry.md").read_text()
INSTRUMENT_KIND = {"histogram": ("histogram", None), "counter": ("sum", True), "updowncounter": ("sum", False),
                   "gauge": ("gauge", None)}


def table(marker: str) -> list[list[str]]:
    block = DOC.split(f"<!-- {marker} -->", 1)[1].strip().split("\n\n", 1)[0]
    rows = [r for r in block.splitlines() if r.startswith("|")][2:]
    return [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]


def code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


EVENTS = {(code(r[0])[0], re.findall(r"`gen_ai.evaluation.name`=`(\w+)`", r[3])[0]): r for r in table("events")}
NODES = [step.node_name for step in agents.steps()]  # the graph's nodes: the agent table's steps
ON_REQUEST = {f"execute_task {step.node_name}" for step in agents.steps() if step.when is not None}  # the Tutor's
SPANS = {name.replace("{gen_ai.request.model}", "gpt-5.2-chat"): r for r in table("spans")
         for name in ([code(r[0])[0].replace("{node}", n) for n in NODES] if "{node}" in r[0] else [code(r[0])[0]])}
METRICS = {code(r[0])[0]: r for r in table("metrics")}
# Spans only a person's rounds have (their rows say so first), and those of a round the Student agent answers.
PERSON_ONLY = {name for name, r in SPANS.items() if r[4].startswith(("(a person's round only", "(a hint request only"))}
MODEL_ROUND = set(SPANS) - PERSON_ONLY - ON_REQUEST
ALSO = set(code(DOC.split("Also emitted by the instrumentations", 1)[1].split("\n\n", 1)[0]))
DROPPED = {"http.server.duration", "http.server.request.size", "http.server.response.size"}


@pytest.fixture
def played(client: TestClient, telemetry_env: OTLPReceiver, fake_llm: FakeOpenAI) -> OTLPReceiver:
    good = client.post("/ask", json={"subject": "math"}).json()
    learner = client.post("/ask", json={"subject": "math", "learner_id": "ana", "difficulty": "adaptive"}).json()
    person = client.post("/ask", json={"subject": "math", "student": "person", "learner_id": "bo"}).json()
    fake_llm.script("Hint", hint="Count on your fingers.")
    hinted = client.post("/ask", json={"session_id": person["session_id"], "hint": True}).json()
    answered = client.post("/ask", json={"session_id": person["session_id"], "answer": "I do not know"}).json()
    assert (hinted["hints_left"], answered["status"]) == (1, "graded")
    fake_llm.fail_next(Fault("status", 500), times=2)  # the Teacher's first call, and its one retry
    failed = client.post("/ask", json={"subject": "math"})
    assert failed.status_code == 502
    assert client.post("/ask", json={"session_id": "Z" * 22}).status_code == 404
    telemetry_env.wait_for(lambda: len(telemetry_env.trace(good["trace_id"])) == SPANS_PER_ROUND)
    rated = client.post(f"/sessions/{good['session_id']}/rounds/1/feedback", json={"rating": "up"})
    assert rated.status_code == 204
    telemetry_env.wait_for(lambda: set(METRICS) <= telemetry_env.metric_names())
    telemetry_env.good_trace = good["trace_id"]  # type: ignore[attr-defined]
    telemetry_env.learner_trace = learner["trace_id"]  # type: ignore[attr-defined]
    telemetry_env.hint_trace = hinted["trace_id"]  # type: ignore[attr-defined]
    telemetry_env.failed_trace = failed.json()["trace_id"]  # type: ignore[attr-defined]
    return telemetry_env


@pytest.mark.parametrize("kind", ["model round", "hint request"])
def test_every_documented_span_is_emitted_with_its_kind_and_parent(played: OTLPReceiver, kind: str) -> None:
    """A round the Student agent answers has every span documented but a person's; a hint request has those a
    person's round adds, the Tutor's node, and no other step's but the answer's, where the round pauses again."""
    if kind == "model round":
        spans = played.trace(played.good_trace)  # type: ignore[attr-defined]
        assert {s.name for s in spans} == MODEL_ROUND
    else:
        spans = played.wait_for(lambda: (found := played.trace(played.hint_trace))  # type: ignore[attr-defined]
                                and "POST /ask" in {s.name for s in found} and found)
        names = {s.name for s in spans}
        assert names <= set(SPANS) and PERSON_ONLY | ON_REQUEST <= names, names ^ set(SPANS)
        assert {n for n in names if n.startswith("execute_task ")} == {
            "execute_task student_answer", "execute_task hint_wanted", "execute_task hint_loop", *ON_REQUEST}
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        _, kind, parent, _, _ = SPANS[span.name]
        assert span.kind == kind, span.name
        parent_names = [p.replace("…", "").strip() for p in code(parent)]
        if span.parent_span_id:
            actual_parent = by_id[span.parent_span_id].name
            assert any(actual_parent.startswith(p) for p in parent_names), (span.name, actual_parent)
        else:
            assert span.name == "POST /ask"


def documented_attributes(span_name: str) -> tuple[set[str], dict[str, set[str]], set[str], dict[str, set[str]]]:
    """(always there, only on a step: {step: attributes}, only on failure, only on some rounds: {"bank item" |
    "learner's round" | "hint": attributes}) from the span's row."""
    always, by_step, on_failure, only = set(), {}, set(), {}
    for part in SPANS[span_name][4].split(";"):
        names = {a.split("=")[0] for a in code(part) if "." in a}
        assert not {n for n in names if n.endswith("*")}, f"{span_name}: name every attribute"
        if part.strip().startswith("on failure"):
            on_failure |= names
        elif (kind := re.match(r"\s*for an? (bank item|learner's round|hint)", part)) is not None:
            only[kind.group(1)] = names  # tested on such rounds (test_a_bank_round…, test_a_learners_round…)
        elif (step := re.search(r" on `(\w+)`", part)) is not None:
            by_step[step.group(1)] = names
        else:
            always |= names
    return always, by_step, on_failure, only


def test_documented_span_attributes_are_present(played: OTLPReceiver) -> None:
    """Every documented attribute is on every successful span it is documented for, nothing exempted; a round
    the Teacher asked has none of a bank item's, a hint's or a learner's; a hint request has a hint's."""
    hinted = played.trace(played.hint_trace)  # type: ignore[attr-defined]
    tutor = next(s for s in hinted if s.name == "invoke_agent tutor")
    assert not documented_attributes(tutor.name)[0] - set(tutor.attributes)
    workflow = next(s for s in hinted if s.name == "invoke_workflow quiz")
    assert documented_attributes(workflow.name)[3]["hint"] <= set(workflow.attributes)
    for span in played.trace(played.good_trace):  # type: ignore[attr-defined]
        always, by_step, on_failure, only = documented_attributes(span.name)
        expected = always | by_step.get(span.attributes.get("quiz.step", ""), set())
        assert not expected - set(span.attributes), (span.name, expected - set(span.attributes))
        for step, names in by_step.items():
            if span.attributes.get("quiz.step") != step:
                assert not names & set(span.attributes), (span.name, names)
        assert not on_failure.union(*only.values()) & set(span.attributes), span.name


def test_a_bank_round_carries_its_item_and_both_grades(make_client, telemetry_env: OTLPReceiver,
                                                      fake_llm: FakeOpenAI) -> None:
    """A question bank's round: the workflow span names the item, the grading span the check that gave the
    verdict and the Teacher's own grade beside it, and quiz.rounds counts it as the bank's."""
    client = make_client(question_source="bank")
    fake_llm.script("StudentAnswer", answer="I do not know")  # wrong by the item's check
    fake_llm.script("Grade", verdict="correct", feedback="Well done.")  # the Teacher says otherwise
    played = client.post("/ask", json={"subject": "math", "difficulty": "easy", "language": "en"}).json()
    assert (played["source"], played["verdict"], played["teacher_verdict"]) == ("bank", "incorrect", "correct")
    def spans() -> dict[str, Span]:
        return {s.name if s.name != "invoke_agent teacher" else f"teacher {s.attributes.get('quiz.step')}": s
                for s in telemetry_env.trace(played["trace_id"])}
    found = telemetry_env.wait_for(lambda: {"invoke_workflow quiz", "teacher grade"} <= set(now := spans()) and now)
    assert "teacher ask" not in found  # the bank's question: the Teacher wrote none
    workflow, grade = found["invoke_workflow quiz"], found["teacher grade"]
    assert documented_attributes(workflow.name)[3]["bank item"] <= set(workflow.attributes)
    assert documented_attributes(grade.name)[3]["bank item"] <= set(grade.attributes)
    assert (workflow.attributes["quiz.question.source"], workflow.attributes["quiz.question.item"]) \
        == ("bank", played["item_id"])
    assert (grade.attributes["quiz.verdict"], grade.attributes["quiz.grade.teacher_verdict"],
            grade.attributes["quiz.grade.check"]) == ("incorrect", "correct", played["checked_by"])
    telemetry_env.wait_for(lambda: any(p.name == "quiz.rounds" and p.attributes.get("quiz.question.source") == "bank"
                                       for p in telemetry_env.metric_points()))


def test_a_learners_round_says_its_kind_and_how_its_difficulty_was_chosen_never_who(played: OTLPReceiver) -> None:
    learner_trace = played.learner_trace  # type: ignore[attr-defined]
    spans = played.wait_for(lambda: (found := {s.name: s for s in played.trace(learner_trace)})
                            and "invoke_workflow quiz" in found and found)
    workflow = spans["invoke_workflow quiz"]
    assert (workflow.attributes["quiz.round.kind"], workflow.attributes["quiz.difficulty.chosen_by"]) \
        == ("new", "adaptive")
    documented = documented_attributes(workflow.name)[3]["learner's round"]
    assert documented == {"quiz.round.kind", "quiz.difficulty.chosen_by"}
    assert not any("ana" in str(v) for s in spans.values() for v in s.attributes.values())
    (point,) = [p for p in played.metric_points() if p.name == "quiz.learner.rounds"][-1:]
    assert set(point.attributes) == {"quiz.prediction.bin", "quiz.verdict", "quiz.answered_by", "quiz.round.kind",
                                     "quiz.difficulty.chosen_by", "quiz.hints.used"}
    assert point.attributes["quiz.prediction.bin"] in {f"0.{d}" for d in range(10)}


def test_a_persons_answer_round_says_what_its_question_was(make_client, telemetry_env: OTLPReceiver,
                                                          fake_llm: FakeOpenAI) -> None:
    """The request that grades a person's answer plays the rest of the round the asking request began: its
    workflow span names the same bank item, learner round kind and difficulty choice."""
    client = make_client(question_source="bank")
    asked = client.post("/ask", json={"subject": "math", "difficulty": "adaptive", "learner_id": "ana",
                                      "student": "person"}).json()
    graded = client.post("/ask", json={"session_id": asked["session_id"], "answer": "I do not know"}).json()
    def workflow() -> Span | None:
        return next((s for s in telemetry_env.trace(graded["trace_id"]) if s.name == "invoke_workflow quiz"), None)
    span = telemetry_env.wait_for(workflow)
    assert (span.attributes["quiz.question.source"], span.attributes["quiz.question.item"]) == ("bank",
                                                                                               asked["item_id"])
    assert (span.attributes["quiz.round.kind"], span.attributes["quiz.difficulty.chosen_by"]) == ("new", "adaptive")
    assert span.attributes["quiz.difficulty"] == asked["difficulty"] == "easy"


def test_a_failed_round_marks_its_spans_with_documented_error_types(played: OTLPReceiver) -> None:
    failed = played.failed_trace  # type: ignore[attr-defined]
    def marked() -> dict[str, Span]:
        return {s.name: s for s in played.trace(failed) if "error.type" in s.attributes}

    by_name = played.wait_for(lambda: {"invoke_workflow quiz", "invoke_agent teacher"} <= set(found := marked())
                              and found)
    assert by_name["invoke_workflow quiz"].attributes["error.type"] == "upstream"
    workflow_types = set(code(DOC.split("`error.type` on the workflow span ∈", 1)[1].split(";", 1)[0]))
    assert "upstream" in workflow_types and workflow_types <= set(contract.ERROR_TYPES)
    # The agent step that failed names the exception's class (semantic conventions' fallback).
    assert re.fullmatch(r"[A-Z]\w+", by_name["invoke_agent teacher"].attributes["error.type"])
    for name in ("invoke_workflow quiz", "invoke_agent teacher"):
        assert "error.type" in documented_attributes(name)[2]


def test_every_documented_event_is_emitted_under_its_parent_with_its_attributes(played: OTLPReceiver) -> None:
    good = played.good_trace  # type: ignore[attr-defined]
    spans = {s.span_id: s.name for s in played.trace(good)}
    def of_good_round(name: str, evaluation: str) -> list[LogRecord]:
        return [e for e in played.events(name)
                if e.trace_id == good and e.attributes.get("gen_ai.evaluation.name") == evaluation]

    for (name, evaluation), (_, parent, _, attributes) in EVENTS.items():
        (event,) = played.wait_for(partial(of_good_round, name, evaluation))
        assert spans[event.span_id] == code(parent)[0], name
        always = {a.split("=")[0] for a in code(attributes.split("; with content capture")[0])
                  if re.match(r"[a-z_]+\.[a-z_.]+", a)}
        assert always <= set(event.attributes), (name, always - set(event.attributes))
        optional = {a for a in code(attributes.split("; with content capture")[-1]) if re.match(r"[a-z_]+\.", a)}
        assert set(event.attributes) <= always | optional, name
    assert not played.events("gen_ai.evaluation.result") or all(
        e.trace_id != played.failed_trace for e in played.events("gen_ai.evaluation.result"))  # type: ignore[attr-defined]


def test_every_documented_metric_arrives_with_its_instrument_unit_and_labels(played: OTLPReceiver) -> None:
    points = played.metric_points()
    for name, (_, instrument, unit, attributes, _) in METRICS.items():
        mine = [p for p in points if p.name == name]
        assert mine, name
        kind, monotonic = INSTRUMENT_KIND[instrument]
        assert {p.kind for p in mine} == {kind}, name
        if monotonic is not None:
            assert {p.monotonic for p in mine} == {monotonic}, name
        assert {p.unit for p in mine} == {unit.strip("`")}, name
        allowed = {a.split("=")[0] for a in code(attributes) if "." in a or a == "type"}
        if name.startswith("http.") or name.startswith("gen_ai."):
            allowed |= {"server.address", "server.port"}
        for p in mine:
            assert set(p.attributes) <= allowed, (name, set(p.attributes) - allowed)


def test_documented_prometheus_names_follow_the_collector_rules() -> None:
    for name, (_, instrument, unit, _, prom) in METRICS.items():
        assert prometheus_name(name, unit.strip("`"), instrument) == prom.strip("`"), name


def test_nothing_undocumented_and_nothing_dropped_is_emitted(played: OTLPReceiver) -> None:
    received = played.metric_names()
    assert received <= set(METRICS) | ALSO, received - set(METRICS) - ALSO
    assert not received & DROPPED


def test_error_types_on_metrics_are_the_documented_ones(played: OTLPReceiver) -> None:
    errors = played.wait_for(lambda: {p.attributes["error.type"] for p in played.metric_points()
                                      if p.name == "quiz.errors"} >= {"upstream", "session_not_found"} and
                             [p for p in played.metric_points() if p.name == "quiz.errors"])
    assert {p.attributes["error.type"] for p in errors} <= documented_error_types()


def documented_error_types() -> set[str]:
    return {c for c in code(METRICS["quiz.errors"][3]) if "." not in c}


def test_error_types_are_one_set_in_code_and_docs() -> None:
    """Every ``error.type`` the service can emit is in the contract and the docs, and nothing more."""
    from app import errors
    from app.http import problems
    from app.llm import errors as llm_errors  # noqa: F401  (its QuizErrors are counted below)

    producible = {cls.error_type for cls in all_subclasses(errors.QuizError)} | {errors.QuizError.error_type}
    producible |= {error_type for _, error_type, _ in problems._HTTP_PROBLEMS.values()}
    assert producible == set(contract.ERROR_TYPES) == documented_error_types()


def all_subclasses(cls: type[QuizError]) -> set[type[QuizError]]:
    return {sub for direct in cls.__subclasses__() for sub in {direct} | all_subclasses(direct)}


def test_the_subject_list_is_defined_once() -> None:
    from app.messages import DIFFICULTY_WORDS, SUBJECT_WORDS
    from quiz.vocabulary import DIFFICULTIES, OTHER_SUBJECT, SUBJECTS

    assert set(SUBJECT_WORDS) == set(SUBJECTS)
    assert set(DIFFICULTY_WORDS) == set(DIFFICULTIES)
    documented = {v for v in code(DOC.split("`quiz.subject` ∈", 1)[1].split(";", 1)[0])}
    assert documented == {*SUBJECTS, OTHER_SUBJECT}


def error_counts(otlp: OTLPReceiver, case: str) -> dict[str, float]:
    """The latest cumulative ``quiz.errors`` value per ``error.type`` (summed over routes) of the app tagged
    ``test.case=case``."""
    latest: dict[tuple[str, str], tuple[int, float]] = {}
    for p in otlp.metric_points():
        if p.name == "quiz.errors" and p.resource.get("test.case") == case:
            key = (p.attributes["error.type"], p.attributes.get("http.route", ""))
            if p.time_ns >= latest.get(key, (0, 0.0))[0]:
                latest[key] = (p.time_ns, p.value)
    totals: dict[str, float] = {}
    for (error_type, _), (_, value) in latest.items():
        totals[error_type] = totals.get(error_type, 0.0) + value
    return totals


def test_every_failure_is_counted_once_under_its_documented_error_type(
        make_client, fake_llm: FakeOpenAI, telemetry_env: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=otel-app,test.case=errors")
    client = make_client(llm_timeout_s=1.0, llm_max_retries=0, structured_output_attempts=1, max_concurrent_rounds=1)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=otel-app,test.case=errors-auth")
    guarded = make_client(api_keys="key-1234567890")
    json_body = {"content-type": "application/json"}

    statuses = [
        client.post("/ask", json={"difficulty": "extreme"}).status_code,  # validation 422
        client.post("/ask", content=b"x" * 20_000, headers=json_body).status_code,  # validation 413
        client.post("/ask", content=b"\xff\xfe not json", headers=json_body).status_code,  # validation 400
        client.get("/nope").status_code,  # unknown_route 404
        client.get("/ask").status_code,  # unknown_route 405
        client.post("/ask", json={"session_id": "Z" * 22}).status_code,  # session_not_found
    ]
    for fault in (Fault("status", 500), Fault("status", 429), Fault("status", 401), Fault("bad_arguments"),
                  Fault("hang", seconds=2)):
        fake_llm.fail_next(fault)
        statuses.append(client.post("/ask", json={}).status_code)
    fake_llm.fail_next(Fault("status", 500))  # a streamed round that fails is counted too
    streamed = client.post("/ask", json={}, headers={"accept": "text/event-stream"})
    assert "event: error" in streamed.text
    # Overloaded: one round holds the only place (waiting at the LLM) while another arrives.
    fake_llm.latency_s = 0.2  # well under LLM_TIMEOUT_S
    fake_llm.requests.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(client.post, "/ask", json={})
        wait_until(lambda: fake_llm.requests, what="the holder's round at the LLM")
        statuses.append(client.post("/ask", json={}).status_code)
        assert holder.result().status_code == 200
    statuses.append(guarded.post("/ask", json={}).status_code)  # unauthorized

    assert statuses == [422, 413, 400, 404, 405, 404, 502, 503, 502, 502, 504, 503, 401]
    expected = {"validation": 3, "unknown_route": 2, "session_not_found": 1, "upstream": 2, "rate_limited": 1,
                "auth": 1, "invalid_output": 1, "timeout": 1, "overloaded": 1}
    assert telemetry_env.wait_for(lambda: error_counts(telemetry_env, "errors") == expected and True), \
        error_counts(telemetry_env, "errors")
    assert telemetry_env.wait_for(lambda: error_counts(telemetry_env, "errors-auth") == {"unauthorized": 1})
    # On spans: every failed round's workflow span carries its error.type; with the session store's (played
    # in tests/test_sessions.py, where Postgres goes away) that is every value the docs list for it.
    workflow_types = set(code(DOC.split("`error.type` on the workflow span ∈", 1)[1].split(";", 1)[0]))
    on_spans = telemetry_env.wait_for(lambda: (found := {
        s.attributes["error.type"] for s in telemetry_env.spans()
        if s.name == "invoke_workflow quiz" and s.resource.get("test.case") == "errors" and "error.type" in s.attributes
    }) == workflow_types - {"session_store"} and found)
    assert on_spans <= set(expected)
    assert set(expected) | {"unauthorized"} <= documented_error_types()


def latest(otlp: OTLPReceiver, name: str, case: str) -> float | None:
    """The latest exported value of the unlabelled metric ``name`` from the app tagged ``test.case=case``."""
    points = [p for p in otlp.metric_points() if p.name == name and p.resource.get("test.case") == case]
    return max(points, key=lambda p: p.time_ns).value if points else None


def test_rounds_in_flight_go_up_at_admission_and_down_at_the_end_against_the_limit(
        make_client, fake_llm: FakeOpenAI, telemetry_env: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """``quiz.round.active`` counts the places held (``RoundService.admission``) and ``quiz.round.limit`` is
    ``MAX_CONCURRENT_ROUNDS``: idle 0 of 3, 2 while two rounds wait at the LLM, 0 again when they end, and a
    round shed for want of a place is never counted."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=otel-app,test.case=in-flight")
    client = make_client(max_concurrent_rounds=2, llm_timeout_s=10.0)
    limit, active = contract.METRIC_ROUND_LIMIT, contract.METRIC_ROUND_ACTIVE
    assert telemetry_env.wait_for(lambda: latest(telemetry_env, limit, "in-flight") == 2 and
                                  latest(telemetry_env, active, "in-flight") == 0)
    fake_llm.latency_s = 1.0  # each round waits at the LLM, as rounds do on Azure OpenAI
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        rounds = [pool.submit(client.post, "/ask", json={}) for _ in range(2)]
        assert telemetry_env.wait_for(lambda: latest(telemetry_env, active, "in-flight") == 2)
        assert client.post("/ask", json={}).status_code == 503  # no place left: shed, not counted
        assert [r.result().status_code for r in rounds] == [200, 200]
    assert telemetry_env.wait_for(lambda: latest(telemetry_env, active, "in-flight") == 0)
    assert latest(telemetry_env, limit, "in-flight") == 2
    for name in (limit, active):
        points = [p for p in telemetry_env.metric_points() if p.name == name]
        assert {(p.kind, p.monotonic, p.unit) for p in points} == {("sum", False, "{round}")} and \
            not any(p.attributes for p in points)
