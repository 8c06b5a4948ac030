"""Domain errors and their one mapping to HTTP: RFC 9457 problem bodies with the trace id.

| error | status | when |
| --- | --- | --- |
| validation | 422 | a field is wrong (the body lists which) |
| ``Unauthorized`` | 401 | ``API_KEYS`` is set and the request has no valid key |
| ``SessionNotFound`` | 404 | ``session_id`` is unknown or expired |
| ``SessionStoreUnavailable`` | 503 + ``Retry-After`` | the checkpointer's database cannot be reached |
| ``Overloaded`` | 503 + ``Retry-After`` | ``MAX_CONCURRENT_ROUNDS`` rounds are already in progress here |
| ``BodyTooLarge`` | 413 | body over ``MAX_BODY_BYTES`` |
| ``LLMRateLimited`` | 503 + ``Retry-After`` | the LLM answered 429 after the client's retries |
| ``LLMTimeout`` | 504 | an LLM call timed out after the client's retries |
| ``LLMAuthError`` | 502 | the LLM refused our credentials, or no Entra ID token could be had |
| ``LLMUpstreamError`` | 502 | any other LLM failure (5xx, connection refused, malformed answer) |
| ``LLMInvalidOutput`` | 502 | structured output failed validation on every attempt |

Exception text from libraries is logged (with the trace id), never sent to the client.
"""

from __future__ import annotations

import json
import sqlite3
from http import HTTPStatus
import logging
from typing import Any

import openai
import psycopg
from psycopg_pool import PoolTimeout
from azure.core.exceptions import ClientAuthenticationError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from opentelemetry import trace

from graphs.quiz import StructuredOutputError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class QuizError(Exception):
    status = 500
    slug = "internal"
    title = "Internal error"
    error_type = "internal"  # the ``error.type`` metric label

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class SessionNotFound(QuizError):
    status, slug, title, error_type = 404, "session-not-found", "Unknown session", "session_not_found"


class Unauthorized(QuizError):
    status, slug, title, error_type = 401, "unauthorized", "Authentication required", "unauthorized"


class BodyTooLarge(QuizError):
    status, slug, title, error_type = 413, "body-too-large", "Request body too large", "validation"


class Overloaded(QuizError):
    status, slug, title, error_type = 503, "overloaded", "Too many rounds in progress", "overloaded"


class SessionStoreUnavailable(QuizError):
    status, slug, title, error_type = 503, "session-store-unavailable", "The session store is unavailable", \
        "session_store"


class LLMRateLimited(QuizError):
    status, slug, title, error_type = 503, "llm-rate-limited", "The language model is rate limited", "rate_limited"


class LLMTimeout(QuizError):
    status, slug, title, error_type = 504, "llm-timeout", "The language model did not answer in time", "timeout"


class LLMAuthError(QuizError):
    status, slug, title, error_type = 502, "llm-auth", "The language model refused our credentials", "auth"


class LLMUpstreamError(QuizError):
    status, slug, title, error_type = 502, "llm-upstream", "The language model failed", "upstream"


class LLMInvalidOutput(QuizError):
    status, slug, title, error_type = 502, "llm-invalid-output", "The language model's answer was unusable", \
        "invalid_output"


STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, psycopg.OperationalError,
                                                 psycopg.InterfaceError, PoolTimeout)


def translate_llm_error(exc: BaseException, default_retry_after_s: int) -> QuizError | None:
    """Map an exception raised while playing a round to a ``QuizError``; ``None`` if it is unexpected."""
    if isinstance(exc, QuizError):
        return exc
    if isinstance(exc, STORE_ERRORS):
        return SessionStoreUnavailable("Sessions cannot be read or saved right now (the database is unreachable). "
                                       "Retry shortly; finished rounds are not lost.", {"Retry-After": "5"})
    if isinstance(exc, StructuredOutputError):
        return LLMInvalidOutput(f"The model did not return a valid {exc.step} result after {exc.attempts} "
                                "attempt(s). Try again; if it persists, use a more capable model.")
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
        seconds = retry_after if retry_after and retry_after.isdigit() else str(default_retry_after_s)
        return LLMRateLimited(f"The LLM quota is exhausted for now. Retry after {seconds} s.",
                              {"Retry-After": seconds})
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return LLMTimeout("An LLM call timed out (LLM_TIMEOUT_S per attempt, LLM_MAX_RETRIES retries). "
                          "Retry later; if it persists, check the model endpoint's health.")
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, ClientAuthenticationError)):
        return LLMAuthError("The LLM endpoint rejected the service's credentials. Operators: check the API key "
                            "or the workload identity's role assignment (Cognitive Services OpenAI User).")
    if isinstance(exc, openai.APIStatusError):
        return LLMUpstreamError(f"The LLM endpoint answered HTTP {exc.status_code}. Retry later.")
    if isinstance(exc, (openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError)):
        return LLMUpstreamError("The LLM endpoint could not be reached or sent an unreadable answer. Retry later.")
    return None


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def problem(status: int, slug: str, title: str, detail: str, request: Request | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail,
            "instance": request.url.path if request is not None else None, "trace_id": current_trace_id(), **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_for(error: QuizError, request: Request | None = None) -> JSONResponse:
    return problem(error.status, error.slug, error.title, error.detail, request, error.headers)


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into a problem body."""

    @app.exception_handler(QuizError)
    async def _quiz_error(request: Request, exc: QuizError) -> JSONResponse:
        return problem_for(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "body" for e in errors)
        return problem(422, "validation", "Invalid request", f"Fix these fields: {fields}.", request,
                       errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = {400: "The body could not be parsed: send UTF-8 JSON with Content-Type: application/json.",
                  404: f"There is no {request.url.path}: see /docs for the API.",
                  405: f"{request.method} is not allowed on {request.url.path}: see /docs."}.get(
            exc.status_code, str(exc.detail))
        slug = {400: "bad-request", 404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, slug, HTTPStatus(exc.status_code).phrase, detail, request,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s (trace_id=%s)", request.url.path, current_trace_id())
        return problem(500, "internal", "Internal error",
                       "Something went wrong on our side; the trace id identifies it in the logs.", request)
