"""Multiple choice: the Teacher (or a bank item) gives lettered options, one of them the reference answer; the
answer names one by its letter or its words and is graded exactly, with no model call."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.learners import review_question
from graphs.nodes import hint_leaks
from graphs.state import StoredQuestion
from quiz.bank import Bank, BankError
from quiz.choice import choice_of, problem
from quiz.learning import Review
from quiz.vocabulary import DIFFICULTIES, LANGUAGES, SUBJECTS
from tests.fakes.openai_server import FakeOpenAI
from tests.test_ag_ui import run, run_input, texts
from tests.test_person import ask, sse

OPTIONS = ["Sydney", "Canberra", "Melbourne", "Perth"]
QUESTION = "What is the capital of Australia?"


@pytest.mark.parametrize(("answer", "named"), [
    ("B", 1), ("b", 1), ("b)", 1), ("(B)", 1), ("B.", 1), ("B) Canberra", 1), ("canberra", 1), ("Canberra.", 1),
    ("  CANBERRA ", 1), ("a", 0), ("D", 3),
    ("E", None),  # no fifth option
    ("C) Canberra", None),  # a letter and words that name two options
    ("Sydney or Canberra", None), ("I think it is Canberra", None), ("", None), ("Hobart", None),
])
def test_an_answer_names_an_option_by_its_letter_or_its_words_or_none(answer: str, named: int | None) -> None:
    assert choice_of(answer, OPTIONS) == named


@pytest.mark.parametrize(("options", "reference", "wrong"), [
    (OPTIONS, "Canberra", None),
    (OPTIONS, "canberra", None),  # case aside
    (OPTIONS[:2], "Canberra", "3 to 5 options"),
    ([*OPTIONS, "Hobart", "Darwin"], "Canberra", "3 to 5 options"),
    (["Sydney", "sydney", "Canberra"], "Canberra", "the same"),
    (OPTIONS, "Hobart", "not one of the options"),
    (["Sydney", " ", "Canberra"], "Canberra", "empty"),
    (["O", "AB", "A", "B"], "O", "a letter A to E alone"),  # blood groups: "A" would read as option A ("O")
    (["Vitamin D", "C", "E", "K"], "C", "a letter A to E alone"),
])
def test_options_must_hold_the_reference_once(options: list[str], reference: str, wrong: str | None) -> None:
    found = problem(options, reference)
    assert (found is None) if wrong is None else (found is not None and wrong in found)


def test_a_choice_round_is_asked_with_lettered_options_and_graded_exactly(client: TestClient,
                                                                         fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question=QUESTION, reference_answer="Canberra", options=OPTIONS)
    fake_llm.script("StudentAnswer", answer="B")
    played = ask(client, subject="geography", format="choice")
    assert (played["format"], played["options"], played["verdict"], played["checked_by"]) == (
        "choice", OPTIONS, "correct", "choice")
    assert played["feedback"] == "Right: B) Canberra." and played["teacher_verdict"] is None
    assert [r.tool_name for r in fake_llm.requests] == ["Question", "Review", "StudentAnswer"]  # no grading call
    assert "multiple-choice" in fake_llm.requests_for("Question")[0].prompt_text
    student = fake_llm.requests_for("StudentAnswer")[0].prompt_text
    assert "A) Sydney\nB) Canberra\nC) Melbourne\nD) Perth" in student and "Answer with the letter" in student
    assert "B) Canberra" in fake_llm.requests_for("Review")[0].prompt_text  # the Reviewer sees the options too
    looked = client.get(f"/sessions/{played['session_id']}").json()
    assert looked["format"] == "choice" and looked["rounds"][-1]["options"] == OPTIONS

    fake_llm.script("StudentAnswer", answer="Sydney")  # the next round stays multiple choice: a wrong option
    again = ask(client, session_id=played["session_id"], message="next")
    assert (again["format"], again["verdict"], again["feedback"]) == ("choice", "incorrect",
                                                                      "The right answer is B) Canberra.")
    fake_llm.script("StudentAnswer", answer="Not sure")  # the Student agent names no option: wrong
    assert ask(client, session_id=played["session_id"], message="next")["verdict"] == "incorrect"
    opened = ask(client, session_id=played["session_id"], format="open")  # and back to open questions
    assert (opened["format"], opened["options"], opened["checked_by"]) == ("open", [], None)


def test_options_without_the_answer_are_asked_for_again_and_open_questions_keep_none(
        client: TestClient, fake_llm: FakeOpenAI) -> None:
    given = iter([["Sydney", "Perth", "Hobart", "Darwin"], OPTIONS])
    fake_llm.respond("Question", lambda _: {"question": QUESTION, "reference_answer": "Canberra",
                                            "options": next(given)})
    played = ask(client, subject="geography", format="choice")
    assert played["options"] == OPTIONS and len(fake_llm.requests_for("Question")) == 2
    fake_llm.clear()
    fake_llm.script("Question", question=QUESTION, reference_answer="Canberra", options=OPTIONS)
    opened = ask(client, subject="geography")  # options a model writes for an open question are dropped
    assert (opened["format"], opened["options"]) == ("open", [])
    assert "multiple-choice" not in fake_llm.requests_for("Question")[0].prompt_text


def test_a_person_answers_with_a_letter_or_words_and_an_answer_that_names_none_is_refused(
        client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question=QUESTION, reference_answer="Canberra", options=OPTIONS)
    pending = ask(client, subject="geography", format="choice", student="person")
    assert (pending["options"], pending["status"]) == (OPTIONS, "awaiting_answer")
    assert "Canberra" in json.dumps(pending)  # an option, not marked as the right one
    sid = pending["session_id"]
    refused = ask(client, 422, session_id=sid, answer="Hobart")
    assert refused["type"] == "/problems/answer-not-an-option" and "A, B, C, D" in refused["detail"]
    waiting = client.get(f"/sessions/{sid}").json()["awaiting_answer"]
    assert (waiting["question"], waiting["options"]) == (QUESTION, OPTIONS)
    events = sse(client, session_id=sid, answer="canberra")
    assert [name for name, _ in events] == ["trace", "answer", "grade", "round"]
    assert events[-1][1]["verdict"] == "correct" and fake_llm.requests_for("Grade") == []


def test_a_hint_may_not_point_at_the_right_option() -> None:
    question = StoredQuestion(question=QUESTION, reference_answer="Canberra", options=OPTIONS)
    for leaky in ("It is option B.", "Pick (B).", "Think of B) first.", "b", "(b)", "b)", "B.", "It's option b.",
                  "보기 b", "Canberra", "Not Sydney, Melbourne or Perth."):  # the last rules out the others
        assert hint_leaks(leaky, question), leaky
    for fine in ("A city planned as a capital.", "Not option A.", "Both A and C are big cities."):
        assert not hint_leaks(fine, question), fine


def test_a_bank_asks_its_items_with_options_in_a_choice_round(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(question_source="bank")
    bank = Bank.load()
    for language in ("en", "ko"):
        played = ask(client, subject="geography", difficulty="easy", language=language, format="choice")
        item = next(i for i in bank.pick_all("geography", "easy", language) if i.id == played["item_id"])
        assert item.options and played["options"] == item.options and played["source"] == "bank"
        assert played["question"] == item.question and played["checked_by"] == "choice"
    assert fake_llm.requests_for("Question") == [] and fake_llm.requests_for("Grade") == []


def test_every_item_of_the_starter_bank_can_be_asked_as_multiple_choice() -> None:
    bank = Bank.load()
    for cell in ((s, d, lang) for s in SUBJECTS for d in DIFFICULTIES for lang in LANGUAGES):
        items = bank.pick_all(*cell)
        assert len(items) >= 2, cell  # a choice session is not asked one question over and over
        for item in items:
            assert item.options is not None and problem(item.options, item.reference) is None, item.id


def test_a_bank_item_whose_options_miss_its_reference_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "bank.yaml"
    path.write_text('version: 1\nitems:\n  - {id: cap-1, subject: geography, difficulty: easy, language: en, '
                    'split: train, question: "Capital of Australia?", reference: Canberra, match: contains, '
                    'options: [Sydney, Perth, Hobart]}\n', encoding="utf-8")
    with pytest.raises(BankError) as raised:
        Bank.load(path)
    assert "item 0 ('cap-1')" in str(raised.value) and "not one of the options" in str(raised.value)


def test_a_missed_choice_question_comes_back_as_one() -> None:
    review = Review(card={}, question=QUESTION, reference_answer="Canberra", item=None, subject="geography",
                    difficulty="easy", language="en", options=OPTIONS)
    assert review_question(review)["options"] == OPTIONS


def test_an_ag_ui_client_asks_for_multiple_choice_and_resumes_with_a_letter(client: TestClient,
                                                                            fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question=QUESTION, reference_answer="Canberra", options=OPTIONS)
    thread = str(uuid.uuid4())
    asked = run(client, run_input(thread, forwardedProps={"student": "person", "format": "choice"}))
    teacher = [text for _, author, text in texts(asked) if author == "Teacher"]
    assert teacher == [f"{QUESTION}\nA) Sydney\nB) Canberra\nC) Melbourne\nD) Perth"]  # lettered, as text
    (interrupt,) = asked[-1].outcome.interrupts
    answered = run(client, run_input(thread, resume=[{"interruptId": interrupt.id, "status": "resolved",
                                                      "payload": {"answer": "b"}}]))
    assert answered[-1].result["verdict"] == "correct" and answered[-1].result["format"] == "choice"


def test_a_missed_choice_question_is_scheduled_with_its_options(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question=QUESTION, reference_answer="Canberra", options=OPTIONS)
    pending = ask(client, subject="geography", format="choice", student="person", learner_id="noa")
    assert ask(client, session_id=pending["session_id"], answer="A")["verdict"] == "incorrect"
    rounds = client.app_state["rounds"]
    profile = client.portal.call(rounds.learners.get, "anonymous", "noa")  # type: ignore[union-attr]
    (review,) = profile["reviews"].values()
    assert (review["question"], review["options"]) == (QUESTION, OPTIONS)
