"""The quiz's vocabulary: difficulties, languages, verdicts, who plays the Student, ratings and the known
subjects. Closed sets, so they double as bounded metric label values (``telemetry.contract``). Which agents
and steps exist is the graph's agent table (``graphs.agents``), not a word list.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Difficulty = Literal["easy", "medium", "hard"]
Language = Literal["ko", "en"]
Verdict = Literal["correct", "partially_correct", "incorrect"]
Rating = Literal["up", "down"]  # a person's thumbs on a graded round
QuestionFormat = Literal["open", "choice"]  # an answer in the Student's words, or one of lettered options

# Who plays the Student: ``model`` — the Student agent; ``person`` — the caller, who answers the Teacher's
# question themselves.
Student = Literal["model", "person"]
ANSWERED_BY_MODEL: Final = "model"
ANSWERED_BY_PERSON: Final = "person"

SUBJECTS: Final = ("math", "science", "history", "english", "general", "programming", "geography")
OTHER_SUBJECT: Final = "other"  # what any free-text subject counts as where a closed set is needed

DIFFICULTIES: Final[tuple[Difficulty, ...]] = get_args(Difficulty)
LANGUAGES: Final[tuple[Language, ...]] = get_args(Language)
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)
STUDENTS: Final[tuple[Student, ...]] = get_args(Student)
RATINGS: Final[tuple[Rating, ...]] = get_args(Rating)
QUESTION_FORMATS: Final[tuple[QuestionFormat, ...]] = get_args(QuestionFormat)
LANGUAGE_NAMES: Final[dict[Language, str]] = {"ko": "Korean", "en": "English"}


def subject_of(subject: str) -> str:
    """The known subject ``subject`` names (case and spaces ignored), else ``other``."""
    s = subject.strip().lower()
    return s if s in SUBJECTS else OTHER_SUBJECT
