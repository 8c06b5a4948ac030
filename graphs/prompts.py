"""Prompts as versioned data: one YAML file per agent and version, ``graphs/prompt_files/<agent>/<version>.yaml``
(reviewed like code; a change is a new version, never an edit of a shipped one). The service picks a version
per agent (``TEACHER_PROMPT_VERSION``, ``STUDENT_PROMPT_VERSION``; default ``1``), ``question-app eval
--prompts 1,2`` compares two, and every agent span says which it used (``gen_ai.prompt.name``,
``quiz.prompt.version``).

Templates are filled per call with ``str.format``. User-supplied text (the subject) is quoted as data inside
the prompt and the Student never sees the reference answer: its prompt is built from the question text alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from telemetry.contract import AgentName, Difficulty

LANGUAGE_NAMES = {"ko": "Korean", "en": "English"}
PROMPT_DIR = Path(__file__).with_name("prompt_files")
DEFAULT_VERSION = "1"


class TeacherPrompt(BaseModel):
    """The Teacher's templates: ``system`` ({language}), ``ask`` ({difficulty} {subject} {history}) and
    ``grade`` ({question} {reference_answer} {answer})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["teacher"]
    version: str
    system: str
    ask: str
    grade: str


class StudentPrompt(BaseModel):
    """The Student's templates: a ``persona`` per difficulty, ``system`` ({persona} {language}) and ``answer``
    ({question})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["student"]
    version: str
    personas: dict[Difficulty, str]
    system: str
    answer: str


def versions(agent: AgentName) -> list[str]:
    """The versions of ``agent``'s prompt that exist, in file-name order."""
    return sorted(path.stem for path in (PROMPT_DIR / agent).glob("*.yaml"))


@cache
def load(agent: AgentName, version: str) -> TeacherPrompt | StudentPrompt:
    """``agent``'s prompt ``version``. Raises ``ValueError`` naming the versions that exist (a missing file)
    or the problem (a file whose name, version or fields do not match)."""
    path = PROMPT_DIR / agent / f"{version}.yaml"
    if not path.is_file():
        raise ValueError(f"no {agent} prompt version {version!r}; there are: {', '.join(versions(agent))}")
    model = TeacherPrompt if agent == "teacher" else StudentPrompt
    prompt = model.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    if prompt.version != version:
        raise ValueError(f"{path} says version {prompt.version!r}")
    return prompt


def _teacher(version: str = DEFAULT_VERSION) -> TeacherPrompt:
    prompt = load("teacher", version)
    assert isinstance(prompt, TeacherPrompt)
    return prompt


def _student(version: str = DEFAULT_VERSION) -> StudentPrompt:
    prompt = load("student", version)
    assert isinstance(prompt, StudentPrompt)
    return prompt


@dataclass(frozen=True)
class Prompts:
    """The prompt version each agent plays with in a run."""

    teacher: TeacherPrompt = field(default_factory=_teacher)
    student: StudentPrompt = field(default_factory=_student)

    @classmethod
    def of(cls, teacher: str = DEFAULT_VERSION, student: str = DEFAULT_VERSION) -> Prompts:
        """The prompts at these versions (``ValueError`` for a version that does not exist)."""
        return cls(_teacher(teacher), _student(student))

    def for_agent(self, agent: AgentName) -> TeacherPrompt | StudentPrompt:
        """``agent``'s prompt."""
        return self.teacher if agent == "teacher" else self.student
