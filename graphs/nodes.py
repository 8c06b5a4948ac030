"""The agents' steps: small async nodes, one per row of the agent table (``graphs.agents``).

Each runs inside its agent span (``graphs.tracing.agent_step``), gets its structured output through the run's
context (``QuizContext.call``), writes its finished event to the custom stream (``graphs.events``) and returns
its state update: what it contributes (the table's ``writes``) and its record (``QuizContext.record``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, interrupt
from opentelemetry import trace

from graphs.context import QuizContext
from graphs.events import AnswerAwaited, AnswerGiven, AnswerGraded, HintGiven, QuestionAsked, QuestionReviewed
from graphs.prompts import ReviewerPrompt, StudentPrompt, TeacherPrompt, TutorPrompt
from graphs.state import (
    NO_TOKENS,
    Grade,
    Hint,
    Question,
    QuizState,
    Review,
    StoredHint,
    StoredQuestion,
    StoredRound,
    StoredStep,
    StudentAnswer,
    TokenUsage,
    asked_at,
    records_of,
    round_hints,
)
from graphs.tracing import agent_step
from quiz.checks import NUMBER, ambiguous, check, contains, numbers
from quiz.choice import ANSWER_WITH_A_LETTER, LETTERS, as_text, choice_of, right_option
from quiz.choice import feedback as choice_feedback
from quiz.choice import problem as choice_problem
from quiz.vocabulary import ANSWERED_BY_MODEL, ANSWERED_BY_PERSON, LANGUAGE_NAMES, Language
from telemetry import contract as C
from telemetry.cost import total
from telemetry.spans import span_ids


def answer_leaks(question: Question) -> bool:
    """True when the question text gives its own reference answer away (e.g. after a prompt injection)."""
    answer = " ".join(question.reference_answer.casefold().split())
    return len(answer) >= 3 and answer in " ".join(question.question.casefold().split())


def round_to_play(state: QuizState) -> int:
    """The number of the round a run plays on ``state`` (the session's values, with the run's input): 1 after
    a reset, else one more than the rounds finished."""
    return 1 if state.get("reset") else state.get("round", 0) + 1


def teacher_messages(ctx: QuizContext, state: QuizState, request: str) -> list[BaseMessage]:
    """The Teacher's system prompt (in the round's language) and ``request``, one of its templates filled."""
    prompt = ctx.prompt("teacher", TeacherPrompt)
    return [SystemMessage(prompt.system.format(language=LANGUAGE_NAMES[state["language"]])),
            HumanMessage(request)]


# What a new question starts with: no hints, and none asked for (a reset plays round 1 again: an earlier round 1's
# hints must not come back with it).
NO_HINTS: dict[str, Any] = {"hints": [], "hint_wanted": False}


async def teacher_ask(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Teacher writes the next question and keeps its reference answer (or asks the input's ``preset``)."""
    ctx = runtime.context
    round_no = round_to_play(state)
    if (preset := state.get("preset")) is not None:  # an evaluation item: the set's question, not the Teacher's
        options = preset.get("options", [])
        runtime.stream_writer(ctx.event(QuestionAsked, "ask", round_no, as_text(preset["question"], options),
                                        question=preset["question"], options=options))
        return {"question": dict(preset), **NO_HINTS,
                "steps": Overwrite(ctx.record("ask", round_no, state, NO_TOKENS))}
    choice = state.get("format") == "choice"
    with agent_step(runtime, "ask", round_no):
        earlier = [] if state.get("reset") else state.get("history", [])
        prompt = ctx.prompt("teacher", TeacherPrompt)
        messages = teacher_messages(ctx, state, prompt.ask.format(
            difficulty=state["difficulty"], subject=state["subject"],
            history="\n".join(f"- {q}" for q in earlier) or "(none)"))
        if choice:
            messages.append(HumanMessage(prompt.choice))
        if sent_back(state):  # the Reviewer rejected this round's first question: say why, ask again
            review = state["review"]
            messages.append(HumanMessage(ctx.prompt("reviewer", ReviewerPrompt).feedback.format(
                question=question_text(state["question"]), reason=review["reason"])))
        # A question that contains its own answer is unusable: asked again, never shown to the Student. So is a
        # multiple-choice question without options that hold its answer once.
        question, usage = await ctx.call("ask", Question, messages, acceptable=lambda q: not answer_leaks(q) and (
            not choice or choice_problem(q.options, q.reference_answer) is None))
    options = question.options if choice else []
    runtime.stream_writer(ctx.event(QuestionAsked, "ask", round_no, as_text(question.question, options),
                                    question=question.question, options=options))
    asked = StoredQuestion(question=question.question, reference_answer=question.reference_answer)
    if options:
        asked["options"] = options
    # A new question's records start afresh (a reset's round 1 must not add to an earlier round 1's); the same
    # round's second question (sent back by the Reviewer) adds to its first.
    recorded = ctx.record("ask", round_no, state, usage)
    return {"question": asked, **NO_HINTS, "steps": recorded if sent_back(state) else Overwrite(recorded)}


