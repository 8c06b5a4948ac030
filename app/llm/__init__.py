"""The language model behind the agents: Azure OpenAI, any OpenAI-compatible endpoint, or the embedded one.

All three go through the same OpenAI-protocol client (``langchain-openai`` → ``openai``), so retries,
timeouts and the ``opentelemetry-instrumentation-openai-v2`` spans are the same everywhere. Which one is
used follows ``Settings.provider``; each has one builder in ``BUILDERS``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from langchain_core.language_models import BaseChatModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from app.llm.embedded import EmbeddedModelServer, find_embedded_model
from app.settings import EMBEDDED_MODEL_NAME, Provider, Settings, redact

if TYPE_CHECKING:  # imported where Entra ID is used: azure-identity (MSAL, requests, cryptography) costs ~0.3 s
    from azure.identity.aio import DefaultAzureCredential

log = logging.getLogger(__name__)

# Entra ID scope for Azure OpenAI / AI Foundry
# (https://learn.microsoft.com/azure/ai-services/openai/how-to/managed-identity).
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# gen_ai.provider.name values (OpenTelemetry GenAI semantic conventions).
GEN_AI_PROVIDER = {Provider.AZURE: "azure.ai.openai", Provider.OPENAI: "openai", Provider.EMBEDDED: "openai"}


@dataclass
class LLM:
    """The chat model and what to report about it. ``aclose()`` releases the HTTP pool, the credential and
    the embedded server."""

    chat: BaseChatModel
    provider: Provider
    model: str
    endpoint: str
    http_client: httpx2.AsyncClient
    credential: DefaultAzureCredential | None = None
    embedded: EmbeddedModelServer | None = None

    @property
    def gen_ai_provider(self) -> str:
        """``gen_ai.provider.name``: ``azure.ai.openai`` or ``openai``."""
        return GEN_AI_PROVIDER[self.provider]

    async def aclose(self) -> None:
        """Close everything this LLM opened; safe to call once per ``build_llm()``."""
        await self.http_client.aclose()
        if self.credential is not None:
            await self.credential.close()
        if self.embedded is not None:
            await self.embedded.stop()


Builder = Callable[[Settings, dict[str, Any], httpx2.AsyncClient], Awaitable[LLM]]


async def _azure(settings: Settings, common: dict[str, Any], http_client: httpx2.AsyncClient) -> LLM:
    endpoint = str(settings.azure_openai_endpoint)
    credential = None
    if settings.azure_openai_api_key is not None:
        auth: dict[str, Any] = {"api_key": settings.azure_openai_api_key}
    else:
        # AKS Workload Identity: the federated token is exchanged for an Entra ID token on demand.
        from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

        credential = DefaultAzureCredential()
        auth = {"azure_ad_async_token_provider": get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)}
    chat = AzureChatOpenAI(azure_endpoint=endpoint, azure_deployment=settings.azure_openai_deployment_name,
                           api_version=settings.azure_openai_api_version, **auth, **common)
    log.info("LLM: Azure OpenAI at %s, deployment %s (%s)", redact(endpoint), settings.azure_openai_deployment_name,
             "API key" if credential is None else "Entra ID via DefaultAzureCredential")
    return LLM(chat, Provider.AZURE, settings.model_name, endpoint, http_client, credential=credential)


async def _openai_compatible(settings: Settings, common: dict[str, Any], http_client: httpx2.AsyncClient) -> LLM:
    endpoint = str(settings.openai_base_url or "https://api.openai.com/v1")
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    chat = ChatOpenAI(base_url=endpoint, api_key=key, model=settings.openai_model, **common)
    log.info("LLM: OpenAI-compatible endpoint %s, model %s", redact(endpoint), settings.openai_model)
    return LLM(chat, Provider.OPENAI, settings.model_name, endpoint, http_client)


async def _embedded(settings: Settings, common: dict[str, Any], http_client: httpx2.AsyncClient) -> LLM:
    server = EmbeddedModelServer(settings.embedded_model_path or find_embedded_model(),
                                 threads=settings.embedded_model_threads)
    await server.start(settings.embedded_start_timeout_s)
    # llama.cpp's server reads `max_tokens`, not the `max_completion_tokens` langchain-openai sends.
    chat = ChatOpenAI(base_url=server.base_url, api_key="embedded", model=settings.model_name,
                      extra_body={"max_tokens": settings.llm_max_tokens}, **common)
    log.warning("LLM: no AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL set — using the EMBEDDED model %s at %s. "
                "It is tiny and its answers are poor; see docs/how-to/azure-openai.md.",
                EMBEDDED_MODEL_NAME, server.base_url)
    return LLM(chat, Provider.EMBEDDED, settings.model_name, server.base_url, http_client, embedded=server)


BUILDERS: dict[Provider, Builder] = {Provider.AZURE: _azure, Provider.OPENAI: _openai_compatible,
                                     Provider.EMBEDDED: _embedded}


async def build_llm(settings: Settings) -> LLM:
    """Create the chat model the settings choose (see ``app.settings`` for the order).

    Raises ``app.embedded_model.EmbeddedModelUnavailable`` when nothing is configured and the embedded model
    cannot run; nothing is left open then.
    """
    # Our own HTTP client per LLM (langchain-openai would share one cached client across event loops),
    # closed in ``LLM.aclose()``; its pool bounds concurrent connections to the LLM endpoint. The openai SDK
    # speaks httpx2 (its client and limits types).
    http_client = openai.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=settings.llm_max_connections, max_keepalive_connections=32))
    common = {"timeout": settings.llm_timeout_s, "max_retries": settings.llm_max_retries,
              "max_tokens": settings.llm_max_tokens, "http_async_client": http_client}
    try:
        return await BUILDERS[settings.provider](settings, common, http_client)
    except BaseException:
        await http_client.aclose()
        raise
