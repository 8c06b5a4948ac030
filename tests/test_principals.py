"""Principals: who asks owns what they made. API keys as ``name:secret``, Entra ID access tokens validated
against a real JWKS endpoint over TLS (a test CA), sessions that another principal cannot reach on any route,
and AG-UI thread ids that cannot be guessed, planted or silently re-created."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth import parse_api_keys
from tests.fakes.entra import FakeEntra, SigningKey
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.test_ag_ui import run, run_input

ALICE = {"authorization": "Bearer alice-secret-1"}
BOB = {"x-api-key": "bob-secret-2"}
KEYS = "alice:alice-secret-1, bob:bob-secret-2"
AUDIENCE = "api://question-app"


def test_api_keys_are_name_secret_pairs_and_a_bare_secret_gets_a_stable_name() -> None:
    assert parse_api_keys("alice:s3cret, bob:x:y") == {"alice": "s3cret", "bob": "x:y"}
    bare = parse_api_keys("first-key-123, second-key-456")
    assert list(bare.values()) == ["first-key-123", "second-key-456"]
    assert all(name.startswith("key-") and len(name) == 16 for name in bare)
    assert parse_api_keys("second-key-456, first-key-123") == dict(reversed(bare.items()))  # order-free names
    for bad in ("alice:", "al ice:x", "alice:1,alice:2", "a/b:x"):
        with pytest.raises(ValueError) as raised:
            parse_api_keys(bad)
        assert "x" not in str(raised.value).split("API_KEYS")[0]  # the message names the rule, not a secret


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=KEYS)


def test_a_session_is_not_found_for_another_principal_on_every_route(keyed: TestClient) -> None:
    started = keyed.post("/ask", json={"subject": "math"}, headers=ALICE)
    assert started.status_code == 200
    session = started.json()["session_id"]
    unknown = "x" * 22
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/ask", {"session_id": session}),
        ("GET", f"/sessions/{session}", None),
        ("POST", f"/sessions/{session}/rounds/1/feedback", {"rating": "up"}),
        ("DELETE", f"/sessions/{session}", None),
    ]
    for method, path, body in attempts:
        theirs = keyed.request(method, path, json=body, headers=BOB)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.json()["type"] == "/problems/session-not-found"
        # word for word what a session that never existed gets: B learns nothing about A's id
        never = keyed.request(method, path.replace(session, unknown),
                              json={**body, "session_id": unknown} if body and "session_id" in body else body,
                              headers=BOB)
        assert theirs.json()["detail"].replace(session, unknown) == never.json()["detail"]
    # A's session is untouched by all of it, and still A's
    assert keyed.get(f"/sessions/{session}", headers=ALICE).json()["rounds_played"] == 1
    assert keyed.post("/ask", json={"session_id": session}, headers=ALICE).json()["round"] == 2


def test_an_ag_ui_thread_is_not_found_for_another_principal(keyed: TestClient) -> None:
    thread = str(uuid.uuid4())
    assert run(keyed, run_input(thread), ALICE)[-1].type == "RUN_FINISHED"
    (error,) = [e for e in run(keyed, run_input(thread), BOB) if e.type == "RUN_ERROR"]
    assert error.code == "/problems/session-not-found"
    assert keyed.get(f"/sessions/{thread}", headers=ALICE).json()["rounds_played"] == 1  # not B's round


@pytest.mark.parametrize("thread", ["aaaaaaaaaaaaaaaa", "00000000-0000-1000-8000-000000000000",
                                    "session-1234567890", str(uuid.uuid1())])
def test_a_new_ag_ui_thread_needs_a_random_uuid(client: TestClient, thread: str) -> None:
    events = run(client, run_input(thread))
    assert [e.type for e in events][-1] == "RUN_ERROR"
    assert events[-1].code == "/problems/thread-id-not-random"
    assert client.get(f"/sessions/{thread}").status_code == 404  # no session was made for it


def test_a_session_made_by_ask_continues_over_ag_ui_with_its_own_id(client: TestClient) -> None:
    session = client.post("/ask", json={}).json()["session_id"]  # 22 URL-safe characters, not a UUID
    assert run(client, run_input(session))[-1].type == "RUN_FINISHED"
    assert client.get(f"/sessions/{session}").json()["rounds_played"] == 2


def test_an_expired_ag_ui_thread_says_so_instead_of_starting_over(client: TestClient) -> None:
    thread = str(uuid.uuid4())
    first = run_input(thread, "math please")
    events = run(client, first)
    said = [e for e in events if e.type == "TEXT_MESSAGE_CONTENT"]
    assert client.delete(f"/sessions/{thread}").status_code == 204  # as if it had expired
    # the client sends its whole conversation, the Teacher's words included, as AG-UI clients do
    history = [*first["messages"], {"id": str(uuid.uuid4()), "role": "assistant", "content": said[0].delta},
               {"id": str(uuid.uuid4()), "role": "user", "content": "next"}]
    events = run(client, run_input(thread, messages=history))
    assert events[-1].type == "RUN_ERROR" and events[-1].code == "/problems/session-not-found"
    assert client.get(f"/sessions/{thread}").status_code == 404  # never a silent new session


def test_the_last_ag_ui_message_is_capped_like_ask_before_the_stream(client: TestClient) -> None:
    r = client.post("/ag-ui", json=run_input(message="math " * 101))
    assert r.status_code == 422 and r.json()["type"] == "/problems/validation"
    assert "500" in r.json()["errors"][0]["msg"]
    assert client.post("/ask", json={"message": "math " * 101}).status_code == 422  # the same cap


def test_the_principal_is_on_the_server_span_never_the_secret(keyed: TestClient,
                                                              telemetry_env: OTLPReceiver) -> None:
    trace_id = keyed.post("/ask", json={}, headers=ALICE).json()["trace_id"]
    (server,) = telemetry_env.wait_for(lambda: [s for s in telemetry_env.trace(trace_id) if s.kind == "SERVER"])
    assert server.attributes["enduser.id"] == "key:alice"
    everything = repr([(s.name, s.attributes) for s in telemetry_env.trace(trace_id)])
    assert "alice-secret-1" not in everything


# --- Entra ID -------------------------------------------------------------------------------------------


@pytest.fixture
def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEntra]:
    with FakeEntra(tmp_path) as fake:
        monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))  # the test CA, as a cluster's CA bundle would be
        yield fake


@pytest.fixture
def entra_client(make_client: Callable[..., TestClient], entra: FakeEntra) -> TestClient:
    return make_client(entra_tenant_id=FakeEntra.TENANT, entra_audience=f"{AUDIENCE}, 0000-client-id",
                       entra_authority=entra.authority, entra_keys_refresh_s=0, api_keys="alice:alice-secret-1")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_an_entra_token_is_a_principal_and_owns_its_sessions(entra_client: TestClient, entra: FakeEntra) -> None:
    (key,) = entra.published
    mine = bearer(entra.token(key, AUDIENCE, oid="oid-of-the-game-client"))
    started = entra_client.post("/ask", json={}, headers=mine)
    assert started.status_code == 200, started.text
    session = started.json()["session_id"]
    v1 = bearer(entra.token(key, "0000-client-id", oid="oid-of-the-game-client",
                            issuer=f"https://sts.windows.net/{FakeEntra.TENANT}/"))  # a v1.0 token, other audience
    assert entra_client.get(f"/sessions/{session}", headers=v1).status_code == 200  # the same caller
    other = bearer(entra.token(key, AUDIENCE, oid="oid-of-someone-else"))
    assert entra_client.get(f"/sessions/{session}", headers=other).status_code == 404
    assert entra_client.get(f"/sessions/{session}", headers=ALICE).status_code == 404  # an API key is another
    assert entra.jwks_fetches == 1  # the keys are cached


@pytest.mark.parametrize(("forge", "why"), [
    (lambda e, k: e.token(k, AUDIENCE, lifetime_s=-120), "it has expired"),
    (lambda e, k: e.token(k, "api://another-service"), "its audience is not this service"),
    (lambda e, k: e.token(k, AUDIENCE, issuer="https://login.microsoftonline.com/another-tenant/v2.0"),
     "it was not issued by this service's tenant"),
    (lambda e, k: e.token(SigningKey.new("key-nobody-published"), AUDIENCE), "unknown `kid`"),
    (lambda e, k: e.token(SigningKey(k.kid, SigningKey.new("x").private), AUDIENCE), "InvalidSignatureError"),
    (lambda e, k: e.token(k, AUDIENCE, oid="", sub=""), "it names no caller"),
])
def test_an_invalid_entra_token_gets_401_saying_why(entra_client: TestClient, entra: FakeEntra,
                                                    forge: Callable[[FakeEntra, SigningKey], str], why: str) -> None:
    r = entra_client.post("/ask", json={}, headers=bearer(forge(entra, entra.published[0])))
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    problem = r.json()
    assert problem["type"] == "/problems/unauthorized" and why in problem["detail"], problem
    assert problem["detail"].startswith("The Entra ID access token was refused: ")


def test_a_rotated_signing_key_is_fetched_and_the_retired_one_refused(entra_client: TestClient,
                                                                      entra: FakeEntra) -> None:
    old = entra.published[0]
    assert entra_client.post("/ask", json={}, headers=bearer(entra.token(old, AUDIENCE))).status_code == 200
    new = SigningKey.new("key-2")
    entra.published = [new]  # Entra rotates: the new key is published, the old one withdrawn
    assert entra_client.post("/ask", json={}, headers=bearer(entra.token(new, AUDIENCE))).status_code == 200
    assert entra.jwks_fetches == 2  # the unknown kid made it fetch the keys again
    refused = entra_client.post("/ask", json={}, headers=bearer(entra.token(old, AUDIENCE)))
    assert refused.status_code == 401 and "unknown `kid`" in refused.json()["detail"]


def test_unreachable_signing_keys_are_a_503_not_a_401(entra_client: TestClient, entra: FakeEntra) -> None:
    entra.jwks_status = 503
    r = entra_client.post("/ask", json={}, headers=bearer(entra.token(entra.published[0], AUDIENCE)))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["type"] == "/problems/identity-provider-unavailable"
    entra.jwks_status = 200
    assert entra_client.post("/ask", json={}, headers=bearer(entra.token(entra.published[0], AUDIENCE))
                             ).status_code == 200


def test_with_entra_on_an_api_key_still_works_and_garbage_is_refused(entra_client: TestClient) -> None:
    assert entra_client.post("/ask", json={}, headers=ALICE).status_code == 200
    for junk in ("not-a-key", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."):  # an unsigned alg=none JWT too
        r = entra_client.post("/ask", json={}, headers=bearer(junk))
        assert r.status_code == 401, (junk, r.text)
