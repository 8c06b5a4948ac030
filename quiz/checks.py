"""The mechanical answer checks: the strict judge's (``evals.judges``) and a question bank's in a live round
(``graphs.nodes.teacher_grade``). One code for both, so a bank item is graded live exactly as the evaluation
grades it.

``numeric``: a number written in the answer equals the reference within ``tolerance``. ``contains``: the
reference, or an accepted answer, appears in the answer (as words, when ASCII). ``judge``: no mechanical check
applies (``None``). Known leniency, by design of a substring check: an answer that names the right one among
several ("Sydney or Canberra") passes ``contains``, and one holding the right number among others passes
``numeric``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Match = Literal["numeric", "contains", "judge"]  # how an item's answer is checked
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Check:
    """A mechanical verdict on one answer: ``right``, and ``how`` it was reached (the item's match)."""

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


LONG_ANSWER_WORDS = 25  # a live answer longer than this names too much for a substring check to be the verdict


def ambiguous(answer: str, question: str, match: Match) -> bool:
    """Whether a live answer says too much for its mechanical check to decide alone (``quiz.bank``'s rounds: a
    person could list every number, or every capital, to pass a substring check): for ``numeric``, more than
    one number of its own (numbers the question holds are restatements: "6 plus 9 is 15" is one); for any
    match, more than ``LONG_ANSWER_WORDS`` words. The Teacher grades such an answer."""
    if len(answer.split()) > LONG_ANSWER_WORDS:
        return True
    if match == "numeric":
        restated = set(numbers(question))
        return len({n for n in numbers(answer) if n not in restated}) > 1
    return False


def check(answer: str, reference: str, match: Match, accept: Sequence[str] = (), tolerance: float = 0.0
          ) -> Check | None:
    """The mechanical verdict on ``answer`` against ``reference`` and the ``accept``ed alternatives, by
    ``match``; ``None`` for ``judge`` (a model must grade)."""
    if match == "judge":
        return None
    if any(contains(answer, accepted) for accepted in accept):
        return Check(True, match)
    if match == "numeric":
        target = float(reference.replace(",", ""))
        return Check(any(abs(n - target) <= tolerance + 1e-9 for n in numbers(answer)), "numeric")
    return Check(contains(answer, reference), "contains")
