"""Free-form chat text → quiz settings, so the upstream chat style of use keeps working.

Deterministic keyword matching (no LLM call): ``"보통 난이도로 수학 문제 풀래"`` → medium, math, ko;
``"hard history please"`` → hard, history, en; ``"next"`` / ``"다음"`` → same settings;
``"reset"`` / ``"초기화"`` → start the session over (same id, round 1, no history).
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


@dataclass(frozen=True)
class Intent:
    """What a chat message asks for; ``None`` where it says nothing."""

    subject: str | None = None
    difficulty: Difficulty | None = None
    language: Language | None = None
    reset: bool = False


def _find(text: str, table: Mapping[K, tuple[str, ...]]) -> K | None:
    for key, words in table.items():
        for word in words:
            # ASCII words must stand alone ("code" not in "barcode"); Korean words attach particles (수학을).
            if word.isascii():
                if re.search(rf"\b{re.escape(word)}\b", text):
                    return key
            elif word in text:
                return key
    return None


def is_korean(text: str | None) -> bool:
    """True when ``text`` contains a Hangul syllable."""
    return bool(text and HANGUL.search(text))


def parse_message(message: str | None) -> Intent:
    """The settings a chat message asks for; fields it does not mention are ``None``."""
    if not message:
        return Intent()
    text = message.strip().lower()
    return Intent(subject=_find(text, SUBJECT_WORDS), difficulty=_find(text, DIFFICULTY_WORDS),
                  language="ko" if is_korean(text) else None,
                  reset=any(w in text for w in RESET_WORDS))
