"""What Application Insights stores for our telemetry: a model of the Collector's ``azuremonitor`` exporter
(opentelemetry-collector-contrib, ``exporter/azuremonitorexporter``) and of Azure's ingestion, for the tests
that judge our dashboard's and docs' KQL.

It is built from the exporter's own source and checked against the exporter's own test cases before it judges
anything: ``azuremonitor_cases.json`` holds those cases as data (input span or log record → the envelope fields
the Go test asserts, each with its source file and lines), and ``tests/test_azuremonitor_model.py`` runs the
model on them. The rules, by source (``trace_to_envelope.go``, ``log_to_envelope.go``, ``contracts_utils.go``,
``internal/coreinternal/traceutil/traceutil.go``; lines in the cases file):

- a span of kind SERVER or CONSUMER is a ``requests`` row, any other a ``dependencies`` row; INTERNAL and
  UNSPECIFIED dependencies have ``type`` ``InProc``;
- without an HTTP status, ``resultCode`` is the span status as a number (``"0"`` unset, ``"1"`` ok, ``"2"``
  error) and ``success`` is "not error"; a span with ``http.request.method`` is HTTP: a request is named
  ``<method> /<http.route>`` (else ``<method> <span name>``), a dependency ``<method>[ <route>]`` with type
  ``HTTP``; ``resultCode`` is ``http.response.status_code`` and ``success`` is 100–399, so a 4xx is a failed
  request (the options that change that are off by default);
- ``customDimensions``: the span's string, bool, int and double attributes as strings (arrays and maps
  dropped), then ``otel.status_code`` as ``traceutil.StatusCodeStr`` writes it (``STATUS_CODE_UNSET``,
  ``STATUS_CODE_OK``, ``STATUS_CODE_ERROR``), ``otel.status_description`` when the status has a message, the
  resource attributes and ``instrumentationlibrary.name``/``.version``;
- an ``exception`` span event is an ``exceptions`` row, any other event a ``traces`` row (message = the event's
  name) only with ``spaneventsenabled``;
- a log record is a ``traces`` row whose ``message`` is its body as a string, with no default;
  ``severityLevel`` from the severity number; attributes, resource and scope in ``customDimensions``.

Azure's ingestion then refuses a ``traces`` item (``MessageData``) whose ``message`` is empty (400, "Field
'message' on type 'MessageData' is required but missing or empty"; the Azure SDKs' exporters default a body,
the Collector's does not): ``ingested()`` drops it, as Azure does. Not modelled (our telemetry has none of it):
RPC, database and messaging spans, links, URLs and device tags, custom events and exceptions made from logs.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.otlp_receiver import LogRecord, Span

STATUS_CODE_STR = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}  # traceutil.StatusCodeStr
SEVERITY = [(1, 8, 0), (9, 12, 1), (13, 16, 2), (17, 20, 3), (21, 24, 4)]  # number range → Verbose … Critical
NOT_MODELLED = ("rpc.system", "db.system", "db.system.name", "messaging.system", "faas.trigger")


class NotModelled(ValueError):
    """The span is of a kind this model does not cover (RPC, database, messaging, FaaS)."""


def go_float(value: float) -> str:
    """``strconv.FormatFloat(v, 'f', -1, 64)``: the shortest decimal, no exponent (1.0 → ``1``, 0.1 → ``0.1``)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = f"{value:.17f}".rstrip("0")
    return text.removesuffix(".0").rstrip(".") if "." in text else text


def span_property(value: Any) -> str | None:
    """``setAttributeValueAsProperty``: bool, string, int and double as strings; arrays and maps dropped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return value
    return None


def as_string(value: Any) -> str:
    """pdata ``Value.AsString``: strings as they are, bools ``true``/``false``, numbers in Go's formatting,
    arrays and maps as compact JSON (keys sorted); an empty value is ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def role(resource: dict[str, Any]) -> str:
    """``cloud_RoleName``: ``service.namespace`` + ``.`` + ``service.name`` (just the name without namespace)."""
    name, namespace = resource.get("service.name", ""), resource.get("service.namespace")
    return f"{namespace}.{name}" if namespace else str(name)


def scope_properties(name: str, version: str = "") -> dict[str, str]:
    return {k: v for k, v in (("instrumentationlibrary.name", name), ("instrumentationlibrary.version", version))
            if v}