def question_text(question: StoredQuestion) -> str:
    """The question as the Student and the Reviewer read it: with its lettered options, if it has any."""
    return as_text(question["question"], question.get("options", []))


def sent_back(state: QuizState) -> bool:
    """The Reviewer rejected this round's question once and the Teacher has not asked again yet: the graph goes
    back to ``teacher_ask`` (the table's loop), and the Teacher is told why."""
    record, asked = state.get("steps", {}).get("review"), state.get("steps", {}).get("ask")
    return (record is not None and asked is not None and record["round"] == round_to_play(state)
            and record["runs"] == 1 and record["outcome"] == "rejected" and asked["runs"] == 1)


def without_answer(reason: str, reference_answer: str) -> str:
    """``reason`` with the reference answer masked: a review's reason is shown before the Student answers."""
    answer = reference_answer.strip()
    return reason.replace(answer, "…") if len(answer) >= 2 else reason


async def reviewer_review(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Reviewer checks the Teacher's question before anyone answers it: answerable, one correct answer (the
    reference), the subject, difficulty and language, no answer given away. A first rejection sends the question
    back to the Teacher (``sent_back``); a second one is kept and said (outcome ``rejected``, run twice)."""
    ctx = runtime.context
    round_no = round_to_play(state)
    question = state["question"]
    with agent_step(runtime, "review", round_no):
        prompt = ctx.prompt("reviewer", ReviewerPrompt)
        language = LANGUAGE_NAMES[state["language"]]
        messages: list[BaseMessage] = [
            SystemMessage(prompt.system.format(language=language)),
            HumanMessage(prompt.review.format(subject=state["subject"], difficulty=asked_at(state),
                                              language=language, question=question_text(question),
                                              reference_answer=question["reference_answer"]))]
        review, usage = await ctx.call("review", Review, messages)
    outcome = "accepted" if review.verdict == "accept" else "rejected"
    reason = without_answer(review.reason, question["reference_answer"])
    runtime.stream_writer(ctx.event(QuestionReviewed, "review", round_no, reason, outcome=outcome,
                                    accepted=outcome == "accepted", reason=reason))
    return {"review": {"outcome": outcome, "reason": reason},
            "steps": ctx.record("review", round_no, state, usage, outcome=outcome, detail=reason)}


async def student_answer(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Student answers from the question text alone (never the reference answer): the Student agent, or
    the person playing it (``person_answer``)."""
    if state.get("student") == ANSWERED_BY_PERSON:
        return person_answer(state, runtime.context)
    ctx = runtime.context
    round_no = round_to_play(state)
    with agent_step(runtime, "answer", round_no) as span:
        prompt = ctx.prompt("student", StudentPrompt)
        messages: list[BaseMessage] = [
            SystemMessage(prompt.system.format(persona=prompt.personas[asked_at(state)],
                                               language=LANGUAGE_NAMES[state["language"]])),
            HumanMessage(prompt.answer.format(question=question_text(state["question"]) + (
                "\n" + ANSWER_WITH_A_LETTER[state["language"]] if state["question"].get("options") else "")))]
        answer, usage = await ctx.call("answer", StudentAnswer, messages)
    runtime.stream_writer(ctx.event(AnswerGiven, "answer", round_no, answer.answer, student_answer=answer.answer))
    return {"answer": answer.model_dump(), "steps": ctx.record("answer", round_no, state, usage, span=span)}


HINT_REQUEST: dict[str, bool] = {"hint": True}  # the resume value that asks the Tutor for a hint instead of answering


def person_answer(state: QuizState, ctx: QuizContext) -> dict[str, Any]:
    """A person plays the Student: the round pauses here until their answer resumes it.

    ``interrupt()`` ends the run with ``AnswerAwaited`` (the question and the hints given so far, never the
    reference answer) and the checkpoint keeps the round; ``Command(resume="<answer>")`` runs the step again,
    where ``interrupt()`` returns the answer. ``Command(resume=HINT_REQUEST)`` asks for a hint instead: the
    Tutor's step runs (``tutor_hint``) and the round pauses here again. Nothing may fail after the answer
    arrives in this step: a resume value is kept by the checkpoint, so a failure would replay the same answer
    forever (grading failures are handled by ``graphs.graph.answer_command``).
    """
    round_no = round_to_play(state)
    trace_id, span_id = span_ids(trace.get_current_span())  # the request that asks (or that asked for a hint)
    answer = interrupt(AnswerAwaited(round=round_no, question=state["question"]["question"],
                                     hints=round_hints(state, round_no), options=state["question"].get("options", []),
                                     asked_trace_id=trace_id, asked_span_id=span_id).model_dump())
    if answer == HINT_REQUEST:
        return {"hint_wanted": True}
    return {"answer": {"answer": str(answer)}, "steps": ctx.record("answer", round_no, state, NO_TOKENS)}


