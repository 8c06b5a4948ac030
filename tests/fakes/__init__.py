"""Peers at the edge of the world for the tests and the benchmark, all on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` every 10 ms until it is truthy and return it: readiness, not a guessed sleep.
    Raises ``AssertionError`` naming ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not met within {timeout_s} s"
        time.sleep(0.01)
    return result
