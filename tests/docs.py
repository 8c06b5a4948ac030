"""The project's documentation as the tests read it: the README, the changelog and every page under ``docs/``
(the pages moved out of the README keep being checked wherever they are)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[Path]:
    """README.md, CHANGELOG.md and every Markdown page under docs/, in a stable order."""
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def everything() -> str:
    """Every page's text, one after the other."""
    return "\n\n".join(page.read_text(encoding="utf-8") for page in pages())


def page(path: str) -> str:
    """The text of one page, by its path in the repository (``docs/how-to/evaluate.md``)."""
    return (ROOT / path).read_text(encoding="utf-8")
