"""Domain errors, and the classifier that turns what a round raised into one of them.

| error | status | ``error.type`` | when |
| --- | --- | --- | --- |
| ``Unauthorized`` | 401 | ``unauthorized`` | authentication is on and the request has no valid credential |
| ``AuthUnavailable`` | 503 + ``Retry-After`` | ``identity_provider`` | Entra ID's signing keys cannot be fetched |
| ``RateLimited`` | 429 + ``Retry-After`` | ``limited`` | the principal's rounds/minute, tokens/day or fair share |
| ``WeakThreadId`` | 422 | ``validation`` | a new AG-UI thread's id is not a random UUID |
| ``AnswerNotAnOption`` | 422 | ``validation`` | a person's answer to a multiple-choice question names no option |
| ``SessionNotFound`` | 404 | ``session_not_found`` | ``session_id`` is unknown or expired |
| ``RoundInProgress`` | 409 + ``Retry-After`` | ``round_in_progress`` | a round of this session is still playing |
| ``AnswerAwaited`` | 409 | ``answer_awaited`` | a new round was asked while the session's round awaits an answer |
| ``NoAnswerAwaited`` | 409 | ``no_answer_awaited`` | an ``answer`` was sent and no round of the session awaits one |
| ``NoHintsLeft`` | 409 | ``no_hints_left`` | a ``hint`` was asked for once the round's ``HINTS_PER_ROUND`` were given |
| ``RoundCancelled`` | 409 | ``cancelled`` | the round was stopped by ``DELETE /sessions/{id}/round`` before it ended |
| ``IdempotencyKeyReused`` | 422 | ``validation`` | an ``Idempotency-Key`` sent again with a different request |
| ``RoundLost`` | 503 + ``Retry-After`` | ``round_lost`` | the replica playing the round stopped or died mid-round |
| ``BodyTooLarge`` | 413 | ``validation`` | body over ``MAX_BODY_BYTES`` |
| ``BodyTooSlow`` | 408 + ``Connection: close`` | ``validation`` | body too slow (``BODY_READ_TIMEOUT_S`` …) |
| ``Overloaded`` | 503 + ``Retry-After`` | ``overloaded`` | ``MAX_CONCURRENT_ROUNDS`` rounds already in progress |
| ``SessionStoreUnavailable`` | 503 + ``Retry-After`` | ``session_store`` | the checkpointer's database is unreachable |
| ``LLMInvalidOutput`` | 502 | ``invalid_output`` | structured output failed validation on every attempt |

The LLM's own failures (rate limited, timeout, auth, upstream) are ``app.llm.errors``'s, next to the client
that raises them; a session store names the errors of its database driver (``SessionStore.errors``). This
module knows nothing of HTTP frameworks or drivers: ``app.http.problems`` turns a ``QuizError`` into a response.
Exception text from libraries is logged (with the trace id), never put into an error's ``detail``.
"""

from __future__ import annotations

from typing import ClassVar

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
    """401: authentication is on (``API_KEYS``, Entra ID) and the request carries no valid credential."""

    status, slug, title, error_type = 401, "unauthorized", "Authentication required", "unauthorized"


class AuthUnavailable(QuizError):
    """503: the identity provider's signing keys (Entra ID's JWKS) cannot be fetched to check a token."""

    status, slug, title, error_type = (503, "identity-provider-unavailable", "The identity provider is unreachable",
                                       "identity_provider")


class RateLimited(QuizError):
    """429: the principal has used its rounds per minute or tokens per day, or holds its fair share of the
    rounds in progress while others wait (``app.limits``); ``Retry-After`` says when to come back."""

    status, slug, title, error_type = 429, "rate-limited", "Too many rounds for this client", "limited"


class WeakThreadId(QuizError):
    """422: a new AG-UI thread's id is not a random (version 4) UUID, so it could be guessed or planted."""

    status, slug, title, error_type = 422, "thread-id-not-random", "The thread id is not random", "validation"


