"""The service as a real process (its ``question-app`` entry point), for tests that need one: a process's
own environment, signals, several replicas."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes import free_port

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any setting of the service's (every ``Settings`` variable), Azure or OTel
    configuration — a developer's shell must not change what a test plays against — plus ``extra``."""
    from tests.conftest import setting_variables

    ours = setting_variables()
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith(("AZURE_", "OTEL_"))}
    return {**env, **extra}


def start_service(env: dict[str, str], log: Path, timeout_s: float = 30,
                  command: list[str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``question-app`` (or ``command``) on a free port with ``env``, logging to ``log``; wait until
    ``/health`` answers.

    Returns the process and its base URL. Raises ``AssertionError`` (with the log) if it does not come up.
    """
    port = free_port()
    process = subprocess.Popen(command or [str(Path(sys.executable).parent / "question-app")],
                               env={**env, "PORT": str(port)},
                               cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
