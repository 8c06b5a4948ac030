"""One way a process starts and stops, for the service's lifespan and both command-line tools (``question-app
eval``, ``question-app optimize``): settings → logging → telemetry → the LLM → … → the LLM closed → telemetry
flushed (last, so the spans of everything before it leave).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.llm import LLM, build_llm
from app.settings import Settings
from app.version import VERSION
from telemetry import contract as C
from telemetry.sdk import Telemetry, configure

# HTTP-library wire traces print raw request and response headers at DEBUG (credentials, or a secret an
# upstream echoes back): never below INFO, whatever LOG_LEVEL says. One line per HTTP call is noise.
WIRE_LOGGERS = ("httpcore", "httpcore2", "hpack")
CHATTY_LOGGERS = ("httpx", "httpx2")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int) -> None:
    """Log at ``level`` to standard error, keeping the HTTP libraries' header-printing traces out."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=LOG_FORMAT)
    quiet_wire_loggers()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def quiet_wire_loggers() -> None:
    """Keep the HTTP libraries' header-printing DEBUG traces out of every log."""
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))


def start_telemetry(traffic: str = C.TRAFFIC_LIVE) -> Telemetry:
    """The process's providers and instrumentation (``telemetry.sdk.configure``), ``quiz.traffic`` = ``traffic``.
    Before anything is instrumented (a web app must be wrapped before it starts)."""
    quiet_wire_loggers()
    return configure(VERSION, traffic)


@asynccontextmanager
async def running(settings: Settings, telemetry: Telemetry) -> AsyncIterator[LLM]:
    """The LLM ``settings`` choose, open while the body runs; on the way out it is closed, then ``telemetry``
    is flushed and shut down (within ``TELEMETRY_SHUTDOWN_TIMEOUT_S``), whatever happened."""
    try:
        llm = await build_llm(settings)
        try:
            yield llm
        finally:
            await llm.aclose()
    finally:
        telemetry.shutdown(settings.telemetry_shutdown_timeout_s)


@asynccontextmanager
async def process(settings: Settings, traffic: str = C.TRAFFIC_LIVE) -> AsyncIterator[tuple[Telemetry, LLM]]:
    """Telemetry and the LLM for a command-line tool, both closed on exit (``running``)."""
    telemetry = start_telemetry(traffic)
    async with running(settings, telemetry) as llm:
        yield telemetry, llm
