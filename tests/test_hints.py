"""Hints: while a question awaits a person's answer, the Tutor (a row of the agent table) gives a hint that does not
give the answer away, at most HINTS_PER_ROUND a round; a right answer after one earns half credit and counts as
partly right for the learner. A failed hint leaves the question waiting, as it was."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from graphs.nodes import hint_leaks
from graphs.state import StoredItem, StoredQuestion
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver, Span
from tests.test_person import ask, sse

QUESTION = "What is the capital of Australia?"
REFERENCE = "Canberra"


def asked(client: TestClient, fake_llm: FakeOpenAI, learner_id: str | None = None) -> str:
    """A person's round on QUESTION (played by ``learner_id``), paused for the answer: its session id."""
    fake_llm.script("Question", question=QUESTION, reference_answer=REFERENCE)
    pending = ask(client, 200, subject="geography", difficulty="easy", language="en", student="person",
                  learner_id=learner_id)
    assert (pending["status"], pending["hints"], pending["hints_left"]) == ("awaiting_answer", [], 2)
    return str(pending["session_id"])


def test_a_person_asks_for_hints_then_answers_and_the_round_records_them(client: TestClient,
                                                                        fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.script("Hint", hint="It was built as a compromise between Sydney and Melbourne.")
    first = ask(client, session_id=sid, hint=True)
    assert (first["status"], first["round"], first["question"]) == ("awaiting_answer", 1, QUESTION)
    assert (first["hints"], first["hints_left"]) == (["It was built as a compromise between Sydney and Melbourne."], 1)
    assert REFERENCE not in json.dumps(first)
    prompt = fake_llm.requests_for("Hint")[0].prompt_text
    assert QUESTION in prompt and REFERENCE in prompt and "(none)" in prompt  # no hint given yet

    fake_llm.script("Hint", hint="Its name starts the way the word 'can' does.")
    events = sse(client, session_id=sid, hint=True)  # the stream: the Tutor's hint, then the question again
    assert [name for name, _ in events] == ["trace", "hint", "awaiting_answer"]
    assert (events[1][1]["speaker"], events[1][1]["number"]) == ("Tutor", 2)
    assert events[-1][1]["hints_left"] == 0 and len(events[-1][1]["hints"]) == 2
    assert "compromise between Sydney" in fake_llm.requests_for("Hint")[1].prompt_text  # it knows the first one
    looked = client.get(f"/sessions/{sid}").json()["awaiting_answer"]
    assert looked["hints"] == events[-1][1]["hints"]

    refused = ask(client, 409, session_id=sid, hint=True)
    assert refused["type"] == "/problems/no-hints-left" and "2 hint(s)" in refused["detail"]
    assert len(fake_llm.requests_for("Hint")) == 2  # the refused one called no model

    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    graded = ask(client, session_id=sid, answer="Canberra")
    assert (graded["verdict"], graded["credit"], graded["hints"]) == ("correct", 0.5, looked["hints"])
    hint_step = next(s for s in graded["steps"] if s["step"] == "hint")
    assert (hint_step["agent"], hint_step["runs"]) == ("tutor", 2)
    kept = client.get(f"/sessions/{sid}").json()["rounds"][-1]
    assert kept["hints"] == looked["hints"]

    # The next round starts without hints.
    fresh = ask(client, session_id=sid, message="next")
    assert (fresh["round"], fresh["hints"], fresh["hints_left"]) == (2, [], 2)


def test_a_reset_starts_its_round_1_without_the_hints_of_the_round_1_before(client: TestClient,
                                                                             fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.script("Hint", hint="A planned city.")
    ask(client, session_id=sid, hint=True)
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    ask(client, session_id=sid, answer="Canberra")
    again = ask(client, session_id=sid, message="reset")  # round 1 again, a new question: no hint yet
    assert (again["round"], again["hints"], again["hints_left"]) == (1, [], 2)
    graded = ask(client, session_id=sid, answer="Canberra")
    assert (graded["hints"], graded["credit"]) == ([], 1.0)
    assert "hint" not in [step["step"] for step in graded["steps"]]
    # Nor does it add to the earlier round 1's records: each of its steps ran once.
    assert {step["step"]: step["runs"] for step in graded["steps"]} == {"ask": 1, "review": 1, "answer": 1,
                                                                        "grade": 1}


def test_a_hint_after_the_answer_is_in_says_to_send_the_answer_again(client: TestClient,
                                                                     fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.fail_next(Fault("status", 500), times=4)  # the grading fails: the answer is kept, to be graded
    ask(client, 502, session_id=sid, answer="Canberra")
    refused = ask(client, 409, session_id=sid, hint=True)
    assert refused["type"] == "/problems/no-hints-left" and "send your answer again" in refused["detail"]
    fake_llm.clear()
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    assert ask(client, session_id=sid, answer="Canberra")["verdict"] == "correct"


def test_a_right_answer_without_hints_earns_full_credit_and_a_model_round_takes_no_hint(
        client: TestClient, fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    assert ask(client, session_id=sid, answer="Canberra")["credit"] == 1.0
    again = ask(client, 409, session_id=sid, hint=True)  # graded: nothing waits
    assert again["type"] == "/problems/no-answer-awaited"
    played = ask(client, subject="math")  # the Student agent answers: no step of the Tutor's runs
    assert "hint" not in [s["step"] for s in played["steps"]] and played["hints"] == []
    assert ask(client, 409, session_id=played["session_id"], hint=True)["type"] == "/problems/no-answer-awaited"
    assert fake_llm.requests_for("Hint") == []


@pytest.mark.parametrize("leaky", [
    "The answer is Canberra.",  # the reference, as words
    "It is CANBERRA!",  # case and punctuation do not hide it
])
def test_a_hint_that_gives_the_answer_away_is_asked_for_again_and_never_shown(
        client: TestClient, fake_llm: FakeOpenAI, leaky: str) -> None:
    sid = asked(client, fake_llm)
    hints = iter([leaky, "Think of a city planned in the 1910s."])
    fake_llm.respond("Hint", lambda _: {"hint": next(hints)})
    given = ask(client, session_id=sid, hint=True)
    assert given["hints"] == ["Think of a city planned in the 1910s."]
    assert len(fake_llm.requests_for("Hint")) == 2  # the leaky one was refused, not shown
    assert leaky not in json.dumps(client.get(f"/sessions/{sid}").json())


def test_a_hint_that_always_leaks_fails_and_the_question_still_waits(client: TestClient, fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.script("Hint", hint="Canberra, of course.")
    failed = ask(client, 502, session_id=sid, hint=True)
    assert failed["type"] == "/problems/llm-invalid-output" and "Canberra" not in json.dumps(failed)
    waiting = client.get(f"/sessions/{sid}").json()["awaiting_answer"]
    assert waiting == {"round": 1, "question": QUESTION, "options": [], "hints": []}


# Trap items for the leak check (graphs.nodes.hint_leaks): what a hint must not say, and near misses it may.
BANK_NUMERIC = StoredQuestion(question="What is 7 + 5?", reference_answer="12",
                              item=StoredItem(id="add-7-5", match="numeric", accept=[], tolerance=0.0))
BANK_WORD = StoredQuestion(question="Which planet is known as the Red Planet?", reference_answer="Mars",
                           item=StoredItem(id="red-planet", match="contains", accept=["planet Mars"], tolerance=0.0))
SEOUL = StoredQuestion(question="대한민국의 수도는 어디입니까?", reference_answer="서울")
PI = StoredQuestion(question="What is pi to two decimal places?", reference_answer="3.14",
                    item=StoredItem(id="pi", match="numeric", accept=[], tolerance=0.005))
WAR = StoredQuestion(question="Which war ended in 1945?", reference_answer="World War II")


@pytest.mark.parametrize(("hint", "question", "leaks"), [
    ("Count up from 7: five more.", BANK_NUMERIC, False),  # numbers of the question are restatements
    ("It is a dozen, 12.", BANK_NUMERIC, True),
    ("Between 10 and 14.", BANK_NUMERIC, False),
    ("It is named after the Roman god of war.", BANK_WORD, False),
    ("mars.", BANK_WORD, True),
    ("서울입니다.", SEOUL, True),  # Korean attaches particles: found inside the word
    ("한강이 흐르는 도시입니다.", SEOUL, False),
    ("About 3.1416, rounded.", PI, True),  # within the item's tolerance
    ("The ratio of a circle's circumference to its diameter.", PI, False),
    ("It began in 1939.", WAR, False),  # a number in a reference that is no number is no leak by itself
    ("It is called World War II.", WAR, True),
])
def test_the_leak_check_catches_answers_and_lets_hints_through(hint: str, question: StoredQuestion,
                                                                leaks: bool) -> None:
    assert hint_leaks(hint, question) is leaks


def test_a_failed_hint_leaves_the_question_waiting_and_an_answer_or_a_retry_goes_on(client: TestClient,
                                                                                    fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.script("Hint", hint="Think of a planned city.")
    ask(client, session_id=sid, hint=True)
    fake_llm.fail_next(Fault("status", 500), times=4)  # the client's retries too
    failed = ask(client, 502, session_id=sid, hint=True)
    assert failed["type"] == "/problems/llm-upstream"
    looked = client.get(f"/sessions/{sid}").json()
    assert looked["awaiting_answer"] == {"round": 1, "question": QUESTION, "options": [],
                                        "hints": ["Think of a planned city."]}
    assert looked["rounds_played"] == 0

    fake_llm.clear()
    fake_llm.script("Hint", hint="It is not the largest city.")
    retried = ask(client, session_id=sid, hint=True)  # the failed hint is asked for again, and counted once
    assert (retried["hints"], retried["hints_left"]) == (["Think of a planned city.", "It is not the largest city."], 0)

    fake_llm.script("Grade", verdict="incorrect", feedback="No.")
    graded = ask(client, session_id=sid, answer="Sydney")
    assert (graded["verdict"], graded["credit"], len(graded["hints"])) == ("incorrect", 0.0, 2)


def test_an_answer_after_a_failed_hint_is_graded_without_it(client: TestClient, fake_llm: FakeOpenAI) -> None:
    sid = asked(client, fake_llm)
    fake_llm.fail_next(Fault("status", 500), times=4)
    ask(client, 502, session_id=sid, hint=True)
    fake_llm.clear()
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    graded = ask(client, session_id=sid, answer="Canberra")
    assert (graded["verdict"], graded["credit"], graded["hints"]) == ("correct", 1.0, [])
    assert graded["student_answer"] == "Canberra" and fake_llm.requests_for("Hint") == []  # no hint was retried
    assert client.get(f"/sessions/{sid}").json()["rounds_played"] == 1


def test_hints_can_be_turned_off(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(hints_per_round=0)
    sid = asked_without_hints(client, fake_llm)
    refused = ask(client, 409, session_id=sid, hint=True)
    assert refused["type"] == "/problems/no-hints-left" and "HINTS_PER_ROUND=0" in refused["detail"]


def asked_without_hints(client: TestClient, fake_llm: FakeOpenAI) -> str:
    fake_llm.script("Question", question=QUESTION, reference_answer=REFERENCE)
    pending = ask(client, subject="geography", student="person")
    assert pending["hints_left"] == 0
    return str(pending["session_id"])


def test_a_right_answer_after_a_hint_counts_as_partly_right_for_the_learner(client: TestClient,
                                                                            fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    fake_llm.script("Hint", hint="A planned city.")
    for learner, hinted in (("ana", False), ("ben", True)):
        sid = asked(client, fake_llm, learner_id=learner)
        if hinted:
            ask(client, session_id=sid, hint=True)
        ask(client, session_id=sid, answer="Canberra")
    ana, ben = (client.get(f"/learners/{name}").json() for name in ("ana", "ben"))
    assert (ana["accuracy"], ben["accuracy"]) == (1.0, 0.0)  # a right first attempt, and a hinted one
    # A draw with an easy question (rated below a new learner) lowers the rating a win raises.
    assert ana["mastery"][0]["rating"] > 25.0 > ben["mastery"][0]["rating"]
    assert (ana["reviews_scheduled"], ben["reviews_scheduled"]) == (0, 1)  # the hinted one comes back


def test_a_hint_is_counted_and_the_answers_round_span_says_how_many(make_client, telemetry_env: OTLPReceiver,
                                                                    fake_llm: FakeOpenAI) -> None:
    client = make_client()
    sid = asked(client, fake_llm, learner_id="cleo")
    fake_llm.script("Hint", hint="A planned city.")
    hinted = ask(client, session_id=sid, hint=True)
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    graded = ask(client, session_id=sid, answer="Canberra")

    def workflow(trace_id: str) -> Span | None:
        return next((s for s in telemetry_env.trace(trace_id) if s.name == "invoke_workflow quiz"), None)
    hint_span = telemetry_env.wait_for(lambda: workflow(hinted["trace_id"]))
    assert hint_span.attributes["quiz.hints.used"] == 1
    tutor = telemetry_env.wait_for(lambda: next((s for s in telemetry_env.trace(hinted["trace_id"])
                                                 if s.name == "invoke_agent tutor"), None))
    assert tutor.attributes["quiz.step"] == "hint"
    assert telemetry_env.wait_for(lambda: workflow(graded["trace_id"])).attributes["quiz.hints.used"] == 1
    counted = telemetry_env.wait_for(lambda: [p for p in telemetry_env.metric_points() if p.name == "quiz.hints"])
    assert counted[-1].attributes == {"quiz.subject": "geography", "quiz.difficulty": "easy", "quiz.language": "en"}
    learner = telemetry_env.wait_for(lambda: [p for p in telemetry_env.metric_points()
                                              if p.name == "quiz.learner.rounds"])
    assert learner[-1].attributes["quiz.hints.used"] == 1
