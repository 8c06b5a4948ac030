"""The house keeps its shape: dependencies point one way, names live in the contract, the README's Layout
names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "graphs", "telemetry", "evals")
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
            assert under(name, "telemetry.contract"), (path.name, name)


@pytest.mark.parametrize("path", modules("telemetry"), ids=lambda p: p.name)
def test_telemetry_never_imports_the_graph_or_the_app(path: Path) -> None:
    assert not {n for n in imports(path) if under(n, "graphs", "app")}, path.name


def test_the_contract_depends_on_the_otel_api_only() -> None:
    for name in imports(ROOT / "telemetry" / "contract.py"):
        assert under(name, *OTEL_API, "__future__", "dataclasses", "typing"), name


def string_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("path", [p for pkg in ("app", "graphs", "evals") for p in modules(pkg)], ids=lambda p: p.name)
def test_telemetry_names_are_spelled_only_in_the_contract(path: Path) -> None:
    """Our span, attribute, event and metric names are imported from telemetry.contract, never retyped."""
    ours = re.compile(r"^(quiz\.|invoke_agent|invoke_workflow|structured_output\.)")
    assert not [s for s in string_literals(path) if ours.match(s)], path.name


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout\n", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    for package in PACKAGES:
        for path in modules(package):
            if path.name != "__init__.py" or package == "telemetry":
                assert re.search(rf"^\s+{re.escape(path.name)}\s", layout, re.M), f"{package}/{path.name}"