def span_rows(span: Span, span_events_enabled: bool = True,
              scope_version: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The rows one span becomes, as (table, row): its request or dependency, then one row per event it
    exports. ``span_events_enabled``: the exporter's ``spaneventsenabled`` (on in ``otel-collector.yaml``)."""
    if any(key in span.attributes for key in NOT_MODELLED):
        raise NotModelled(f"span {span.name!r} is an RPC, database, messaging or FaaS span")
    dims = {k: text for k, v in span.attributes.items() if (text := span_property(v)) is not None}
    dims["otel.status_code"] = STATUS_CODE_STR[span.status_code]
    if span.status_message:
        dims["otel.status_description"] = span.status_message
    common = {**{k: v if isinstance(v, str) else "" for k, v in span.resource.items()},
              **scope_properties(span.scope, scope_version)}  # on the span's row and its events' rows
    dims |= common
    row: dict[str, Any] = {
        "name": span.name, "id": span.span_id, "operation_Id": span.trace_id,
        "operation_ParentId": span.parent_span_id, "cloud_RoleName": role(span.resource),
        "cloud_RoleInstance": str(span.resource.get("service.instance.id", "")),
        "resultCode": str(span.status_code), "success": span.status_code != 2,
        "duration": (span.end_ns - span.start_ns) / 1e6,
        "customDimensions": dims, "customMeasurements": {}}
    method = span.attributes.get("http.request.method")
    status = span.attributes.get("http.response.status_code")
    route = str(span.attributes.get("http.route", "") or "")
    if span.kind in ("SERVER", "CONSUMER"):
        table = "requests"
        if method:
            row["name"] = f"{method} {'/' + route.lstrip('/') if route else span.name}"
            if isinstance(status, int):
                row["resultCode"], row["success"] = str(status), 100 <= status <= 399
        row["operation_Name"] = row["name"]
    else:
        table = "dependencies"
        row["type"] = "InProc" if span.kind in ("INTERNAL", "UNSPECIFIED") else ""
        if method:
            row["name"] = f"{method} {route}".strip()
            row["type"] = "HTTP" if span.kind not in ("INTERNAL", "UNSPECIFIED") else row["type"]
            if isinstance(status, int):
                row["resultCode"], row["success"] = str(status), 100 <= status <= 399
    rows = [(table, row)]
    for event in span.events:
        properties = {k: t for k, v in event.attributes.items() if (t := span_property(v)) is not None}
        base = {"operation_Id": span.trace_id, "operation_ParentId": span.span_id,
                "cloud_RoleName": role(span.resource), "cloud_RoleInstance": row["cloud_RoleInstance"],
                "customDimensions": {**properties, **common}}
        if event.name == "exception":
            rows.append(("exceptions", {**base, "type": str(event.attributes.get("exception.type", "")),
                                        "outerMessage": str(event.attributes.get("exception.message", ""))}))
        elif span_events_enabled:
            rows.append(("traces", {**base, "message": event.name, "severityLevel": 1}))
    return rows


def severity_level(number: int) -> int:
    """``toAiSeverityLevel``: 1–8 Verbose (0), 9–12 Information (1), 13–16 Warning (2), 17–20 Error (3), 21–24
    Critical (4); anything else Information."""
    return next((level for low, high, level in SEVERITY if low <= number <= high), 1)


def log_row(record: LogRecord, scope_version: str = "") -> dict[str, Any]:
    """The ``traces`` row of a log record (custom events and exceptions from logs are off by default)."""
    dims = {k: as_string(v) for k, v in record.resource.items()}
    dims |= scope_properties(record.scope, scope_version)
    dims |= {k: as_string(v) for k, v in record.attributes.items()}
    return {"message": as_string(record.body), "severityLevel": severity_level(record.severity_number),
            "operation_Id": record.trace_id, "operation_ParentId": record.span_id,
            "cloud_RoleName": role(record.resource),
            "cloud_RoleInstance": str(record.resource.get("service.instance.id", "")), "customDimensions": dims}


MAX_PROPERTY_KEY, MAX_PROPERTY_VALUE, MAX_MESSAGE = 150, 8192, 32768


def ingested(table: str, row: dict[str, Any]) -> bool:
    """Whether Azure's ingestion keeps the item: a ``traces`` item needs a non-empty ``message`` of at most
    32,768 characters, and no ``customDimensions`` key may pass 150 characters nor value 8,192. Those are the
    limits the Azure SDKs' exporters cut to before sending (azure-monitor-opentelemetry-exporter
    ``_utils._filter_custom_properties``: "Max key length is 150, value is 8192"), because the service refuses
    an item over them; the Collector's exporter cuts nothing, so an item over them is lost whole."""
    if table == "traces" and not (row.get("message") and len(row["message"]) <= MAX_MESSAGE):
        return False
    return all(len(k) <= MAX_PROPERTY_KEY and len(v) <= MAX_PROPERTY_VALUE
               for k, v in row.get("customDimensions", {}).items())


def metric_rows(points: list[Any]) -> list[dict[str, Any]]:
    """``metric_to_envelopes.go``: one ``customMetrics`` row per data point, named by its OTel name."""
    return [{"name": p.name, "cloud_RoleName": role(p.resource),
             "customDimensions": {**{k: t for k, v in p.attributes.items() if (t := span_property(v)) is not None},
                                  **{k: as_string(v) for k, v in p.resource.items()}}} for p in points]


TABLES = ("requests", "dependencies", "exceptions", "traces", "customMetrics")


def app_insights(spans: list[Span], logs: list[LogRecord], points: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """Every row Application Insights keeps for this telemetry, by table."""
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for span in spans:
        for table, row in span_rows(span):
            if ingested(table, row):
                rows[table].append(row)
    for record in logs:
        row = log_row(record)
        if ingested("traces", row):
            rows["traces"].append(row)
    rows["customMetrics"] = metric_rows(points)
    return rows
