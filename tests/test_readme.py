"""The README and the docs stay true: the two commands, the tests the Reliability page cites, the files and links
they name."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs import ROOT, everything, page, pages

README = (ROOT / "README.md").read_text()


def test_the_two_commands_are_there_and_ci_runs_the_test_command() -> None:
    for kind in ("run", "test"):
        assert re.search(rf"<!-- {kind}-command -->\s*```bash\n.+\n```", README), kind
    found = re.search(r"<!-- test-command -->\s*```bash\n(.+)\n```", README)
    assert found
    test_command = found.group(1).strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == test_command  # CI runs exactly the README's test command, last


def test_every_test_the_reliability_table_cites_exists() -> None:
    cited = re.findall(r"`((?:tests/)?(?:[a-z0-9_]+\.py))::([a-z0-9_*]+)`", page("docs/explanation/reliability.md"))
    assert len(cited) >= 15
    for file, name in cited:
        source = (ROOT / "tests" / Path(file).name).read_text()
        pattern = name.replace("*", r"\w*")
        assert re.search(rf"^def {pattern}\(", source, re.M), f"{file}::{name}"


def test_every_file_the_docs_name_exists() -> None:
    """Every repository path the README and the docs name in code (``graphs/agents.py``, ``docs/page.png`` …) is
    there; placeholders (``<agent>``, ``{id}``, ``*``) and paths outside the checkout are not paths."""
    tops = {p.name for p in ROOT.iterdir()}
    named = set(re.findall(r"`([A-Za-z0-9_.\-]+/[A-Za-z0-9_./\-]+)`", everything()))
    paths = {n.split("::")[0] for n in named if n.split("/")[0] in tops and not re.search(r"[<{*]", n)}
    assert len(paths) >= 30
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (outside code blocks)."""
    found, in_code = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"^#{1,6} (.+)$", line)):
            found.add(slug(heading.group(1)))
    return found


def test_every_link_between_pages_leads_somewhere() -> None:
    """A relative link in the README or the docs names a file that is there and, with ``#…``, a heading in it:
    moving a section cannot leave a link behind."""
    broken = []
    for source in pages():
        text, in_code = [], False
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                in_code = not in_code
            elif not in_code:
                text.append(line)
        for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(text)):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            where = (source.parent / path).resolve() if path else source
            if not where.exists():
                broken.append(f"{source.relative_to(ROOT)}: {target}")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where.read_text(encoding="utf-8")):
                broken.append(f"{source.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_short_and_names_every_page_of_the_docs() -> None:
    assert len(README.splitlines()) <= 220
    linked = {(ROOT / target).resolve() for target in re.findall(r"\]\(((?:docs/)[^)#\s]+)", README)}
    results = {(ROOT / "docs" / "eval-embedded.md").resolve()}  # an evaluation's report, linked from its how-to
    documented = {path.resolve() for path in (ROOT / "docs").rglob("*.md")} - results
    assert documented <= linked, sorted(str(p.relative_to(ROOT)) for p in documented - linked)
