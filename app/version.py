"""The service's version: the installed distribution's (``question-app`` in ``pyproject.toml``), ``0.0.0`` when
run from a source tree that is not installed. Reported in ``/health``, the OpenAPI document and
``service.version``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("question-app")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0"