class AnswerNotAnOption(QuizError):
    """422: a person's answer to a multiple-choice question names none of its options (by letter or words);
    the question still waits for an answer."""

    status, slug, title, error_type = 422, "answer-not-an-option", "The answer names no option", "validation"


class LearnerRequired(QuizError):
    """422: ``difficulty: adaptive`` without a learner to adapt to (``learner_id``)."""

    status, slug, title, error_type = 422, "learner-required", "Adaptive difficulty needs a learner", "validation"


class LearnerNotFound(QuizError):
    """404: no such learner for this client (never seen, expired after ``LEARNER_TTL_S``, or forgotten)."""

    status, slug, title, error_type = 404, "learner-not-found", "Learner not found", "learner_not_found"


class BodyTooLarge(QuizError):
    """413: the request body is over ``MAX_BODY_BYTES``."""

    status, slug, title, error_type = 413, "body-too-large", "Request body too large", "validation"


class BodyTooSlow(QuizError):
    """408: the request body took longer than ``BODY_READ_TIMEOUT_S``, or came slower than
    ``BODY_MIN_RATE_BYTES_S`` after ``BODY_READ_GRACE_S`` (``app.http.limits``); sent with ``Connection: close``.
    The caller's side (a slow or stalled client), so ``validation`` like the 413, not a server error."""

    status, slug, title, error_type = 408, "body-too-slow", "Request body too slow", "validation"


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


class NoHintsLeft(QuizError):
    """409: a hint was asked for and the round has had its ``HINTS_PER_ROUND`` (or hints are off); the question
    still awaits the answer."""

    status, slug, title, error_type = 409, "no-hints-left", "No hints left for this question", "no_hints_left"


class RoundCancelled(QuizError):
    """409: the round was stopped (``DELETE /sessions/{id}/round``, from this client or another of the same
    principal) before it ended; the session is as it was before the round."""

    status, slug, title, error_type = 409, "round-cancelled", "The round was cancelled", "cancelled"


class IdempotencyKeyReused(QuizError):
    """422: an ``Idempotency-Key`` came again with a different request (another body, route or session), which
    the IETF draft answers with 422 (draft-ietf-httpapi-idempotency-key-header-07 §2.7)."""

    status, slug, title, error_type = (422, "idempotency-key-reused", "The idempotency key belongs to another request",
                                       "validation")


class RoundLost(QuizError):
    """503: the replica playing the round was stopped or died before the round ended (its heartbeat stopped).
    The session is as it was before the round; a retry — with the same ``Idempotency-Key`` — plays it again,
    once, on a replica that is up."""

    status, slug, title, error_type = 503, "round-lost", "The round was lost with its replica", "round_lost"

    def __init__(self, detail: str = "The replica playing this round stopped before the round ended; the session "
                                     "is as it was before it. Retry (with the same Idempotency-Key) to play it "
                                     "again.") -> None:
        super().__init__(detail, {"Retry-After": "1"})


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


class LLMInvalidOutput(QuizError):
    """502: the structured output failed validation on every attempt."""

    status, slug, title, error_type = (502, "llm-invalid-output", "The language model's answer was unusable",
                                       "invalid_output")




def classify(exc: BaseException, default_retry_after_s: int,
             store_errors: tuple[type[BaseException], ...] = ()) -> QuizError | None:
    """The domain error for an exception raised while playing a round; ``None`` when it is unexpected (a bug).

    ``default_retry_after_s``: the ``Retry-After`` for an LLM 429 that named none; ``store_errors``: what the
    session store raises when its database cannot be reached (``SessionStore.errors``).
    """
    from app.llm.errors import llm_failure

    if isinstance(exc, QuizError):
        return exc
    if isinstance(exc, store_errors):
        return SessionStoreUnavailable()
    if isinstance(exc, StructuredOutputError):
        return LLMInvalidOutput(f"The model did not return a valid {exc.step} result after {exc.attempts} "
                                "attempt(s). Try again; if it persists, use a more capable model.")
    return llm_failure(exc, default_retry_after_s)
