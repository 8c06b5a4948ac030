"""Every failure as an RFC 9457 ``application/problem+json`` body with the trace id, counted once.

``Problems.report()`` is the one place every problem passes through — raised in a route, refused by the
body limit, rejected by validation, or ending a stream — so ``quiz.errors`` counts each exactly once,
labelled with its ``error.type`` (``telemetry.contract.ErrorType``) and, when the request matched a route,
its ``http.route`` (a route template: bounded).

| problem | status | ``error.type`` |
| --- | --- | --- |
| a ``QuizError`` (``app.errors``) | its own | its own |
| request validation | 422 | ``validation`` |
| body not UTF-8 JSON | 400 | ``validation`` |
| no such path / method | 404 / 405 | ``unknown_route`` |
| an unexpected exception | 500 | ``internal`` |
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.metrics import Counter
from opentelemetry.semconv.attributes import error_attributes, http_attributes
from opentelemetry.trace import get_current_span
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import QuizError
from app.http.schemas import Problem
from telemetry.contract import ErrorType
from telemetry.spans import current_trace_id, mark_failed

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

# The error responses of a route that plays rounds, for the OpenAPI document.
ROUND_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text} for status, text in {
        400: "The body is not UTF-8 JSON", 401: "API_KEYS is set and no valid key was sent",
        404: "Unknown or expired session_id",
        409: "A round of this session is still in progress (one at a time; see Retry-After), the session's "
             "round awaits your `answer`, an `answer` or a `hint` request came when no round awaits one, or the "
             "round has had its HINTS_PER_ROUND hints",
        413: "Body too large",
        422: "Invalid request: a field (`errors`), adaptive difficulty without a learner, or an answer to a "
             "multiple-choice question that names no option",
        429: "This client's rounds per minute or tokens per day are used up, or it holds its fair share of the "
             "rounds in progress while others play (see Retry-After and the RateLimit fields)",
        502: "LLM failure (auth, upstream error, unusable output)",
        503: "LLM rate limited, session store unavailable, or too many rounds in progress (see Retry-After)",
        504: "LLM timeout"}.items()}

# The error responses of the session routes.
SESSION_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text} for status, text in {
        401: "API_KEYS is set and no valid key was sent", 404: "Unknown or expired session id",
        409: "A round of this session is in progress (DELETE waits for it; see Retry-After)",
        422: "The session id (or the body) is not valid",
        503: "The session store is unavailable (see Retry-After)"}.items()}

# The error responses of the learner routes.
LEARNER_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text} for status, text in {
        401: "API_KEYS is set and no valid key was sent",
        404: "No such learner for this client (never seen, expired after LEARNER_TTL_S, or forgotten)",
        422: "The learner id is not valid", 503: "The session store is unavailable (see Retry-After)"}.items()}

# Routes that only read a session: a round in progress does not matter to them.
SESSION_LOOKUP_ERRORS = {status: response for status, response in SESSION_ERRORS.items() if status != 409}
# The error responses of the feedback route (it takes a body).
FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    **SESSION_LOOKUP_ERRORS,
    400: ROUND_ERRORS[400], 413: ROUND_ERRORS[413],
    404: {**SESSION_ERRORS[404], "description": "Unknown session, or a round it does not keep"}}

# Problems the framework raises (routing, body parsing): status → (slug, error.type, what to do).
_HTTP_PROBLEMS: dict[int, tuple[str, ErrorType, str]] = {
    400: ("bad-request", "validation", "The body could not be parsed: send UTF-8 JSON with "
                                       "Content-Type: application/json."),
    404: ("not-found", "unknown_route", "There is no {path}: see /docs for the API."),
    405: ("method-not-allowed", "unknown_route", "{method} is not allowed on {path}: see /docs."),
}


class Problems:
    """Builds problem bodies and counts them. ``errors``: the ``quiz.errors`` counter (``None``: not counted)."""

    def __init__(self, errors: Counter | None) -> None:
        self._errors = errors

    def report(self, status: int, slug: str, title: str, detail: str, error_type: ErrorType,
               instance: str | None = None, route: str | None = None, **extra: Any) -> Problem:
        """Count one problem of ``error_type`` (on ``route``, the matched route template, if any) and return its
        body (``trace_id`` from the current span)."""
        if self._errors is not None:
            labels: dict[str, str] = {error_attributes.ERROR_TYPE: error_type}
            if route:
                labels[http_attributes.HTTP_ROUTE] = route
            self._errors.add(1, labels)
        return Problem(type=f"/problems/{slug}", title=title, status=status, detail=detail, instance=instance,
                       trace_id=current_trace_id(), **extra)

    def internal(self, instance: str | None = None, route: str | None = None) -> Problem:
        """``report()`` for an unexpected exception (a bug; log it with the trace id before)."""
        return self.report(500, "internal", "Internal error", "Something went wrong on our side; the trace id "
                           "identifies it in the logs.", "internal", instance, route)

    def of(self, error: QuizError, instance: str | None = None, route: str | None = None) -> Problem:
        """``report()`` for a domain error (with ``retry_after`` when it has a ``Retry-After`` in seconds)."""
        extra = {"retry_after": int(wait)} if (wait := error.headers.get("Retry-After", "")).isdigit() else {}
        return self.report(error.status, error.slug, error.title, error.detail, error.error_type, instance, route,
                           **extra)

    def failed_stream(self, error: BaseException, route: str | None = None) -> Problem:
        """``report()`` for a failure after a stream's 200 was sent (``/ask``'s events, an AG-UI run): a
        ``QuizError`` as ``of()``, anything else as ``internal()`` (logged with the trace id: a bug).

        The status line said 200, so the failure is written on the request's server span instead
        (``error.type``, ERROR status: "another error" in the HTTP span conventions) and counted in
        ``quiz.errors`` on the route, where the dashboard's failed-request ratio finds it.
        """
        if isinstance(error, QuizError):
            problem, error_type = self.of(error, route=route), error.error_type
        else:
            log.error("unhandled error in a streamed round (trace_id=%s)", current_trace_id(), exc_info=error)
            problem, error_type = self.internal(route=route), "internal"
        mark_failed(get_current_span(), error_type, problem.title)
        return problem

    def response(self, error: QuizError, instance: str | None = None, route: str | None = None) -> JSONResponse:
        """The ``application/problem+json`` response for a domain error, with its headers."""
        return respond(self.of(error, instance, route), error.headers)

    def install(self, app: FastAPI) -> None:
        """Register the exception handlers that turn every failure of ``app`` into a problem response."""

        @app.exception_handler(QuizError)
        async def _quiz_error(request: Request, exc: QuizError) -> JSONResponse:
            return self.response(exc, request.url.path, route_of(request))

        @app.exception_handler(RequestValidationError)
        async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
            errors = [{"loc": field_path(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                      for e in exc.errors()]
            fields = ", ".join((".".join(str(p) for p in e["loc"][1:]) or "body") if e["loc"][:1] == ["body"]
                               else " ".join(str(p) for p in e["loc"]) for e in errors)
            return respond(self.report(422, "validation", "Invalid request", f"Fix these fields: {fields}.",
                                       "validation", request.url.path, route_of(request), errors=errors))

        @app.exception_handler(StarletteHTTPException)
        async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
            if exc.status_code in _HTTP_PROBLEMS:
                slug, error_type, template = _HTTP_PROBLEMS[exc.status_code]
                detail = template.format(path=request.url.path, method=request.method)
            else:  # the framework's own text, as it is (it may hold braces: never a template)
                slug, error_type = "http-error", "validation" if exc.status_code < 500 else "internal"
                detail = str(exc.detail)
            problem = self.report(exc.status_code, slug, HTTPStatus(exc.status_code).phrase, detail, error_type,
                                  request.url.path, route_of(request))
            return respond(problem, getattr(exc, "headers", None))

        @app.exception_handler(Exception)
        async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
            log.exception("unhandled error on %s (trace_id=%s)", request.url.path, current_trace_id())
            return respond(self.internal(request.url.path, route_of(request)))


def field_path(loc: Any) -> list[Any]:
    """A validation error's location without the tags of tagged unions in the body (a model's name, which is no
    field: no field of a body starts with a capital): ``["body", "AskRequest", "subject"]`` → ``["body",
    "subject"]``. Other places (``["header", "Idempotency-Key"]``, ``["query", …]``) are kept as they are."""
    tagged = len(loc) > 2 and loc[0] == "body"
    return [part for i, part in enumerate(loc)
            if not (tagged and i >= 1 and isinstance(part, str) and part[:1].isupper())]


def route_of(request: Request) -> str | None:
    """The template of the route ``request`` matched (``/ask``), or ``None`` before or without a match."""
    route = request.scope.get("route")
    return getattr(route, "path", None)


def respond(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    """``problem`` as an ``application/problem+json`` response (``errors`` only for validation problems)."""
    return JSONResponse(problem.model_dump(exclude_unset=True), status_code=problem.status, headers=headers,
                        media_type=PROBLEM_JSON)
