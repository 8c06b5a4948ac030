"""The reference schemas in ``../shared/schemas``: CI always has them beside the checkout; a user's clone
never does. Outside CI a test that needs them is skipped with the reason; under ``CI=true`` it fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"


def schema(name: str) -> dict[str, Any]:
    """A reference schema by file name; skips (or fails under CI) when ``../shared/schemas`` is absent."""
    if not SCHEMAS.is_dir():
        reason = f"{SCHEMAS} is missing: the reference schemas come from ../shared beside the checkout"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason + " (CI has it; a fresh clone does not)")
    return json.loads((SCHEMAS / name).read_text())
