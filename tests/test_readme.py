"""The README stays true: its commands, its configuration table and the tests its Reliability table cites."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_two_commands_are_there_and_ci_runs_the_test_command() -> None:
    for kind in ("run", "test"):
        assert re.search(rf"<!-- {kind}-command -->\s*```bash\n.+\n```", README), kind
    found = re.search(r"<!-- test-command -->\s*```bash\n(.+)\n```", README)
    assert found
    test_command = found.group(1).strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == test_command  # CI runs exactly the README's test command, last


def test_every_setting_is_documented_and_every_documented_variable_exists() -> None:
    table = section("Configuration").split("\n\n")[1]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(r.split("|")[1] for r in table.splitlines()[2:])))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields == documented, (fields - documented, documented - fields)


def test_every_test_the_reliability_table_cites_exists() -> None:
    cited = re.findall(r"`((?:tests/)?(?:[a-z0-9_]+\.py))::([a-z0-9_*]+)`", section("Reliability"))
    assert len(cited) >= 15
    for file, name in cited:
        source = (ROOT / "tests" / Path(file).name).read_text()
        pattern = name.replace("*", r"\w*")
        assert re.search(rf"^def {pattern}\(", source, re.M), f"{file}::{name}"


def test_every_file_the_readme_names_exists() -> None:
    """Every repository path the README names in code (``graphs/agents.py``, ``docs/page.png`` …) is there;
    placeholders (``<agent>``, ``{id}``, ``*``) and paths outside the checkout are not paths."""
    tops = {p.name for p in ROOT.iterdir()}
    named = set(re.findall(r"`([A-Za-z0-9_.\-]+/[A-Za-z0-9_./\-]+)`", README))
    paths = {n.split("::")[0] for n in named if n.split("/")[0] in tops and not re.search(r"[<{*]", n)}
    assert len(paths) >= 30
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []
