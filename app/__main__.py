"""``question-app`` / ``python -m app``: serve with uvicorn (one process; scale with replicas);
``question-app eval …``: evaluate the agents on the question set (``evals.cli``); ``question-app optimize …``:
search for a better prompt (``evals.optimize``).

Where and how it listens comes from ``Settings`` (``HOST``, ``PORT``, ``LOG_LEVEL``, ``GRACEFUL_SHUTDOWN_S``);
a bad value stops the start with a message that names the variable.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.settings import Settings


def main() -> None:
    """Read the settings, set up logging and run the app factory under uvicorn until SIGTERM/SIGINT — or, with
    ``eval`` or ``optimize`` first on the command line, run that command and exit with its status."""
    if sys.argv[1:2] == ["eval"]:
        from evals.cli import main as evaluate

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        sys.exit(evaluate(sys.argv[2:]))
    if sys.argv[1:2] == ["optimize"]:
        from evals.optimize import main as optimize

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        sys.exit(optimize(sys.argv[2:]))
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per HTTP call (the openai SDK's httpx2) is noise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=settings.graceful_shutdown_s,
                proxy_headers=True, server_header=False)


if __name__ == "__main__":
    main()
