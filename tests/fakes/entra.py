"""A Microsoft Entra ID token endpoint on 127.0.0.1, over TLS with a test CA: the edge of the world for
Workload Identity.

It answers the OAuth 2.0 client-credentials grant with a client assertion, as
``{authority}/{tenant}/oauth2/v2.0/token`` does for ``azure-identity``'s ``WorkloadIdentityCredential``
(https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential),
and records every request's form so a test can see the federated token arrive as the assertion. The
library insists on HTTPS for the authority, hence ``trustme``'s CA (``ca_file``: point ``SSL_CERT_FILE`` at it).
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trustme


class FakeEntra:
    """``with FakeEntra(tmp_path) as entra:`` → ``entra.authority`` (https URL), ``entra.ca_file``.

    ``expires_in``: lifetime of the tokens it issues, seconds. ``refuse``: answer ``invalid_client`` (as
    Entra does for a federated credential that does not match). ``requests``: the forms received.
    """

    def __init__(self, directory: Path, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.refuse = False
        self.requests: list[dict[str, Any]] = []
        ca = trustme.CA()
        self.ca_file = directory / "entra-test-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        entra = self

        class Handler(BaseHTTPRequestHandler):
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
                                 "access_token": f"entra-token-{len(entra.requests)}"})

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

    def __enter__(self) -> FakeEntra:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
