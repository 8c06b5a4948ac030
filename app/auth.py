"""Who is asking: every request has a principal, and sessions, limits and feedback belong to it.

| credential | principal id | configured by |
| --- | --- | --- |
| none (authentication off) | ``anonymous`` — everyone is one principal | neither setting below |
| an API key, ``Authorization: Bearer <secret>`` or ``X-API-Key`` | ``key:<name>`` | ``API_KEYS`` |
| an Entra ID token, ``Authorization: Bearer <JWT>`` | ``entra:<oid>`` | ``ENTRA_TENANT_ID``, ``ENTRA_AUDIENCE`` |

``API_KEYS`` is a comma-separated list of ``name:secret`` pairs; a bare secret (the older form) gets the name
``key-`` and the first 12 hex digits of its SHA-256, so renaming nothing and reordering the list keeps every
client's sessions. A principal id never holds a secret: it goes on the server span (``enduser.id``) and is the
owner of a session.

Entra ID tokens are validated with PyJWT (https://pyjwt.readthedocs.io/en/stable/usage.html#retrieve-rsa-signing-keys-from-a-jwks-endpoint):
RS256 signature by a key of the tenant's JWKS (``{authority}/{tenant}/discovery/v2.0/keys``, cached, fetched
again for an unknown key id at most once per ``ENTRA_KEYS_REFRESH_S``: how key rotation is picked up), ``exp``
and ``nbf`` (60 s leeway), ``aud`` one of ``ENTRA_AUDIENCE`` and ``iss`` the tenant's v2.0 or v1.0 issuer
(https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-tokens). The principal is the
token's ``oid`` claim, the caller's object id, as Microsoft advises for authorisation (``sub`` if absent).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import AuthUnavailable, Unauthorized

KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
CLOCK_SKEW_S = 60  # leeway on exp/nbf, as Microsoft's own middleware allows (5 min there; 1 min here)
# PyJWT (with cryptography: ~0.2 s to import) is imported by EntraValidator: only when Entra ID is on.


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: ``id`` (opaque, never a secret; the owner of its sessions), ``kind``."""

    id: str
    kind: Literal["anonymous", "api_key", "entra"]


ANONYMOUS = Principal("anonymous", "anonymous")


def parse_api_keys(value: str) -> dict[str, str]:
    """``API_KEYS`` → {name: secret}. Items are ``name:secret`` or a bare secret (named ``key-<sha256[:12]>``);
    blanks are skipped. Raises ``ValueError`` for a bad name, an empty secret or a name used twice."""
    keys: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, secret = item.partition(":")
        if not sep:
            name, secret = "key-" + hashlib.sha256(item.encode()).hexdigest()[:12], item
        if not KEY_NAME.match(name) or not secret:
            raise ValueError("API_KEYS: each item is name:secret (name: letters, digits, '.', '_', '-', at most 64) "
                             "or a bare secret")
        if name in keys:
            raise ValueError(f"API_KEYS: the name {name!r} is used twice")
        keys[name] = secret
    return keys


class EntraValidator:
    """Validates Entra ID access tokens of one tenant for one API (see the module docstring).

    ``authority``: ``https://login.microsoftonline.com`` (or a sovereign cloud's); ``audiences``: the API's
    application id URI and/or client id; ``refresh_s``: least time between two JWKS fetches for unknown key ids.
    """

    def __init__(self, authority: str, tenant: str, audiences: list[str], refresh_s: float) -> None:
        import jwt

        authority = authority.rstrip("/")
        self.audiences = audiences
        self.issuers = [f"{authority}/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"]
        self.keys = jwt.PyJWKClient(f"{authority}/{tenant}/discovery/v2.0/keys", lifespan=3600,
                                    cooldown_duration=refresh_s, timeout=5)

    async def principal(self, token: str) -> Principal:
        """The principal of a valid ``token``; ``Unauthorized`` (401, saying what is wrong) otherwise, and
        ``AuthUnavailable`` (503) when the tenant's signing keys cannot be fetched. The JWKS fetch (urllib,
        blocking) runs in a worker thread."""
        import jwt

        try:
            key = await asyncio.to_thread(self.keys.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthUnavailable("The identity provider's signing keys cannot be fetched right now; retry "
                                  "shortly.", {"Retry-After": "5"}) from exc
        except jwt.PyJWKClientError:
            raise _refused("it is signed by a key the tenant does not publish (unknown `kid`)") from None
        except jwt.DecodeError:
            raise _refused("it is not a well-formed JWT") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=self.audiences, issuer=self.issuers,
                leeway=CLOCK_SKEW_S, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise _refused("it has expired: get a new one") from None
        except jwt.InvalidAudienceError:
            raise _refused(f"its audience is not this service ({', '.join(self.audiences)})") from None
        except jwt.InvalidIssuerError:
            raise _refused("it was not issued by this service's tenant") from None
        except jwt.InvalidTokenError as exc:
            raise _refused(f"it is not valid ({type(exc).__name__})") from None
        subject = claims.get("oid") or claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _refused("it names no caller (no `oid` or `sub` claim)")
        return Principal(f"entra:{subject}", "entra")


def _refused(why: str) -> Unauthorized:
    return Unauthorized(f"The Entra ID access token was refused: {why}.", {"WWW-Authenticate": "Bearer"})


class Authenticator:
    """Turns a request's credential into its ``Principal``. ``keys``: {name: secret} (``parse_api_keys``);
    ``entra``: the token validator, ``None`` when Entra ID is off. With neither, every request is ``ANONYMOUS``."""

    def __init__(self, keys: dict[str, str], entra: EntraValidator | None) -> None:
        self._keys = [(name, secret.encode()) for name, secret in keys.items()]
        self.entra = entra

    @property
    def required(self) -> bool:
        """Whether requests must carry a credential."""
        return bool(self._keys) or self.entra is not None

    async def principal(self, bearer: str | None, api_key: str | None) -> Principal:
        """The principal of a request's bearer token or ``X-API-Key`` (the bearer wins). A bearer shaped like a
        JWT goes to Entra ID when it is on; anything else must be an API key, compared in constant time with
        every key. Raises ``Unauthorized`` (401) or ``AuthUnavailable`` (503)."""
        if not self.required:
            return ANONYMOUS
        given = bearer if bearer is not None else api_key
        if given is None:
            raise Unauthorized(f"Send {self._how()}.", {"WWW-Authenticate": "Bearer"})
        if bearer is not None and self.entra is not None and JWT_SHAPE.match(bearer):
            return await self.entra.principal(bearer)
        matched = None
        for name, secret in self._keys:  # every key compared: the time says nothing of which one matched
            if secrets.compare_digest(given.encode(), secret):
                matched = name
        if matched is None:
            raise Unauthorized(f"The credential is not valid: send {self._how()}.", {"WWW-Authenticate": "Bearer"})
        return Principal(f"key:{matched}", "api_key")

    def _how(self) -> str:
        ways = []
        if self._keys:
            ways.append("`Authorization: Bearer <key>` or `X-API-Key: <key>` with a key from API_KEYS")
        if self.entra is not None:
            ways.append("`Authorization: Bearer <token>` with an Entra ID access token for this API")
        return ", or ".join(ways)
