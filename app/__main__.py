"""``question-app`` / ``python -m app``: serve with uvicorn (one process; scale with replicas).

Host and port from ``HOST`` (default 127.0.0.1; the container sets 0.0.0.0) and ``PORT`` (default 8000).
"""

from __future__ import annotations

import logging
import os

import uvicorn


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per LLM call is noise
    uvicorn.run("app.main:create_app", factory=True, host=os.environ.get("HOST", "127.0.0.1"),
                port=int(os.environ.get("PORT", "8000")), log_level=os.environ.get("LOG_LEVEL", "info").lower(),
                timeout_graceful_shutdown=int(os.environ.get("GRACEFUL_SHUTDOWN_S", "20")),
                proxy_headers=True, server_header=False)


if __name__ == "__main__":
    main()
