"""Postgres with Microsoft Entra ID (``POSTGRES_ENTRA_AUTH``): no password anywhere, a token per new connection.

The service runs as a process with the environment AKS's Workload Identity webhook gives a pod, so its real
``DefaultAzureCredential`` → ``WorkloadIdentityCredential`` exchanges the projected service-account token at a
local Entra ID over TLS (``tests/fakes/entra.py``). The database is a real PostgreSQL that requires a password
over TCP (``scram-sha-256``); the role the service signs in as has the token Entra hands out as its password,
which is what Azure Database for PostgreSQL checks in its own way (it validates the token; here the server
compares it): a connection signs in only with the token of the moment.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from app.sessions.postgres import ENTRA_SCOPE
from tests.fakes import free_port
from tests.fakes.entra import FakeEntra
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.postgres import PostgresServer
from tests.service import ROOT, clean_env, start_service, stop

IDENTITY = "quiz-app-identity"  # the managed identity's name: its Postgres role (pgaadauth_create_principal)
TENANT = FakeEntra.TENANT
CLIENT = "0b7d2a8e-5f1c-4e6a-9d3b-1c2e3f4a5b6c"


def new_token() -> str:
    """An opaque token of about an Entra access token's length (its content is the server's business)."""
    return "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(900)


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    with PostgresServer(password_auth=True) as server:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(IDENTITY)))
            conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(IDENTITY)))
        yield server


def accept(server: PostgresServer, token: str) -> None:
    """Make ``token`` the one the identity's role signs in with (the token of the moment)."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(IDENTITY), sql.Literal(token)))


def backends(server: PostgresServer) -> set[int]:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s", (IDENTITY,))}


@pytest.fixture
def pod(database: PostgresServer, fake_llm: FakeOpenAI, tmp_path: Path) -> Iterator[tuple[FakeEntra, dict[str, str]]]:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("federated-service-account-jwt-for-tests")
    with FakeEntra(tmp_path) as entra:
        env = clean_env(OPENAI_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-llm", OTEL_SDK_DISABLED="true",
                        CHECKPOINTER_URL=f"postgresql://{IDENTITY}@127.0.0.1:{database.port}/postgres",
                        POSTGRES_ENTRA_AUTH="true", AZURE_TENANT_ID=TENANT, AZURE_CLIENT_ID=CLIENT,
                        AZURE_FEDERATED_TOKEN_FILE=str(token_file), AZURE_AUTHORITY_HOST=entra.authority,
                        SSL_CERT_FILE=str(entra.ca_file), LOG_LEVEL="debug")
        yield entra, env


def test_the_service_signs_in_with_its_workload_identity_and_no_password(database: PostgresServer, pod,
                                                                          tmp_path: Path) -> None:
    entra, env = pod
    entra.access_token = token = new_token()
    accept(database, token)
    process, base = start_service(env, tmp_path / "service.log")
    try:
        first = httpx.post(f"{base}/ask", json={"subject": "math"}, timeout=30).json()
        again = httpx.post(f"{base}/ask", json={"session_id": first["session_id"]}, timeout=30).json()
        assert (first["round"], again["round"]) == (1, 2)  # the session is in Postgres, read back
        assert httpx.get(f"{base}/health").json()["checkpointer"].startswith("postgres")
    finally:
        stop(process)
    # Each token came from Entra for Azure Database for PostgreSQL's scope, in exchange for the pod's token.
    assert entra.requests and {r["scope"] for r in entra.requests} == {ENTRA_SCOPE}
    assert all(r["client_assertion"] == "federated-service-account-jwt-for-tests" for r in entra.requests)
    assert len(entra.requests) == 1  # one token, cached, for the pool's connections and the LISTEN connection
    assert token not in (tmp_path / "service.log").read_text()


def test_a_rotated_token_signs_in_new_connections_while_open_ones_keep_working(database: PostgresServer, pod,
                                                                                tmp_path: Path) -> None:
    entra, env = pod
    entra.expires_in = 2  # seconds: the credential must fetch a new token for connections opened later
    entra.access_token = old = new_token()
    accept(database, old)
    process, base = start_service(env, tmp_path / "service.log")
    try:
        sid = httpx.post(f"{base}/ask", json={}, timeout=30).json()["session_id"]
        opened = backends(database)
        entra.access_token = new = new_token()
        accept(database, new)  # the old token no longer signs anyone in
        time.sleep(2.5)  # and the credential's cached one has expired
        # Connections signed in with the old token keep working: a round plays on them.
        assert httpx.post(f"{base}/ask", json={"session_id": sid}, timeout=30).json()["round"] == 2
        assert opened & backends(database)
        with psycopg.connect(database.admin_url, autocommit=True) as conn:  # Postgres restarts its backends
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (IDENTITY,))
        # New connections sign in with the new token.
        assert httpx.post(f"{base}/ask", json={"session_id": sid}, timeout=30).json()["round"] == 3
        assert backends(database) and not opened & backends(database)
    finally:
        stop(process)
    assert len(entra.requests) >= 2
    log = (tmp_path / "service.log").read_text()
    assert old not in log and new not in log


@pytest.mark.parametrize("fault", ["refused by Postgres", "refused by Entra ID"])
def test_a_token_that_cannot_sign_in_is_a_clear_start_up_error(database: PostgresServer, pod, fault: str,
                                                               tmp_path: Path) -> None:
    entra, env = pod
    entra.access_token = token = new_token()
    accept(database, new_token())  # the server knows another one
    entra.refuse = fault == "refused by Entra ID"
    result = subprocess.run([str(Path(sys.executable).parent / "question-app")], env={**env, "PORT": str(free_port())},
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    (error,) = [line for line in output.splitlines() if line.startswith("app.sessions.CheckpointerUnavailable")]
    assert f"session store at 127.0.0.1:{database.port}" in error
    if fault == "refused by Postgres":
        assert "password authentication failed" in error and "POSTGRES_ENTRA_AUTH" in error
        assert "pgaadauth_create_principal" in error
    else:
        assert "no Entra ID token for Postgres" in error and "Workload Identity" in error
        assert "AADSTS700213" in error  # Entra's own reason, which names no secret
    assert token not in output


def test_entra_sign_in_wants_a_user_and_no_password_in_the_url() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    for url in ("postgresql://me:secret@db:5432/quiz", "postgresql://db:5432/quiz", "sqlite:///x.db"):
        with pytest.raises(ValidationError, match="POSTGRES_ENTRA_AUTH=true needs"):
            Settings(checkpointer_url=url, postgres_entra_auth=True)
    Settings(checkpointer_url="postgresql://quiz-app-identity@db:5432/quiz?sslmode=require", postgres_entra_auth=True)
