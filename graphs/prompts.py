"""Prompts as versioned data: one YAML file per agent and version, ``graphs/prompt_files/<agent>/<version>.yaml``
(reviewed like code; a change is a new version, never an edit of a shipped one). Each agent's prompt has its
own model (a subclass of ``AgentPrompt``, named in the agent table, ``graphs.agents``); the service picks a
version per agent (``PROMPT_VERSIONS``; default: the agent table's ``Agent.prompt_version``, ``1`` unless it
names another), ``question-app eval --prompts 1,2`` compares two, and every agent span says which it used
(``gen_ai.prompt.name``, ``quiz.prompt.version``).

Templates are filled per call with ``str.format``. User-supplied text is quoted as data inside the prompt: the
subject between ``<subject>`` tags (the API refuses ``<`` and ``>`` in it), the Student's answer — a person's or
the model's — between ``<answer>`` tags in the Teacher's grading request from version 2 on, escaped by
``as_data`` whatever the version (``TeacherPrompt.grading``), so no answer can close its tag. The Student never
sees the reference answer: its prompt is built from the question text alone.
"""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

from quiz.vocabulary import Difficulty

PROMPT_DIR = Path(__file__).with_name("prompt_files")
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # a file name under PROMPT_DIR/<agent>, no path
DEFAULT_VERSION = "1"  # the version an agent plays unless its row of the agent table names another


class AgentPrompt(BaseModel):
    """What every prompt file has: the agent's ``name`` and the file's ``version``; each agent's subclass adds
    its templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    system: str


PromptT = TypeVar("PromptT", bound=AgentPrompt)


def as_data(text: str) -> str:
    """``text`` (a person's or a model's words) fit to quote between tags in a prompt: ``&``, ``<`` and ``>``
    written as the HTML entities ``&amp;``, ``&lt;`` and ``&gt;`` (``html.escape``), so it can neither close its
    tag (``</answer>`` becomes ``&lt;/answer&gt;``) nor open another; ``html.unescape`` gives ``text`` back."""
    return html.escape(text, quote=False)


CHOICE = ("Make it a multiple-choice question: also write 4 short options, exactly one of them the reference "
          "answer word for word, the others plausible but wrong, in a random order. Do not put the options in the "
          "question text.")


class TeacherPrompt(AgentPrompt):
    """The Teacher's templates: ``system`` ({language}), ``ask`` ({difficulty} {subject} {history}),
    ``grade`` ({question} {reference_answer} {answer}; filled by ``grading``) and ``choice``: what is added to
    ``ask`` for a multiple-choice question (``quiz.choice``; versions that do not say it use ``CHOICE``)."""

    ask: str
    grade: str
    choice: str = CHOICE

    def grading(self, question: str, reference_answer: str, answer: str) -> str:
        """The grading request: ``grade`` filled, with the Student's ``answer`` escaped by ``as_data`` whatever
        the version's template says around it (version 2 quotes it between ``<answer>`` tags and says nothing
        inside them changes the rules or the verdict; version 1, kept for comparisons, does neither)."""
        return self.grade.format(question=question, reference_answer=reference_answer, answer=as_data(answer))


class StudentPrompt(AgentPrompt):
    """The Student's templates: a ``persona`` per difficulty, ``system`` ({persona} {language}) and ``answer``
    ({question})."""

    personas: dict[Difficulty, str]
    answer: str


class ReviewerPrompt(AgentPrompt):
    """The Reviewer's templates: ``system`` ({language}), ``review`` ({subject} {difficulty} {language} {question}
    {reference_answer}) and ``feedback`` ({question} {reason}: what the Teacher is told of a rejected question)."""

    review: str
    feedback: str


class TutorPrompt(AgentPrompt):
    """The Tutor's templates: ``system`` ({language}) and ``hint`` ({subject} {question} {reference_answer}
    {given} {number}: the hints given so far, one per line, and the number of the one to write)."""

    hint: str


def versions(agent: str) -> list[str]:
    """The versions of ``agent``'s prompt that exist, in file-name order."""
    return sorted(path.stem for path in (PROMPT_DIR / agent).glob("*.yaml"))


@cache
def load(agent: str, version: str, model: type[PromptT]) -> PromptT:
    """``agent``'s prompt ``version`` as ``model``. Raises ``ValueError`` naming the versions that exist (a missing
    file) or the problem (a file whose name, version or fields do not match)."""
    if not VERSION_NAME.fullmatch(version) or not VERSION_NAME.fullmatch(agent):
        raise ValueError(f"{agent!r} / {version!r}: a prompt's agent and version are names (letters, digits, "
                         "'.', '_', '+', '-'; not starting with '.'), never a path")
    path = PROMPT_DIR / agent / f"{version}.yaml"
    if not path.is_file():
        raise ValueError(f"no {agent} prompt version {version!r}; there are: {', '.join(versions(agent))}")
    prompt = model.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    if prompt.name != agent or prompt.version != version:
        raise ValueError(f"{path} says name {prompt.name!r}, version {prompt.version!r}")
    return prompt
