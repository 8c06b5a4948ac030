"""The three ways to reach a model, each through the same OpenAI-protocol client, against loopback servers.

Azure is faked at its edges only: the Azure OpenAI REST paths are served by the fake server, and the
Entra ID token comes from a stand-in for ``DefaultAzureCredential`` (there is no Azure here).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

import app.llm
from app.llm import COGNITIVE_SERVICES_SCOPE
from app.settings import Provider, Settings
from tests.conftest import CANARY_KEY
from tests.fakes.openai_server import FakeOpenAI


class FakeEntraCredential:
    """Plays ``azure.identity.aio.DefaultAzureCredential`` under AKS Workload Identity."""

    instances: list[FakeEntraCredential] = []
    refuse = False

    def __init__(self, **_: object) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False
        FakeEntraCredential.instances.append(self)

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes)
        if FakeEntraCredential.refuse:
            raise ClientAuthenticationError(f"AADSTS700016: token exchange refused for {CANARY_KEY}")
        return AccessToken("entra-token-for-tests", int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeEntraCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@pytest.fixture
def entra(monkeypatch: pytest.MonkeyPatch):
    FakeEntraCredential.instances = []
    FakeEntraCredential.refuse = False
    monkeypatch.setattr(app.llm, "DefaultAzureCredential", FakeEntraCredential)
    return FakeEntraCredential


def azure_settings(fake_llm: FakeOpenAI, **extra: Any) -> Settings:
    return Settings(azure_openai_endpoint=fake_llm.root_url, llm_timeout_s=2.0, llm_max_retries=0, **extra)


def test_settings_choose_the_provider(fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert Settings().provider is Provider.EMBEDDED
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert Settings().provider is Provider.OPENAI
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com/")
    settings = Settings()
    assert (settings.provider, settings.model_name) == (Provider.AZURE, "gpt-5.2-chat")
    assert settings.azure_openai_api_version == "2024-12-01-preview"


def test_bad_settings_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match="llm_timeout_s"):
        Settings()
    monkeypatch.delenv("LLM_TIMEOUT_S")
    monkeypatch.setenv("CHECKPOINTER_URL", "redis://x")
    with pytest.raises(ValueError, match="CHECKPOINTER_URL"):
        Settings()


def test_azure_with_an_api_key_uses_deployment_paths(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(azure_settings(fake_llm, azure_openai_api_key=CANARY_KEY))
    r = client.post("/ask", json={"subject": "math"})
    assert r.status_code == 200, r.text
    body = r.json()

    assert body["model"] == "gpt-5.2-chat"
    assert client.get("/health").json()["provider"] == "azure_openai"
    request = fake_llm.requests[0]
    assert request.path == "/openai/deployments/gpt-5.2-chat/chat/completions"
    assert parse_qs(request.query)["api-version"] == ["2024-12-01-preview"]
    assert request.headers["api-key"] == CANARY_KEY
    assert "authorization" not in request.headers


def test_azure_without_a_key_uses_an_entra_id_token(make_client, fake_llm: FakeOpenAI, entra) -> None:
    client = make_client(azure_settings(fake_llm))
    assert client.post("/ask", json={"subject": "math"}).status_code == 200

    assert all(r.headers["authorization"] == "Bearer entra-token-for-tests" for r in fake_llm.requests)
    assert all("api-key" not in r.headers for r in fake_llm.requests)
    (credential,) = entra.instances
    assert credential.scopes[0] == (COGNITIVE_SERVICES_SCOPE,)
    client.__exit__(None, None, None)
    assert credential.closed  # the async credential is closed on shutdown


def test_a_refused_entra_token_is_502_and_leaks_nothing(make_client, fake_llm: FakeOpenAI, entra,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    entra.refuse = True
    client = make_client(azure_settings(fake_llm))
    r = client.post("/ask", json={"subject": "math"})
    assert r.status_code == 502
    assert r.json()["type"] == "/problems/llm-auth"
    assert "AADSTS" not in r.text and CANARY_KEY not in r.text
    assert fake_llm.requests == []  # nothing was sent without a token
    entra.refuse = False
    assert client.post("/ask", json={"subject": "math"}).status_code == 200


def test_openai_compatible_endpoint_sends_the_key_as_bearer(client, fake_llm: FakeOpenAI) -> None:
    assert client.post("/ask", json={}).status_code == 200
    assert {r.path for r in fake_llm.requests} == {"/v1/chat/completions"}
    assert {r.headers["authorization"] for r in fake_llm.requests} == {f"Bearer {CANARY_KEY}"}
    assert {r.body["model"] for r in fake_llm.requests} == {"gpt-5.2-chat"}
    # Structured output through a forced function call, with a completion-token cap.
    for r in fake_llm.requests:
        assert r.body["tool_choice"]["type"] == "function"
        assert r.body["max_completion_tokens"] == 512
