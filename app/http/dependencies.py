"""FastAPI dependencies: the lifespan's typed state, authentication and admission.

The lifespan (``app.main``) yields an ``AppState``; Starlette copies it into every request's
``request.state``, and the dependencies below hand its parts to the routes. They are ``async def`` on
purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, TypedDict

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.http.problems import Problems
from app.http.schemas import Health
from app.rounds import RoundService


class AppState(TypedDict):
    """What the lifespan builds once and every request may use."""

    rounds: RoundService
    problems: Problems
    health: Health
    api_keys: list[str]


async def get_rounds(request: Request) -> RoundService:
    """The ``RoundService`` the lifespan built."""
    return request.state.rounds


async def get_problems(request: Request) -> Problems:
    """The ``Problems`` that build and count problem bodies."""
    return request.state.problems


async def get_health(request: Request) -> Health:
    """The ``/health`` answer, built once at start-up."""
    return request.state.health


RoundsDep = Annotated[RoundService, Depends(get_rounds)]
ProblemsDep = Annotated[Problems, Depends(get_problems)]
HealthDep = Annotated[Health, Depends(get_health)]

bearer = HTTPBearer(auto_error=False, description="One of API_KEYS, when set.")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of API_KEYS, when set.")


def require_api_key(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                    header_key: Annotated[str | None, Security(api_key_header)]) -> None:
    """With ``API_KEYS`` set, require a valid bearer token or ``X-API-Key``; raise ``Unauthorized`` (401)
    otherwise. Keys are compared in constant time. Installed only when ``API_KEYS`` is set, so the OpenAPI
    document says exactly what is enforced."""
    keys: list[str] = request.state.api_keys
    given = credentials.credentials if credentials is not None else header_key
    if given is None or not any(secrets.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Unauthorized("Send `Authorization: Bearer <key>` or `X-API-Key: <key>` with a key from API_KEYS.",
                           {"WWW-Authenticate": "Bearer"})


async def round_scope(rounds: RoundsDep) -> AsyncIterator[AsyncExitStack]:
    """What a round holds for the whole request — its place (``RoundService.admission``, raises
    ``Overloaded``) and its session's lease (entered by ``RoundService.prepare``) — released together when
    the JSON response is sent, or when the event stream ends or its client goes away (FastAPI runs a
    request-scoped ``yield`` dependency's exit after the response, streamed ones included, since 0.118)."""
    async with AsyncExitStack() as scope:
        scope.enter_context(rounds.admission())
        yield scope


async def request_scope() -> AsyncIterator[AsyncExitStack]:
    """An exit stack that lives as long as the request, its streamed response included: what a stream takes
    inside its generator (an AG-UI run's place and lease) is released here even when the client goes away and
    the generator is never resumed (FastAPI runs the exit after the response, streamed ones included)."""
    async with AsyncExitStack() as scope:
        yield scope
