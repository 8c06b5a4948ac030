"""The App Insights model (``tests/fakes/azuremonitor.py``) passes the exporter's own test cases before it judges
our queries: each case of contrib's ``trace_to_envelope_test.go`` and ``logexporter_test.go``, transcribed in
``tests/fakes/azuremonitor_cases.json`` with its source lines, is run through the model and every field the Go
test asserts is compared — or the case is named below as not modelled, with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.azuremonitor import as_string, ingested, log_row, severity_level, span_rows
from tests.fakes.otlp_receiver import LogRecord, Span, SpanEvent

CASES = json.loads((Path(__file__).parent / "fakes" / "azuremonitor_cases.json").read_text())["cases"]
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
# Cases of what our telemetry never produces, or of options that are off (and, for the policy, unmerged).
NOT_MODELLED = {
    "TestRPCServerSpanToRequestData#1", "TestRPCServerSpanToRequestData#2-fallback",
    "TestRPCClientSpanToRemoteDependencyData#1", "TestRPCClientSpanToRemoteDependencyData#2-fallback",
    "TestRPCClientSpanToRemoteDependencyData#3-error", "TestDatabaseClientSpanToRemoteDependencyData#1",
    "TestDatabaseClientSpanToRemoteDependencyData#2", "TestMessagingConsumerSpanToRequestData",
    "TestMessagingProducerSpanToRequestData", "TestApplyLinksToEnvelope", "TestApplyLinksToEnvelopeWithNoLinks",
    "TestHandleEventData/Event name from attributeMicrosoftCustomEventName",
    "TestHandleEventData/Event name from attributeApplicationInsightsEventMarkerAttribute",
    "TestHandleEventData/No event name attributes", "TestHandleExceptionDataWithDetails/Full exception details",
    "TestHandleExceptionDataWithDetails/Minimal exception details",
    # PR #48100 (unmerged): non_error_http_status_codes / the OTel-spec alignment, both off by default.
    "TestHTTPServerSpan_NonErrorStatusCode_MarkedSuccess", "TestHTTPClientSpan_NonErrorStatusCode_MarkedSuccess",
    "TestHTTPServerSpan_OTelSpecAlignment_4xxIsSuccess", "TestHTTPClientSpan_OTelSpecAlignment_4xxStillError",
    "TestHTTPServerSpan_OTelSpecAlignment_5xxStillError", "TestHTTPStatusPolicy_NonErrorOverridesAlignment",
}
# Envelope fields the model does not produce (nothing we query): times, durations, URLs, device and SDK tags.
UNMODELLED_FIELDS = {"envelope_name", "baseType", "time", "duration", "url", "source", "data", "target",
                     "severityLevel_name", "ai.application.ver", "ai.device.model", "ai.device.type",
                     "ai.device.osVersion", "ai.internal.sdkVersion__contains", "ai.user.id"}
TAGS = {"ai.operation.id": "operation_Id", "ai.operation.parentId": "operation_ParentId",
        "ai.operation.name": "operation_Name", "ai.cloud.role": "cloud_RoleName",
        "ai.cloud.roleInstance": "cloud_RoleInstance"}
DATA = {"name": "name", "id": "id", "responseCode": "resultCode", "resultCode": "resultCode", "success": "success",
        "type": "type", "message": "message", "severityLevel": "severityLevel"}


def value(typed: dict[str, Any]) -> Any:
    kind, raw = typed["type"], typed["value"]
    return {"int": int, "double": float, "bool": bool, "str": str}.get(kind, lambda v: v)(raw)


def values(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return {k: value(v) for k, v in (attributes or {}).items()}


def span_of(given: dict[str, Any]) -> Span:
    return Span(name=given["name"], kind=given["kind"], trace_id=given.get("trace_id", ""),
                span_id=given.get("span_id", ""), parent_span_id=given.get("parent_span_id", ""),
                attributes=values(given.get("attributes")), resource=values(given.get("resource_attributes")),
                scope=given.get("scope", {}).get("name", ""), status_code=STATUS[given["status"]["code"]],
                start_ns=given.get("start_time_unix_nano", 0), end_ns=given.get("end_time_unix_nano", 0),
                events=[SpanEvent(e["name"], values(e.get("attributes")), e.get("time_unix_nano", 0))
                        for e in given.get("events", [])],
                status_message=given["status"].get("message", ""))


def log_of(given: dict[str, Any]) -> LogRecord:
    body = given.get("body")
    return LogRecord(event_name="", body=None if body is None else value(body),
                     severity_number=given.get("severity_number", 0), attributes=values(given.get("attributes")),
                     resource=values(given.get("resource_attributes")), scope=given.get("scope", {}).get("name", ""),
                     trace_id=given.get("trace_id", ""), span_id=given.get("span_id", ""), time_ns=0)


def compare(case: str, table: str, row: dict[str, Any], expected: dict[str, Any], top: bool = True) -> None:
    """Every field ``expected`` asserts, on ``row``; a field neither compared nor listed as unmodelled fails.
    ``data`` at the top is the envelope's data; within it, a dependency's ``data`` (its URL)."""
    for key, wanted in expected.items():
        if key == "table":
            assert table == wanted, (case, key)
        elif key == "tags":
            for tag, tag_value in wanted.items():
                if tag not in UNMODELLED_FIELDS:
                    assert row.get(TAGS[tag]) == tag_value, (case, tag, row.get(TAGS[tag]))
        elif key == "data" and top:
            compare(case, table, row, wanted, top=False)
        elif key in DATA:
            assert row.get(DATA[key]) == wanted, (case, key, row.get(DATA[key]), wanted)
        elif key in ("properties", "properties__superset_of"):
            dims = row["customDimensions"]
            assert {k: dims.get(k) for k in wanted} == wanted, (case, key)
        elif key == "exceptions[0]":  # App Insights' exceptions columns: type, outerMessage (no stack modelled)
            assert (row["type"], row["outerMessage"]) == (wanted["typeName"], wanted["message"]), (case, key)
        elif key == "properties__contains_substring":
            assert all(v in row["customDimensions"][k] for k, v in wanted.items()), (case, key)
        else:
            assert key in UNMODELLED_FIELDS, (case, "a field the model neither compares nor lists", key)


@pytest.mark.parametrize("case", [c for c in CASES if c["id"] not in NOT_MODELLED], ids=lambda c: c["id"])
def test_the_model_passes_the_exporters_own_case(case: dict[str, Any]) -> None:
    expected, given = case["expected"], case["input"]
    version = given.get("scope", {}).get("version", "")  # (our receiver keeps no scope version)
    if case["id"] == "TestToAiSeverityLevel":
        assert {n: severity_level(int(n)) for n in expected["severityLevel_by_number"]} == {
            n: v["level"] for n, v in expected["severityLevel_by_number"].items()}
    elif case["id"] == "TestSetAttributesAsProperties":  # setAttributesAsProperties: Value.AsString
        assert {k: as_string(v) for k, v in values(given["attributes"]).items()} == expected["properties"]
    elif case["kind"] == "log":
        compare(case["id"], "traces", log_row(log_of(given), scope_version=version), expected)
    elif case["id"] == "TestSpanWithEventsToEnvelopes":  # an RPC span (not modelled): its events' rows are
        span = span_of(given)
        span.attributes.pop("rpc.system")
        rows = span_rows(span, scope_version=version)
        assert len(rows) == expected["envelope_count"]
        for index in (1, 2):
            compare(case["id"], *rows[index], expected[f"envelopes[{index}]"])
    else:
        ((table, row), *_) = span_rows(span_of(given), scope_version=version)
        compare(case["id"], table, row, expected)


def test_every_case_is_run_or_named_as_not_modelled() -> None:
    assert NOT_MODELLED <= {c["id"] for c in CASES}
    assert len([c for c in CASES if c["id"] not in NOT_MODELLED]) >= 20


def test_a_status_is_written_as_traceutil_spells_it_and_a_message_without_text_is_not_ingested() -> None:
    """The two facts the old stand-in had wrong (and the dashboard with it): ``otel.status_code`` is
    ``STATUS_CODE_ERROR`` (contrib's traceutil.StatusCodeStr), and a log record without a body becomes a
    ``traces`` item with an empty message, which Azure's ingestion refuses."""
    error = span_of({"name": "x", "kind": "INTERNAL", "status": {"code": "ERROR", "message": "boom"}})
    ((table, row),) = span_rows(error)
    assert (table, row["resultCode"], row["success"]) == ("dependencies", "2", False)
    assert row["customDimensions"]["otel.status_code"] == "STATUS_CODE_ERROR"
    assert row["customDimensions"]["otel.status_description"] == "boom"
    silent = log_row(log_of({"severity_number": 9, "attributes": {}}))
    assert silent["message"] == "" and not ingested("traces", silent)
    assert ingested("traces", log_row(log_of({"severity_number": 9, "body": {"type": "str", "value": "hi"}})))


def test_an_item_over_azures_property_limits_is_lost_whole() -> None:
    """The Collector's exporter cuts nothing; Azure refuses an item with a customDimensions value over 8,192
    characters (or a key over 150): with content capture on, a long ``gen_ai.input.messages`` would lose the
    whole ``chat`` dependency, which is why otel-collector.yaml truncates attributes first (tests/test_k8s.py)."""
    def chat(value: str) -> dict:
        return {"name": "chat m", "kind": "CLIENT", "status": {"code": "UNSET"},
                "attributes": {"gen_ai.input.messages": {"type": "str", "value": value}}}

    ((table, row),) = span_rows(span_of(chat("x" * 8192)))
    assert ingested(table, row)
    ((table, row),) = span_rows(span_of(chat("x" * 8193)))
    assert not ingested(table, row)
    ((table, row),) = span_rows(span_of({"name": "x", "kind": "INTERNAL", "status": {"code": "UNSET"},
                                         "attributes": {"k" * 151: {"type": "str", "value": "v"}}}))
    assert not ingested(table, row)
    long_message = log_row(log_of({"severity_number": 9, "body": {"type": "str", "value": "m" * 32769}}))
    assert not ingested("traces", long_message)
