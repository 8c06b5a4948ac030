"""The Collector ``prometheus`` exporter's metric naming, for the cases this service uses.

A port of the default ``UnderscoreEscapingWithSuffixes`` rules of prometheus/otlptranslator
(``metric_namer.go``, ``unit_namer.go``), as summarised in ../shared/TELEMETRY-NOTES.md §4: split the
name on anything but ``[a-zA-Z0-9:]``, append the unit word unless the unit is an ``{annotation}`` or the
word is already a token of the name, append ``_total`` to counters, ``_ratio`` to unit-``1`` gauges.
"""

from __future__ import annotations

import re

UNITS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds", "min": "minutes",
         "h": "hours", "d": "days", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "m": "meters",
         "%": "percent", "1": ""}


def prometheus_name(name: str, unit: str, instrument: str) -> str:
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", name) if t]
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    word = UNITS.get(unit, unit)
    if instrument == "gauge" and unit == "1":
        word = "ratio"
    if word and word not in tokens:
        tokens.append(word)
    if instrument == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    return "_".join(tokens)
