"""FastAPI dependencies: the lifespan's typed state, the principal and admission.

The lifespan (``app.main``) yields an ``AppState``; Starlette copies it into every request's
``request.state``, and the dependencies below hand its parts to the routes. They are ``async def`` on
purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, TypedDict

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID

from app.auth import ANONYMOUS, Authenticator, Principal
from app.http.problems import Problems
from app.http.schemas import Health
from app.rounds import RoundService
from app.runs import Runner


class AppState(TypedDict):
    """What the lifespan builds once and every request may use."""

    rounds: RoundService
    runner: Runner
    problems: Problems
    health: Health
    auth: Authenticator


async def get_rounds(request: Request) -> RoundService:
    """The ``RoundService`` the lifespan built."""
    return request.state.rounds


async def get_runner(request: Request) -> Runner:
    """The ``Runner`` that plays rounds apart from their requests (``app.runs``)."""
    return request.state.runner


async def get_problems(request: Request) -> Problems:
    """The ``Problems`` that build and count problem bodies."""
    return request.state.problems


async def get_health(request: Request) -> Health:
    """The ``/health`` answer, built once at start-up."""
    return request.state.health


RoundsDep = Annotated[RoundService, Depends(get_rounds)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
ProblemsDep = Annotated[Problems, Depends(get_problems)]
HealthDep = Annotated[Health, Depends(get_health)]

bearer = HTTPBearer(auto_error=False, description="A secret of API_KEYS, or an Entra ID access token for this API.")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="A secret of API_KEYS.")


async def authenticate(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                       header_key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Find the request's principal (``app.auth.Authenticator``: 401 ``Unauthorized`` without a valid
    credential, 503 ``AuthUnavailable`` when Entra ID's keys cannot be fetched), keep it for ``get_principal``
    and write its id on the server span (``enduser.id``; an opaque id, never the secret). Installed only when
    authentication is on, so the OpenAPI document says exactly what is enforced."""
    auth: Authenticator = request.state.auth
    principal = await auth.principal(credentials.credentials if credentials is not None else None, header_key)
    request.state.principal = principal
    trace.get_current_span().set_attribute(ENDUSER_ID, principal.id)


async def get_principal(request: Request) -> Principal:
    """Who the request acts for: what ``authenticate`` found, or ``ANONYMOUS`` when authentication is off."""
    return getattr(request.state, "principal", ANONYMOUS)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def round_scope() -> AsyncIterator[AsyncExitStack]:
    """Where a round's holdings go — its place (``RoundService.admission``, entered by the route only when it
    starts a round: a retry that follows a round already playing takes none) and its session's lease (entered
    by ``RoundService.prepare``). A round that starts takes them over (``AsyncExitStack.pop_all``:
    ``app.runs.Holding``) and releases them when it ends, whether its client stayed or not; a request that
    plays no round releases them when it ends."""
    async with AsyncExitStack() as scope:
        yield scope