def hint_wanted(state: QuizState) -> bool:
    """The person asked for a hint and the Tutor has not given it yet: the Tutor's step runs next."""
    return bool(state.get("hint_wanted"))


def unanswered(state: QuizState) -> bool:
    """The round's question still awaits the person's answer: after a hint, the graph goes back to it."""
    answered = state.get("steps", {}).get("answer")
    return answered is None or answered["round"] != round_to_play(state)


def hint_leaks(hint: str, question: StoredQuestion) -> bool:
    """Whether ``hint`` gives the answer away: given as an answer, the question's mechanical check would call it
    right (a bank item's own check and accepted answers; for the Teacher's questions, the reference answer
    found in it as words), it points at a multiple-choice question's right option (``_points_at``), or it
    writes a number equal to a numeric reference (within a numeric item's tolerance) that the question does not
    hold itself. Such a hint is refused and asked for again
    (``QuizContext.call``'s ``acceptable``), never shown."""
    reference = question["reference_answer"]
    item = question.get("item")
    as_words = check(hint, reference, "contains", item["accept"] if item else [])  # never None for ``contains``
    if as_words is not None and as_words.right:
        return True
    options = question.get("options", [])
    if options and _points_at(hint, options, right_option(options, reference)):
        return True
    restated = set(numbers(question["question"]))
    tolerance = item["tolerance"] if item and item["match"] == "numeric" else 0.0
    numeric = (item is not None and item["match"] == "numeric") or NUMBER.fullmatch(reference.replace(",", "").strip())
    targets = numbers(reference)[:1] if numeric else []
    return any(abs(n - target) <= tolerance + 1e-9 and n not in restated for target in targets for n in numbers(hint))


def _points_at(hint: str, options: list[str], right: int) -> bool:
    """Whether ``hint`` gives a multiple-choice question's answer away: it is itself an answer that names the right
    option (``quiz.choice.choice_of``: "d", "(D)", "D. Paris"), it names the right option's letter in words ("option
    d", "보기 D", "(d)"), or it rules out every other option by name ("not Milan, Venice or Naples")."""
    letter = LETTERS[right]
    if choice_of(hint, options) == right:
        return True
    if re.search(rf"\({letter}\)|(?<![A-Za-z]){letter}\)|(?:option|choice|answer|letter|보기)\s*{letter}(?![A-Za-z])",
                 hint, re.IGNORECASE) is not None:
        return True
    others = [option for index, option in enumerate(options) if index != right]
    return all(contains(hint, option) for option in others)


