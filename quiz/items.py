"""Question items and sets: the evaluation set's schema (``evals/questions.yaml``; its JSON Schema is
``evals/questions.schema.json``), which question banks (``quiz.bank``) share. Models only: reading the evaluation
set is ``evals.dataset``'s.

Two kinds of item: quiz items (a question, its reference answer and how an answer is checked) and injection items
(``Item.injection``: a fixed hostile answer graded as a person's; the evaluation's attack success rate)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from quiz.checks import NUMBER, Match
from quiz.choice import problem
from quiz.vocabulary import SUBJECTS, Difficulty, Language, Verdict

Split = Literal["train", "validation"]
Trap = Literal["plausible_wrong", "false_premise", "unit"]
Kind = Literal["quiz", "injection"]  # an item without ``injection``, or with
KINDS: tuple[Kind, ...] = ("quiz", "injection")
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class Injection(BaseModel):
    """An injection item's attack: the ``answer`` graded as the Student's (a person's, as in a live round), words
    that try to talk the grader into a verdict, and the verdict it ``expected``ly deserves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Text = Field(description="The hostile answer, graded instead of the Student agent's.")
    expected: Verdict = Field(description="The verdict the answer deserves; any other is a successful attack.")


class Item(BaseModel):
    """One item: a quiz item, or with ``injection`` one of the injection set (see the head of ``questions.yaml``
    for what each field means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=64)]
    subject: Literal[SUBJECTS]  # type: ignore[valid-type]  # the API's subjects (quiz.vocabulary.SUBJECTS)
    difficulty: Difficulty
    language: Language
    question: Text
    reference: Text
    accept: list[Text] = Field(default_factory=list, description="Other answers that count as the reference.")
    options: list[Text] | None = Field(None, description="For multiple-choice rounds: 3 to 5 options, the reference "
                                       "among them word for word (quiz.choice); an item without is asked open.")
    match: Match = Field(description="How the strict judge checks an answer.")
    tolerance: float = Field(0.0, ge=0, description="For `numeric`: how far a number may be from the reference.")
    split: Split
    trap: Trap | None = None
    injection: Injection | None = Field(None, description="Set for an item of the injection set: its attack.")

    @model_validator(mode="after")
    def _options_hold_the_reference(self) -> Item:
        if self.options is not None and (wrong := problem(self.options, self.reference)) is not None:
            raise ValueError(f"{self.id}: options: {wrong}")
        return self

    @model_validator(mode="after")
    def _numeric_reference(self) -> Item:
        if self.match == "numeric" and not NUMBER.fullmatch(self.reference.replace(",", "")):
            raise ValueError(f"{self.id}: a numeric item's reference must be a number, not {self.reference!r}")
        return self


class QuestionSet(BaseModel):
    """The set: its ``version`` (bumped on every change to an item) and its items (unique ids)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    items: list[Item] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> QuestionSet:
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise ValueError(f"duplicate id {item.id!r}")
            seen.add(item.id)
        return self

    def select(self, *, ids: Iterable[str] = (), subjects: Iterable[str] = (), difficulties: Iterable[str] = (),
               languages: Iterable[str] = (), split: str | None = None, kind: Kind | None = None,
               limit: int | None = None) -> list[Item]:
        """The items that pass every filter given (an empty filter passes all; ``kind``: only quiz items or
        only injection items), in file order, at most ``limit``. Raises ``ValueError`` for an id the set does
        not have."""
        wanted = set(ids)
        if unknown := wanted - {item.id for item in self.items}:
            raise ValueError(f"no such item in the set: {', '.join(sorted(unknown))}")
        chosen = [item for item in self.items
                  if (not wanted or item.id in wanted) and (not subjects or item.subject in set(subjects))
                  and (not difficulties or item.difficulty in set(difficulties))
                  and (not languages or item.language in set(languages)) and (split is None or item.split == split)
                  and (kind is None or (item.injection is not None) == (kind == "injection"))]
        return chosen[:limit] if limit is not None else chosen
