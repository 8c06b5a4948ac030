"""The language model's failures as domain errors, next to the client that raises them (``openai``'s
exceptions, ``azure-identity``'s when no Entra ID token can be had).

| error | status | ``error.type`` | when |
| --- | --- | --- | --- |
| ``LLMRateLimited`` | 503 + ``Retry-After`` | ``rate_limited`` | the LLM answered 429 after the client's retries |
| ``LLMTimeout`` | 504 | ``timeout`` | an LLM call timed out after the client's retries |
| ``LLMAuthError`` | 502 | ``auth`` | the LLM refused our credentials, or no Entra ID token could be had |
| ``LLMUpstreamError`` | 502 | ``upstream`` | any other LLM failure (5xx, connection refused, malformed answer) |

Exception text from libraries is logged (with the trace id), never put into an error's ``detail``.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime

import openai
from azure.core.exceptions import ClientAuthenticationError

from app.errors import QuizError


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


def llm_failure(exc: BaseException, default_retry_after_s: int) -> QuizError | None:
    """The domain error for an exception the LLM client raised; ``None`` when it is not one of its failures.
    ``default_retry_after_s``: the ``Retry-After`` for a 429 that named none."""
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