async def tutor_hint(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Tutor gives the person a hint for the round's question (a little more with each one asked), never its
    answer (``hint_leaks``); then the round awaits the answer again. A request the Tutor no longer needs to
    answer (an answer came after a failed hint: ``graphs.graph.answer_command``) passes through."""
    if not hint_wanted(state):
        return {}
    ctx = runtime.context
    round_no = round_to_play(state)
    question = state["question"]
    given = round_hints(state, round_no)
    with agent_step(runtime, "hint", round_no):
        prompt = ctx.prompt("tutor", TutorPrompt)
        messages: list[BaseMessage] = [
            SystemMessage(prompt.system.format(language=LANGUAGE_NAMES[state["language"]])),
            HumanMessage(prompt.hint.format(subject=state["subject"], question=question_text(question),
                                            reference_answer=question["reference_answer"],
                                            given="\n".join(f"- {h}" for h in given) or "(none)",
                                            number=len(given) + 1))]
        hint, usage = await ctx.call("hint", Hint, messages, acceptable=lambda h: not hint_leaks(h.hint, question))
    runtime.stream_writer(ctx.event(HintGiven, "hint", round_no, hint.hint, hint=hint.hint, number=len(given) + 1))
    return {"hints": [*(StoredHint(round=round_no, text=h) for h in given), StoredHint(round=round_no, text=hint.hint)],
            "hint_wanted": False, "steps": ctx.record("hint", round_no, state, usage)}


def checked(question: StoredQuestion, answer: str, teacher: Grade) -> tuple[Grade, str | None]:
    """The round's grade: for a question bank's item with a mechanical check (``quiz.checks``), the check's
    verdict (``correct`` or ``incorrect``: the strict judge's rules) with the Teacher's feedback, and how it was
    checked; else the Teacher's grade and ``None``. A check that disagrees with the Teacher wins, and the
    Teacher's verdict is kept beside it (``StoredRound.teacher_verdict``), not hidden — unless the answer says
    too much for a check to decide (``quiz.checks.ambiguous``: a list of numbers or words): the Teacher grades it."""
    item = question.get("item")
    if item is None or ambiguous(answer, question["question"], item["match"]):
        return teacher, None
    verdict = check(answer, question["reference_answer"], item["match"], item["accept"], item["tolerance"])
    if verdict is None:  # a ``judge`` item: no mechanical check applies, the Teacher grades
        return teacher, None
    return Grade(verdict="correct" if verdict.right else "incorrect", feedback=teacher.feedback), verdict.how


def chosen(reference: str, options: list[str], answer: str, language: Language) -> tuple[Grade, TokenUsage, str]:
    """A multiple-choice answer's grade (``quiz.choice``): right when it names the reference's option, else wrong
    (one that names no option, which the Student agent may give, too); the feedback says which option was
    right. No model call: its tokens are none, and how it was checked is ``choice``."""
    correct = right_option(options, reference)
    right = choice_of(answer, options) == correct
    return (Grade(verdict="correct" if right else "incorrect",
                  feedback=choice_feedback(language, right, options, correct)), NO_TOKENS, "choice")


async def teacher_grade(state: QuizState, runtime: Runtime[QuizContext]) -> dict[str, Any]:
    """Teacher grades the Student's answer against its reference answer (a multiple-choice answer is graded
    exactly, by ``chosen``); this finishes the round."""
    ctx = runtime.context
    round_no = round_to_play(state)
    answered_by = state.get("student", ANSWERED_BY_MODEL)
    answer = state["answer"]["answer"]
    if answered_by == ANSWERED_BY_PERSON:  # the person's answer reaches the stream when grading starts
        runtime.stream_writer(ctx.event(AnswerGiven, "answer", round_no, answer, student_answer=answer,
                                        answered_by=answered_by, by="person"))
    question = state["question"]
    teacher: Grade | None = None
    checked_by: str | None
    with agent_step(runtime, "grade", round_no) as span:
        if options := question.get("options"):  # multiple choice: graded exactly, no model call
            grade, usage, checked_by = chosen(question["reference_answer"], options, answer, state["language"])
        else:
            # The answer (a person's words or the model's) is quoted as data, escaped whatever the prompt version.
            messages = teacher_messages(ctx, state, ctx.prompt("teacher", TeacherPrompt).grading(
                question["question"], question["reference_answer"], answer))
            teacher, usage = await ctx.call("grade", Grade, messages)
            grade, checked_by = checked(question, answer, teacher)
        span.set_attribute(C.ATTR_VERDICT, grade.verdict)
        span.set_attribute(C.ATTR_ANSWERED_BY, answered_by)
        if checked_by is not None:
            span.set_attribute(C.ATTR_GRADE_CHECK, checked_by)
        if checked_by is not None and teacher is not None:
            span.set_attribute(C.ATTR_TEACHER_VERDICT, teacher.verdict)
    runtime.stream_writer(ctx.event(AnswerGraded, "grade", round_no, grade.feedback, outcome=grade.verdict,
                                    verdict=grade.verdict, feedback=grade.feedback))
    # The round's outcome, and a reset's, are committed together here, by the last step.
    graded = ctx.record("grade", round_no, state, usage, outcome=grade.verdict)
    records = records_of(state, round_no) | graded
    trace_id, span_id = span_ids(span)  # feedback on the round attaches to its grading step
    played = StoredRound(
        round=round_no, question=question["question"], answered_by=answered_by, answer=answer,
        verdict=grade.verdict, feedback=grade.feedback, reference_answer=question["reference_answer"],
        trace_id=trace_id, span_id=span_id, input_tokens=sum(r["input_tokens"] for r in records.values()),
        output_tokens=sum(r["output_tokens"] for r in records.values()),
        cost_usd=total([r.get("cost_usd") for r in records.values()]),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        steps=[StoredStep(step=step, agent=r["agent"], outcome=r["outcome"], detail=r["detail"], runs=r["runs"])
               for step in ctx.steps if (r := records.get(step)) is not None])
    if (item := question.get("item")) is not None:
        played["item_id"], played["checked_by"] = item["id"], checked_by
        if teacher is not None:
            played["teacher_verdict"] = teacher.verdict
    elif checked_by is not None:
        played["checked_by"] = checked_by
    if options:
        played["options"] = options
    if question.get("review"):
        played["review"] = True
    if (choice := state.get("choice")) is not None:
        played["choice"] = choice
    if hints := round_hints(state, round_no):
        played["hints"] = hints
    reset = state.get("reset", False)
    kept = [] if reset else state.get("rounds", [])
    return {"grade": grade.model_dump(), "steps": graded, "round": round_no, "reset": False,
            "history": Overwrite([question["question"]]) if reset else [question["question"]],
            "score": Overwrite({grade.verdict: 1}) if reset else {grade.verdict: 1},
            "rounds": [*kept, played][-ctx.rounds_kept:]}
