"""A Microsoft Entra ID token endpoint and signing-key (JWKS) endpoint on 127.0.0.1, over TLS with a test CA:
the edge of the world for Workload Identity and for clients that call with Entra ID access tokens.

It answers the OAuth 2.0 client-credentials grant with a client assertion, as
``{authority}/{tenant}/oauth2/v2.0/token`` does for ``azure-identity``'s ``WorkloadIdentityCredential``
(https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential),
and records every request's form so a test can see the federated token arrive as the assertion. The
library insists on HTTPS for the authority, hence ``trustme``'s CA (``ca_file``: point ``SSL_CERT_FILE`` at it).

It also publishes the tenant's signing keys at ``{authority}/{tenant}/discovery/v2.0/keys`` as Entra does
(a JWK set of RSA keys with ``kid``, ``use: sig``; https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-the-signature)
and signs access tokens with them (``token()``): the peer a service validating tokens talks to.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair of the tenant, as Entra publishes it (its public half in the JWKS) under ``kid``."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls, kid: str) -> SigningKey:
        """A fresh 2048-bit key (what Entra uses)."""
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK (``kty``, ``n``, ``e``, ``kid``, ``use``, ``alg``)."""
        return {**json.loads(RSAAlgorithm.to_jwk(self.private.public_key())), "kid": self.kid, "use": "sig",
                "alg": "RS256"}


class FakeEntra:
    """``with FakeEntra(tmp_path) as entra:`` → ``entra.authority`` (https URL), ``entra.ca_file``.

    ``expires_in``: lifetime of the tokens it issues, seconds. ``refuse``: answer ``invalid_client`` (as
    Entra does for a federated credential that does not match). ``requests``: the forms received.
    ``access_token``: the token it hands out (``None``: ``entra-token-<n>`` for the n-th request).
    """

    TENANT = "11111111-2222-4333-8444-555555555555"

    def __init__(self, directory: Path, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.refuse = False
        self.access_token: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.published: list[SigningKey] = [SigningKey.new("key-1")]  # the JWKS; replace it to rotate keys
        self.jwks_fetches = 0
        self.jwks_status = 200  # anything else: the keys endpoint fails
        ca = trustme.CA()
        self.ca_file = directory / "entra-test-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        entra = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != f"/{FakeEntra.TENANT}/discovery/v2.0/keys":
                    self._json(404, {"error": "not_found"})
                    return
                entra.jwks_fetches += 1
                if entra.jwks_status != 200:
                    self._json(entra.jwks_status, {"error": "temporarily_unavailable"})
                    return
                self._json(200, {"keys": [key.jwk() for key in entra.published]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                entra.requests.append({"path": self.path, **form})
                if entra.refuse:
                    self._json(400, {"error": "invalid_client", "error_description":
                                     "AADSTS700213: No matching federated identity record found."})
                    return
                self._json(200, {"token_type": "Bearer", "expires_in": entra.expires_in,
                                 "ext_expires_in": entra.expires_in,
                                 "access_token": entra.access_token or f"entra-token-{len(entra.requests)}"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.authority = f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def issuer(self) -> str:
        """The tenant's v2.0 issuer, as this authority's tokens carry it."""
        return f"{self.authority}/{self.TENANT}/v2.0"

    def token(self, key: SigningKey, audience: str, *, oid: str = "caller-object-id", issuer: str | None = None,
              lifetime_s: int = 3600, **claims: Any) -> str:
        """An access token signed by ``key`` (RS256, ``kid`` in its header) for ``audience``, issued now by
        the tenant (``issuer`` to forge another), expiring after ``lifetime_s`` (negative: already expired)."""
        now = int(time.time())
        body = {"aud": audience, "iss": issuer or self.issuer, "iat": now - 10, "nbf": now - 10,
                "exp": now + lifetime_s, "oid": oid, "sub": f"sub-of-{oid}", "tid": self.TENANT, "ver": "2.0",
                **claims}
        return jwt.encode(body, key.private, algorithm="RS256", headers={"kid": key.kid})

    def __enter__(self) -> FakeEntra:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
