"""Domain errors, and the classifier that turns what a round raised into one of them.

| error | status | ``error.type`` | when |
| --- | --- | --- | --- |
| ``Unauthorized`` | 401 | ``unauthorized`` | ``API_KEYS`` is set and the request has no valid key |
| ``SessionNotFound`` | 404 | ``session_not_found`` | ``session_id`` is unknown or expired |
| ``RoundInProgress`` | 409 + ``Retry-After`` | ``round_in_progress`` | a round of this session is still playing |
| ``AnswerAwaited`` | 409 | ``answer_awaited`` | a new round was asked while the session's round awaits an answer |
| ``NoAnswerAwaited`` | 409 | ``no_answer_awaited`` | an ``answer`` was sent and no round of the session awaits one |
| ``BodyTooLarge`` | 413 | ``validation`` | body over ``MAX_BODY_BYTES`` |
| ``Overloaded`` | 503 + ``Retry-After`` | ``overloaded`` | ``MAX_CONCURRENT_ROUNDS`` rounds already in progress |
| ``SessionStoreUnavailable`` | 503 + ``Retry-After`` | ``session_store`` | the checkpointer's database is unreachable |
| ``LLMRateLimited`` | 503 + ``Retry-After`` | ``rate_limited`` | the LLM answered 429 after the client's retries |
| ``LLMTimeout`` | 504 | ``timeout`` | an LLM call timed out after the client's retries |
| ``LLMAuthError`` | 502 | ``auth`` | the LLM refused our credentials, or no Entra ID token could be had |
| ``LLMUpstreamError`` | 502 | ``upstream`` | any other LLM failure (5xx, connection refused, malformed answer) |
| ``LLMInvalidOutput`` | 502 | ``invalid_output`` | structured output failed validation on every attempt |

This module knows nothing of HTTP frameworks: ``app.problems`` turns a ``QuizError`` into a response.
Exception text from libraries is logged (with the trace id), never put into an error's ``detail``.
"""

from __future__ import annotations

import email.utils
import json
import math
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar

import openai
import psycopg
from azure.core.exceptions import ClientAuthenticationError
from psycopg_pool import PoolTimeout

from graphs.structured import StructuredOutputError
from telemetry.contract import ErrorType


class QuizError(Exception):
    """A failure the client is told about: HTTP ``status``, problem ``slug`` and ``title``, the ``detail``
    (what happened and what to do) and response ``headers`` (e.g. ``Retry-After``)."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    error_type: ClassVar[ErrorType] = "internal"  # the ``error.type`` label

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class SessionNotFound(QuizError):
    """404: the session id is unknown, or its session expired or was evicted."""

    status, slug, title, error_type = 404, "session-not-found", "Unknown session", "session_not_found"


class RoundNotFound(QuizError):
    """404: the session does not keep that round (never played, or older than ``SESSION_ROUNDS_KEPT``)."""

    status, slug, title, error_type = 404, "round-not-found", "Unknown round", "round_not_found"


class Unauthorized(QuizError):
    """401: ``API_KEYS`` is set and the request carries no valid key."""

    status, slug, title, error_type = 401, "unauthorized", "Authentication required", "unauthorized"


class BodyTooLarge(QuizError):
    """413: the request body is over ``MAX_BODY_BYTES``."""

    status, slug, title, error_type = 413, "body-too-large", "Request body too large", "validation"


class RoundInProgress(QuizError):
    """409: a round of this session is still playing (one round at a time per session, ``app.leases``)."""

    status, slug, title, error_type = 409, "round-in-progress", "A round of this session is in progress", \
        "round_in_progress"


class AnswerAwaited(QuizError):
    """409: the session's round is paused for the person's answer; it must be answered before the next."""

    status, slug, title, error_type = 409, "answer-awaited", "The round awaits your answer", "answer_awaited"


class NoAnswerAwaited(QuizError):
    """409: an answer came for a session with no paused round (already graded, or never a person's round)."""

    status, slug, title, error_type = 409, "no-answer-awaited", "No question awaits an answer", \
        "no_answer_awaited"


class Overloaded(QuizError):
    """503: ``MAX_CONCURRENT_ROUNDS`` rounds are already in progress in this process."""

    status, slug, title, error_type = 503, "overloaded", "Too many rounds in progress", "overloaded"


class SessionStoreUnavailable(QuizError):
    """503: the checkpointer's database cannot be reached; finished rounds are safe in it."""

    status, slug, title, error_type = (503, "session-store-unavailable", "The session store is unavailable",
                                       "session_store")

    def __init__(self) -> None:
        super().__init__("Sessions cannot be read or saved right now (the database is unreachable). "
                         "Retry shortly; finished rounds are not lost.", {"Retry-After": "5"})


class LLMRateLimited(QuizError):
    """503: the LLM answered 429 on every attempt; ``Retry-After`` is its own, else the default."""

    status, slug, title, error_type = 503, "llm-rate-limited", "The language model is rate limited", "rate_limited"


class LLMTimeout(QuizError):
    """504: an LLM call timed out on every attempt, or passed its overall deadline."""

    status, slug, title, error_type = 504, "llm-timeout", "The language model did not answer in time", "timeout"


class LLMAuthError(QuizError):
    """502: the LLM refused our key or Entra ID token, or no token could be had."""

    status, slug, title, error_type = 502, "llm-auth", "The language model refused our credentials", "auth"


class LLMUpstreamError(QuizError):
    """502: any other LLM failure (5xx after retries, connection refused, unreadable answer)."""

    status, slug, title, error_type = 502, "llm-upstream", "The language model failed", "upstream"


class LLMInvalidOutput(QuizError):
    """502: the structured output failed validation on every attempt."""

    status, slug, title, error_type = (502, "llm-invalid-output", "The language model's answer was unusable",
                                       "invalid_output")


# What the session stores raise when their database cannot be reached (SQLite locked or gone; Postgres
# down, connection lost, pool exhausted).
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, psycopg.OperationalError,
                                                 psycopg.InterfaceError, PoolTimeout)


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> int | None:
    """Whole seconds to wait, from an LLM response's ``retry-after-ms`` (Azure OpenAI, OpenAI) or
    ``Retry-After`` (delay-seconds or HTTP-date, RFC 9110 §10.2.3), rounded up and at least 1 (a date that
    has passed means "retry now", which a client should not hear as "hammer"); ``None`` when absent or
    unreadable."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(1, math.ceil(float(ms) / 1000))
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if value.isdigit():
        return max(1, int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(1, math.ceil((when - (now or datetime.now(UTC))).total_seconds()))


def classify(exc: BaseException, default_retry_after_s: int) -> QuizError | None:
    """The domain error for an exception raised while playing a round; ``None`` when it is unexpected (a bug).

    ``default_retry_after_s``: the ``Retry-After`` for an LLM 429 that named none.
    """
    if isinstance(exc, QuizError):
        return exc
    if isinstance(exc, STORE_ERRORS):
        return SessionStoreUnavailable()
    if isinstance(exc, StructuredOutputError):
        return LLMInvalidOutput(f"The model did not return a valid {exc.step} result after {exc.attempts} "
                                "attempt(s). Try again; if it persists, use a more capable model.")
    if isinstance(exc, openai.RateLimitError):
        waited = retry_after_s(exc.response.headers) if exc.response is not None else None
        seconds = str(waited if waited is not None else default_retry_after_s)
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
