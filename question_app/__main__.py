"""``question-app`` / ``python -m question_app``: one command, five sub-commands.

    question-app [serve]        serve with uvicorn (one process; scale with replicas)
    question-app eval …         evaluate the agents on the question set (``evals.cli``)
    question-app optimize …     search for a better prompt (``evals.optimize``)
    question-app rules [--azure]  print the SLO rules (Prometheus rules file, or Azure's ARM rule groups)
    question-app reference [--check]  write (or check) docs/reference/: settings and HTTP API, from the code

Where and how the service listens comes from ``Settings`` (``HOST``, ``PORT``, ``LOG_LEVEL``,
``GRACEFUL_SHUTDOWN_S``, and uvicorn's connection cap and keep-alive: ``MAX_CONNECTIONS``,
``KEEP_ALIVE_TIMEOUT_S``); a bad value stops the start with a message that names the variable. Only the chosen
sub-command's modules are imported.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def serve(argv: list[str]) -> int:
    """Run the app factory under uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    from app.bootstrap import configure_logging
    from app.settings import Settings

    if argv:
        print(f"question-app serve takes no arguments (got {' '.join(argv)}); it reads its settings from the "
              "environment", file=sys.stderr)
        return 2
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run("app.http.factory:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=settings.graceful_shutdown_s,
                limit_concurrency=settings.max_connections, timeout_keep_alive=settings.keep_alive_timeout_s,
                proxy_headers=True, server_header=False)
    return 0


def evaluate(argv: list[str]) -> int:
    """``question-app eval``."""
    from app.bootstrap import configure_logging
    from evals.cli import main

    configure_logging(logging.WARNING)
    return main(argv)


def optimize(argv: list[str]) -> int:
    """``question-app optimize``."""
    from app.bootstrap import configure_logging
    from evals.optimize import main

    configure_logging(logging.WARNING)
    return main(argv)


def slo_rules(argv: list[str]) -> int:
    """``question-app rules [--azure]``: the SLO rules from the ``SLO_*`` settings (``telemetry.slo``) on
    stdout, as a Prometheus rules file (YAML) or, with ``--azure``, an ARM template of Azure Managed
    Prometheus rule groups (JSON). Exit 2 for another argument or a bad ``SLO_*`` value."""
    import argparse

    from pydantic import ValidationError

    from telemetry.slo import SLO, render

    parser = argparse.ArgumentParser(prog="question-app rules", description=slo_rules.__doc__)
    parser.add_argument("--azure", action="store_true", help="an ARM template of prometheusRuleGroups (JSON)")
    args = parser.parse_args(argv)
    try:
        slo = SLO()
    except ValidationError as exc:
        print(f"question-app rules: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(azure=args.azure, slo=slo))
    return 0


def reference(argv: list[str]) -> int:
    """``question-app reference [--check]``: the generated reference pages (``question_app.reference``)."""
    from question_app.reference import main

    return main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"serve": serve, "eval": evaluate, "optimize": optimize,
                                                   "rules": slo_rules, "reference": reference}


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the sub-command named first (default ``serve``) and exit with its status."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in COMMANDS:
        sys.exit(COMMANDS[args[0]](args[1:]))
    if args[:1] and args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    sys.exit(serve(args))


if __name__ == "__main__":
    main()
