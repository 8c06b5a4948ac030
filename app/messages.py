"""Free-form chat text → quiz settings, so the upstream chat style of use keeps working.

Deterministic keyword matching (no LLM call): ``"보통 난이도로 수학 문제 풀래"`` → medium, math, ko;
``"hard history please"`` → hard, history, en; ``"next"`` / ``"다음"`` → same settings;
``"reset"`` / ``"초기화"`` → start the session over (same id, round 1, no history).

Keywords match as words, never inside one (``tests/test_messages.py`` holds the cases):

- An English keyword is a whole word: no ASCII letter, digit or ``_`` on either side. Inflected forms do not
  count (``"presets"``, ``"resetting"``, ``"I restarted my laptop"`` reset nothing; ``"barcode"`` is not
  ``code``): a past tense describes, it does not ask. Hangul may follow, because Korean attaches particles to
  English words too (``"python으로"`` → programming).
- A Korean keyword starts a word — a run of Hangul syllables — and anything may follow it in that word,
  because particles and endings attach (``"수학을"``, ``"초기화해줘"``, ``"어려운데"``). Inside a word it does not
  count: ``"이과학생"`` (이과 학생) is not 과학, ``"대화학습"`` not 화학, ``"비상식적"`` not 상식. Without a
  morphological analyser a particle cannot be told from a compound's second half, so a compound that *starts*
  with a keyword still matches (``"수학여행"``, a school trip, → math; ``"일반적으로"`` → general), and one
  that ends with it does not (``"고등수학"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from quiz.vocabulary import Difficulty, Language

K = TypeVar("K", bound=str)

# Words that name each of the known subjects (quiz.vocabulary.SUBJECTS; a test keeps the keys equal).
SUBJECT_WORDS: dict[str, tuple[str, ...]] = {
    "math": ("math", "maths", "mathematics", "수학", "산수"),
    "science": ("science", "physics", "chemistry", "biology", "과학", "물리", "화학", "생물"),
    "history": ("history", "역사", "한국사", "세계사"),
    "english": ("english", "영어"),
    "programming": ("programming", "coding", "code", "python", "프로그래밍", "코딩"),
    "geography": ("geography", "지리"),
    "general": ("general", "trivia", "일반", "상식"),
}
DIFFICULTY_WORDS: dict[Difficulty, tuple[str, ...]] = {
    "easy": ("easy", "쉬움", "쉬운", "쉽게"),
    "medium": ("medium", "normal", "보통", "중간"),
    "hard": ("hard", "difficult", "어려움", "어려운", "어렵게"),
}
RESET_WORDS = ("reset", "restart", "start over", "초기화", "처음부터")
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def keyword(word: str) -> re.Pattern[str]:
    """The pattern that finds ``word`` (lower case) as a word of a lower-cased message (see the module docstring):
    ASCII with no ASCII word character either side (spaces inside it: any run of white space); Hangul at the
    start of a run of Hangul syllables."""
    if word.isascii():
        return re.compile(r"(?<![a-z0-9_])" + r"\s+".join(map(re.escape, word.split())) + r"(?![a-z0-9_])")
    return re.compile(r"(?<![\uac00-\ud7a3])" + re.escape(word))


_PATTERNS = {word: keyword(word) for table in (SUBJECT_WORDS, DIFFICULTY_WORDS) for words in table.values()
             for word in words} | {word: keyword(word) for word in RESET_WORDS}


@dataclass(frozen=True)
class Intent:
    """What a chat message asks for; ``None`` where it says nothing."""

    subject: str | None = None
    difficulty: Difficulty | None = None
    language: Language | None = None
    reset: bool = False


def _find(text: str, table: Mapping[K, tuple[str, ...]]) -> K | None:
    """The first key of ``table`` (in its order) one of whose words is in ``text``."""
    for key, words in table.items():
        if any(_PATTERNS[word].search(text) for word in words):
            return key
    return None


def is_korean(text: str | None) -> bool:
    """True when ``text`` contains a Hangul syllable."""
    return bool(text and HANGUL.search(text))


def parse_message(message: str | None) -> Intent:
    """The settings a chat message asks for; fields it does not mention are ``None``, ``reset`` ``False``.

    Keywords match as words (module docstring); where a message names two subjects or difficulties, the one
    listed first in ``SUBJECT_WORDS`` / ``DIFFICULTY_WORDS`` wins. ``language`` is ``"ko"`` when the message has
    a Hangul syllable, else ``None``."""
    if not message:
        return Intent()
    text = message.strip().lower()
    return Intent(subject=_find(text, SUBJECT_WORDS), difficulty=_find(text, DIFFICULTY_WORDS),
                  language="ko" if is_korean(text) else None,
                  reset=any(_PATTERNS[word].search(text) for word in RESET_WORDS))
