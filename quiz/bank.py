"""Question banks: an operator's questions, asked instead of the Teacher's (``QUESTION_SOURCE``).

A bank is a YAML file in the evaluation set's schema (``evals/questions.schema.json``: the same file can be
``question-app eval --set``), of quiz items only. It is validated when the service starts; a bad one stops the
start with every error named by file, item and field. In a round the bank's item is the question, its
``reference`` the reference answer, and its ``match`` grades the answer mechanically (``quiz.checks``, the strict
judge's rules) before the Teacher's grade, which is kept beside it (``graphs.nodes.teacher_grade``).

``quiz/banks/starter.yaml`` is shipped with the package: one to three items for every subject, difficulty and
language, none of them in the evaluation set (its items would then score the bank, not the model). It is the
default on the embedded model, which is too small to write or grade questions (docs/eval-embedded.md).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quiz.items import Item, QuestionSet

STARTER = Path(__file__).with_name("banks") / "starter.yaml"


class BankError(ValueError):
    """A bank that cannot be used: unreadable, not YAML, or not in the set's schema. The message names the file
    and, for each problem, the item (index and id) and the field."""


class Bank:
    """A bank's quiz items by (subject, difficulty, language); ``path``: where it was read from."""

    def __init__(self, items: Collection[Item], path: Path) -> None:
        self.path = path
        self.size = len(items)
        self._items: defaultdict[tuple[str, str, str], list[Item]] = defaultdict(list)
        for item in items:
            self._items[item.subject, item.difficulty, item.language].append(item)

    @classmethod
    def load(cls, path: Path | None = None) -> Bank:
        """Read and validate the bank at ``path`` (default: the starter bank). Raises ``BankError``."""
        path = path or STARTER
        try:
            raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BankError(f"question bank {path}: cannot be read ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise BankError(f"question bank {path}: not valid YAML: {exc}") from exc
        try:
            bank = QuestionSet.model_validate(raw)
        except ValidationError as exc:
            raise BankError(f"question bank {path}: " + "; ".join(_where(raw, e) for e in exc.errors())) from None
        hostile = [f"item {i} ({item.id!r})" for i, item in enumerate(bank.items) if item.injection is not None]
        if hostile:
            raise BankError(f"question bank {path}: {', '.join(hostile)}: field 'injection': a bank holds quiz "
                            "items only (the injection set is for evaluations)")
        return cls(bank.items, path)

    def pick_all(self, subject: str, difficulty: str, language: str) -> list[Item]:
        """Every item of this ``subject``, ``difficulty`` and ``language``, in file order."""
        return list(self._items.get((subject, difficulty, language), ()))

    def pick(self, subject: str, difficulty: str, language: str, asked: Sequence[str],
             rng: random.Random | None = None, choice: bool = False) -> Item | None:
        """An item for the round: of this ``subject``, ``difficulty`` and ``language`` (with ``options``, for a
        ``choice`` round), not among the questions the session was ``asked`` (their texts) while any is left, else
        any but the last asked; chosen at random (``rng``). ``None`` when the bank has none that fits: the Teacher
        writes the question."""
        fitting = [item for item in self._items.get((subject, difficulty, language), ())
                   if not choice or item.options]
        if not fitting:
            return None
        last = asked[-1] if asked else None
        fresh = [item for item in fitting if item.question not in asked] or \
            [item for item in fitting if item.question != last] or fitting
        return (rng or random).choice(fresh)


def _where(raw: Any, error: Any) -> str:
    """One validation error as ``item 3 ('math-easy-en-1'), field 'reference': …`` (or the top-level field)."""
    loc = list(error["loc"])
    message = error["msg"]
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        index = loc[1]
        items = raw.get("items") if isinstance(raw, dict) else None
        item = items[index] if isinstance(items, list) and index < len(items) else None
        named = f" ({item['id']!r})" if isinstance(item, dict) and isinstance(item.get("id"), str) else ""
        field = ".".join(str(part) for part in loc[2:])
        return f"item {index}{named}" + (f", field {field!r}" if field else "") + f": {message}"
    return (f"field {'.'.join(str(part) for part in loc)!r}: " if loc else "") + message
