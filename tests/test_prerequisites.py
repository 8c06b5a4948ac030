"""The README's test command sets up everything the tests start: nothing is installed only by CI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests import prerequisites

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Programs that come with the Python environment the command builds, not with the system.
FROM_THE_VENV = {"uv", "hadolint"}


def test_the_readme_test_command_runs_the_set_up_first() -> None:
    found = re.search(r"<!-- test-command -->\s*```bash\n(.+)\n```", README)
    assert found
    steps = [s.strip() for s in found.group(1).split("&&")]
    assert steps[0] == "python3 tests/prerequisites.py"
    assert steps[-1].startswith("uv run") and steps[-1].endswith("pytest")


def test_the_set_up_step_in_check_mode_finds_nothing_missing() -> None:
    """The suite is running, so every prerequisite must be there; if this fails, the list is wrong."""
    assert prerequisites.main(["--check"]) == 0


def programs_the_tests_start() -> set[str]:
    """Every literal program name the tests and the benchmark look up or run."""
    found: set[str] = set()
    for path in [*ROOT.joinpath("tests").rglob("*.py"), *ROOT.joinpath("bench").rglob("*.py")]:
        if path.name == "prerequisites.py":  # the set-up itself (apt-get, sudo), not a test
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "which" or (name == "_run" and path.name == "postgres.py"):
                found.add(node.args[0].value)
            if name == "glob" and node.args[0].value.startswith("/usr/"):
                found.add(node.args[0].value)
    return found


def test_every_program_the_tests_start_is_a_prerequisite() -> None:
    listed = {p for r in prerequisites.REQUIREMENTS for p in r.programs}
    basenames = {p.rsplit("/", 1)[-1] for p in listed}
    started = programs_the_tests_start()
    assert {"promtool", "prometheus", "initdb", "pg_ctl", "chromium", "node", "npm"} <= {
        p.rsplit("/", 1)[-1] for p in started}
    for program in started - FROM_THE_VENV:
        assert program in listed or program in basenames, f"{program} is started by a test but not set up"


def test_missing_programs_are_named_with_their_package() -> None:
    requirement = prerequisites.Requirement(("no-such-program-xyz",), ("xyz-tools",), "for a test", "anywhere")
    assert requirement.missing() == ["no-such-program-xyz"]
    assert all(r.debian and r.elsewhere for r in prerequisites.REQUIREMENTS)


def test_the_environment_the_commands_build_has_every_library_compiled_to_bytecode() -> None:
    """``[tool.uv] compile-bytecode``: the libraries start from their ``.pyc`` even where Python may not write
    one (``PYTHONDONTWRITEBYTECODE``), instead of compiling openai, LangChain, FastAPI … on every start (5.7 s
    to healthy against 2.8 s on 2 cores: the README's Performance section)."""
    import importlib.util

    import fastapi
    import langchain_core
    import openai

    for module in (openai, langchain_core, fastapi):
        assert module.__file__ is not None
        cached = importlib.util.cache_from_source(module.__file__)
        assert Path(cached).is_file(), f"{module.__name__} has no bytecode at {cached}"
