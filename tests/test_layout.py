"""The house keeps its shape: dependencies point one way, down the floors question_app → evals → app → graphs
→ telemetry names / quiz vocabulary; names live in the contract; the Layout (docs/explanation/architecture.md)
names every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("question_app", "evals", "app", "graphs", "telemetry", "quiz")
# Each floor may import only the floors below it (telemetry and quiz share the ground floor; telemetry's names
# may use the quiz's words, never the other way round).
FLOORS = {"question_app": ("evals", "app", "graphs", "telemetry", "quiz"),
          "evals": ("app", "graphs", "telemetry", "quiz"), "app": ("graphs", "telemetry", "quiz"),
          "graphs": ("telemetry", "quiz"), "telemetry": ("quiz",), "quiz": ()}
OTEL_API = ("opentelemetry.trace", "opentelemetry.metrics", "opentelemetry.semconv")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from a import b` → a.b
    return found


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", modules("graphs"), ids=lambda p: p.name)
def test_the_graph_imports_no_web_framework_no_app_and_only_the_otel_api(path: Path) -> None:
    for name in imports(path):
        assert not under(name, "app", "fastapi", "starlette", "uvicorn"), (path.name, name)
        if under(name, "opentelemetry"):
            assert under(name, *OTEL_API), (path.name, name)
        if under(name, "telemetry"):
            # the names, the span helpers, and the price table (pure data: no SDK behind any of them)
            assert under(name, "telemetry.contract", "telemetry.spans", "telemetry.cost"), (path.name, name)


@pytest.mark.parametrize("path", modules("telemetry"), ids=lambda p: p.name)
def test_telemetry_never_imports_the_graph_or_the_app(path: Path) -> None:
    assert not {n for n in imports(path) if under(n, "graphs", "app")}, path.name


def test_the_contract_depends_on_the_otel_api_and_the_quiz_words_only() -> None:
    for name in imports(ROOT / "telemetry" / "contract.py"):
        assert under(name, *OTEL_API, "quiz.vocabulary", "__future__", "dataclasses", "typing"), name


@pytest.mark.parametrize("package", PACKAGES)
def test_no_arrow_runs_back_up_the_floors(package: str) -> None:
    ours = set(PACKAGES)
    for path in modules(package):
        for name in imports(path):
            top = name.split(".", 1)[0]
            if top in ours and top != package:
                assert top in FLOORS[package], f"{package}/{path.relative_to(ROOT / package)} imports {name}"


def loaded_by(*names: str) -> set[str]:
    """The packages (``opentelemetry.<part>`` for OpenTelemetry's) that importing ``names`` loads, in a fresh
    interpreter."""
    probe = (f"import sys, {', '.join(names)};"
             "print(sorted({'.'.join(m.split('.')[:2]) if m.startswith('opentelemetry.') else m.split('.')[0]"
             " for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(ast.literal_eval(out))


def test_importing_the_telemetry_names_imports_no_sdk_and_no_web_framework() -> None:
    """The graph imports ``telemetry.contract``: that must not drag in the SDK, the exporters or FastAPI."""
    loaded = loaded_by("telemetry", "telemetry.contract", "telemetry.spans", "quiz.vocabulary")
    assert not loaded & {"opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation", "fastapi",
                         "starlette", "uvicorn", "grpc", "langchain_core", "graphs", "app", "evals"}, loaded
    # The graph brings LangChain (whose langsmith loads parts of the SDK itself), never our SDK set-up or the web.
    loaded = loaded_by("graphs.agents", "graphs.views", "graphs.graph")
    assert not loaded & {"opentelemetry.exporter", "opentelemetry.instrumentation", "fastapi", "starlette",
                         "uvicorn", "app", "evals"}, loaded
    assert "'telemetry.sdk'" not in subprocess.run(
        [sys.executable, "-c", "import sys, graphs.agents; print(list(sys.modules))"], cwd=ROOT, capture_output=True,
        text=True, check=True).stdout


def string_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("path", [p for pkg in PACKAGES if pkg != "telemetry" for p in modules(pkg)],
                         ids=lambda p: p.name)
def test_telemetry_names_are_spelled_only_in_the_contract(path: Path) -> None:
    """Our span, attribute, event and metric names are imported from telemetry.contract, never retyped."""
    ours = re.compile(r"^(quiz\.|invoke_agent|invoke_workflow|structured_output\.)")
    assert not [s for s in string_literals(path) if ours.match(s)], path.name


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "docs" / "explanation" / "architecture.md").read_text()
    layout = readme.split("## Layout\n", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    for package in PACKAGES:
        for path in modules(package):
            if path.name != "__init__.py" or path.parent != ROOT / package:
                assert re.search(rf"^\s+{re.escape(path.name)}\s", layout, re.M), f"{package}/{path.name}"
