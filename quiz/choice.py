"""Multiple choice: a question with lettered options (A, B, C …), one of them the reference answer, graded
exactly — the option the answer names is the reference's, or it is not. No model judges it.

An answer names an option by its letter ("B", "b)", "(B)", "B. Canberra") or by the option's words, written as
the option is (case, punctuation and spaces aside: ``quiz.checks.normalise``). Anything else names none: a
person is asked to answer again (``app.errors.AnswerNotAnOption``, the question still waits), and the Student
agent's answer is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from quiz.checks import normalise
from quiz.vocabulary import Language

LETTERS: Final = "ABCDE"
MIN_OPTIONS: Final = 3
MAX_OPTIONS: Final = len(LETTERS)
_LETTER = re.compile(r"\(?([A-Ea-e])\)?[.):]?")  # the whole answer is a letter
_LETTERED = re.compile(r"\(?([A-Ea-e])[.):]\)?\s+(.+)", re.S)  # a letter, then the option's words
# What the Student is told after the options, and the feedback on an answer, by the round's language.
ANSWER_WITH_A_LETTER: Final[dict[Language, str]] = {
    "en": "Answer with the letter of one option.", "ko": "보기 중 하나의 글자(A, B, C …)로 답하세요."}
FEEDBACK: Final[dict[Language, tuple[str, str]]] = {
    "en": ("Right: {option}.", "The right answer is {option}."),
    "ko": ("정답입니다: {option}.", "정답은 {option}입니다."),
}


def lettered(options: Sequence[str]) -> list[str]:
    """``["A) Paris", "B) Rome", …]``."""
    return [f"{letter}) {option}" for letter, option in zip(LETTERS, options, strict=False)]


def as_text(question: str, options: Sequence[str]) -> str:
    """The question with its lettered options on lines of their own (the question alone without options)."""
    return "\n".join([question, *lettered(options)]) if options else question


def problem(options: Sequence[str], reference: str) -> str | None:
    """What is wrong with ``options`` for a question whose answer is ``reference``, or ``None``: between
    ``MIN_OPTIONS`` and ``MAX_OPTIONS`` of them, none empty and none a letter A–E alone (blood group "A" would read
    as option A), all different (``normalise``d), the reference among them exactly once."""
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        return f"a multiple-choice question has {MIN_OPTIONS} to {MAX_OPTIONS} options, not {len(options)}"
    normalised = [normalise(option) for option in options]
    if not all(normalised):
        return "an option is empty"
    if any(option.upper() in LETTERS for option in normalised):  # "A" as an option reads as option A's letter
        return "an option may not be a letter A to E alone (it would read as the letter of another option)"
    if len(set(normalised)) != len(normalised):
        return "two options are the same"
    if normalised.count(normalise(reference)) != 1:
        return f"the reference answer {reference!r} is not one of the options"
    return None


def right_option(options: Sequence[str], reference: str) -> int:
    """The index of the reference answer among ``options`` (``ValueError`` when it is not there)."""
    return [normalise(option) for option in options].index(normalise(reference))


def choice_of(answer: str, options: Sequence[str]) -> int | None:
    """The index of the option ``answer`` names (by its letter, or by the option's words), or ``None`` when it
    names none, or names one by its letter and another by its words."""
    text = answer.strip()
    if (alone := _LETTER.fullmatch(text)) is not None:
        index = LETTERS.index(alone.group(1).upper())
        return index if index < len(options) else None
    words = [i for i, option in enumerate(options) if normalise(option) == normalise(text)]
    if (lettered_answer := _LETTERED.fullmatch(text)) is not None and not words:
        index = LETTERS.index(lettered_answer.group(1).upper())
        named = [i for i, option in enumerate(options) if normalise(option) == normalise(lettered_answer.group(2))]
        return index if index < len(options) and named in ([], [index]) else None
    return words[0] if len(words) == 1 else None


def feedback(language: Language, right: bool, options: Sequence[str], correct: int) -> str:
    """The feedback on a graded choice: which option was right (``"B) Canberra"``)."""
    return FEEDBACK[language][0 if right else 1].format(option=lettered(options)[correct])
