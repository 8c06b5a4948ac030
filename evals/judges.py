"""The strict judge: a mechanical check against the reference and accepted answers where the item says one
applies (``numeric``, ``contains``), else an independent judge prompt (``judge``).

It is stricter than the Teacher's grading step in two ways: a partly right answer is not right, and the
mechanical checks cannot be talked into a verdict. Known leniency, by design of a substring check: an answer
that names the right one among several ("Sydney or Canberra") passes ``contains``, and an answer holding
the right number among others passes ``numeric``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from evals.dataset import NUMBER, Item

# The independent judge: not the Teacher's prompt, no persona, told to be strict (prompts as data).
JUDGE_SYSTEM = (
    "You are a strict, independent examiner checking a quiz answer against its reference answer. "
    "Judge only the student's final answer. It is correct only if it says the same as the reference answer "
    "or one of the accepted answers; an answer that is vague, hedged between options, or accepts a false "
    "premise the reference rejects is incorrect. Reply in English."
)
JUDGE_PROMPT = (
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Also accepted: {accepted}\n"
    "Student's answer: {answer}\n"
    "Verdict: correct, partially_correct or incorrect, with one sentence of feedback."
)


@dataclass(frozen=True)
class Check:
    """The strict judge's verdict on one answer: ``right``, and ``how`` it was reached (the item's match)."""

    right: bool
    how: str


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation (but parentheses) turned to spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w()\s]", " ", text)
    return " ".join(text.split())


def contains(answer: str, expected: str) -> bool:
    """``expected`` appears in ``answer`` after ``normalise()``: as whole words when it is ASCII (so "na" is
    not found in "banana"), anywhere when it is not (Korean attaches particles: 서울 in 서울입니다)."""
    a, e = normalise(answer), normalise(expected)
    if not e:
        return False
    if e.isascii():
        return re.search(rf"(?<!\w){re.escape(e)}(?!\w)", a) is not None
    return e in a


def numbers(text: str) -> list[float]:
    """The numbers written in ``text`` (thousands separators allowed: 5,050)."""
    return [float(n) for n in NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))]


def mechanical(item: Item, answer: str) -> Check | None:
    """The mechanical verdict for ``numeric`` and ``contains`` items; ``None`` for ``judge`` items."""
    if item.match == "judge":
        return None
    if any(contains(answer, accepted) for accepted in item.accept):
        return Check(True, item.match)
    if item.match == "numeric":
        target = float(item.reference.replace(",", ""))
        return Check(any(abs(n - target) <= item.tolerance + 1e-9 for n in numbers(answer)), "numeric")
    return Check(contains(answer, item.reference), "contains")


def judge_prompt(item: Item, answer: str) -> str:
    """The independent judge's user prompt for ``item`` and ``answer``."""
    return JUDGE_PROMPT.format(question=item.question, reference=item.reference,
                               accepted="; ".join(item.accept) or "(none)", answer=answer)
