"""The three ways to reach a model, each through the same OpenAI-protocol client, against loopback servers.

Azure is faked at its edges only: the Azure OpenAI REST paths are served by the fake server, and Workload
Identity runs through ``azure-identity``'s real ``DefaultAzureCredential`` → ``WorkloadIdentityCredential``
chain in a service process, against a local Entra ID token endpoint over TLS (``tests/fakes/entra.py``),
configured by the variables AKS's webhook sets. In-process tests that need to see the credential object
itself (its scope, its closing) use a stand-in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from app.llm import COGNITIVE_SERVICES_SCOPE
from app.settings import Provider, Settings
from tests.conftest import CANARY_KEY
from tests.fakes.entra import FakeEntra
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import SPANS_PER_ROUND, OTLPReceiver
from tests.service import clean_env, start_service, stop


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
    # app.llm imports azure-identity when Azure OpenAI without a key is configured: the class is looked up there.
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", FakeEntraCredential)
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


def test_azure_with_an_api_key_uses_deployment_paths(make_client, fake_llm: FakeOpenAI,
                                                     telemetry_env: OTLPReceiver) -> None:
    client = make_client(azure_settings(fake_llm, azure_openai_api_key=CANARY_KEY))
    r = client.post("/ask", json={"subject": "math"})
    assert r.status_code == 200, r.text
    body = r.json()
    # Every GenAI span of the round names the same provider, the LLM client spans included (the
    # instrumentation alone would say "openai").
    spans = telemetry_env.wait_for(
        lambda: (s := telemetry_env.trace(body["trace_id"])) and len(s) >= SPANS_PER_ROUND and s)
    genai = [s for s in spans if "gen_ai.operation.name" in s.attributes]
    assert {s.attributes["gen_ai.operation.name"] for s in genai} == {"invoke_workflow", "invoke_agent", "chat",
                                                                      "execute_task"}
    assert {s.attributes["gen_ai.provider.name"] for s in genai} == {"azure.ai.openai"}  # LangChain's too

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


# --- Workload Identity through azure-identity's real credential chain -------------------------------------
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0b7d2a8e-5f1c-4e6a-9d3b-1c2e3f4a5b6c"


@pytest.fixture
def workload_identity(tmp_path: Path, fake_llm: FakeOpenAI):
    """The environment AKS's Workload Identity webhook gives a pod, pointed at a local Entra ID, and the
    service started with it (its real DefaultAzureCredential → WorkloadIdentityCredential)."""
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("federated-service-account-jwt-for-tests")
    with FakeEntra(tmp_path, expires_in=3600) as entra:
        env = clean_env(AZURE_OPENAI_ENDPOINT=fake_llm.root_url, AZURE_TENANT_ID=TENANT, AZURE_CLIENT_ID=CLIENT,
                        AZURE_FEDERATED_TOKEN_FILE=str(token_file), AZURE_AUTHORITY_HOST=entra.authority,
                        SSL_CERT_FILE=str(entra.ca_file), OTEL_SDK_DISABLED="true", LLM_MAX_RETRIES="0",
                        LOG_LEVEL="debug")
        yield entra, env


def test_workload_identity_exchanges_the_federated_token_for_a_bearer_token(workload_identity, fake_llm: FakeOpenAI,
                                                                            tmp_path: Path) -> None:
    entra, env = workload_identity
    process, base = start_service(env, tmp_path / "service.log")
    try:
        assert httpx.get(f"{base}/health").json()["provider"] == "azure_openai"
        for _ in range(2):
            assert httpx.post(f"{base}/ask", json={"subject": "math"}, timeout=30).status_code == 200
    finally:
        stop(process)
    # The projected service-account token reached Entra ID as the client assertion, for the right scope.
    (exchange,) = entra.requests  # one token served all eight LLM calls
    assert exchange["path"] == f"/{TENANT}/oauth2/v2.0/token"
    assert exchange["grant_type"] == "client_credentials" and exchange["client_id"] == CLIENT
    assert exchange["client_assertion"] == "federated-service-account-jwt-for-tests"
    assert exchange["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert exchange["scope"] == COGNITIVE_SERVICES_SCOPE
    # And Entra's token reached Azure OpenAI as the bearer token, on the deployment's path, with no key.
    assert len(fake_llm.requests) == 8  # two rounds of four calls
    assert {r.headers["authorization"] for r in fake_llm.requests} == {"Bearer entra-token-1"}
    assert all("api-key" not in r.headers and "/deployments/gpt-5.2-chat/" in r.path for r in fake_llm.requests)
    log = (tmp_path / "service.log").read_text()
    assert "entra-token-1" not in log and "federated-service-account-jwt" not in log


def test_an_expired_entra_token_is_replaced(workload_identity, fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    entra, env = workload_identity
    entra.expires_in = 2  # seconds
    process, base = start_service(env, tmp_path / "service.log")
    try:
        assert httpx.post(f"{base}/ask", json={}, timeout=30).status_code == 200
        time.sleep(3)  # the token has expired
        assert httpx.post(f"{base}/ask", json={}, timeout=30).status_code == 200
    finally:
        stop(process)
    assert len(entra.requests) == 2
    first, second = fake_llm.requests[:4], fake_llm.requests[4:]  # a round is four calls
    assert {r.headers["authorization"] for r in first} == {"Bearer entra-token-1"}
    assert {r.headers["authorization"] for r in second} == {"Bearer entra-token-2"}


def test_a_refused_federated_credential_is_502_auth(workload_identity, fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    entra, env = workload_identity
    entra.refuse = True
    process, base = start_service(env, tmp_path / "service.log")
    try:
        r = httpx.post(f"{base}/ask", json={}, timeout=30)
        assert r.status_code == 502 and r.json()["type"] == "/problems/llm-auth"
        assert "AADSTS" not in r.text
        assert fake_llm.requests == []  # nothing was sent to the model without a token
        entra.refuse = False  # the role assignment / federated credential is fixed: the next round works
        assert httpx.post(f"{base}/ask", json={}, timeout=30).status_code == 200
    finally:
        stop(process)


def test_the_logged_endpoint_never_carries_credentials(make_client, fake_llm: FakeOpenAI,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """An OpenAI-compatible endpoint may carry ``user:password@`` or ``?api-key=``: the start-up line names the
    endpoint with both redacted."""
    caplog.set_level("INFO")
    endpoint = fake_llm.base_url.replace("http://", f"http://proxy:{CANARY_KEY}@") + f"?api-key={CANARY_KEY}"
    make_client(openai_base_url=endpoint)
    assert "OpenAI-compatible endpoint http://proxy:***@127.0.0.1:" in caplog.text
    assert CANARY_KEY not in caplog.text and "api-key=***" in caplog.text
