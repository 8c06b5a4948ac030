"""The evaluation set: ``evals/questions.yaml``, validated by ``QuestionSet`` (``quiz.items``, whose JSON Schema is
``evals/questions.schema.json``, kept equal to it by ``tests/test_eval.py``), filtered and split.

Two kinds of item: quiz items (the Student agent answers; accuracy) and injection items (``Item.injection``: a
fixed hostile answer is graded as a person's; the attack success rate, ``evals.report``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from quiz.items import KINDS, Injection, Item, Kind, QuestionSet, Split, Text, Trap

__all__ = ["KINDS", "SCHEMA_PATH", "SET_PATH", "Injection", "Item", "Kind", "QuestionSet", "Split", "Text", "Trap",
           "load"]

SET_PATH = Path(__file__).with_name("questions.yaml")
SCHEMA_PATH = Path(__file__).with_name("questions.schema.json")


def load(path: Path = SET_PATH) -> QuestionSet:
    """Read and validate a question set (YAML). Raises ``pydantic.ValidationError`` naming the bad item."""
    return QuestionSet.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
