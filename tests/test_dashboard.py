"""The Grafana dashboard imports, and every panel shows real data from this service.

- The dashboard validates against the Grafana dashboard schema (export keys set aside), and each target
  against its data source's query schema (../shared/schemas).
- Every PromQL expression parses (``promtool check rules``) and returns data from a real Prometheus that
  scraped this service's metrics under the Collector's names and labels, after real /ask traffic.
- Every KQL query references only tables, columns and ``customDimensions``/``customMeasurements`` keys that
  the ``azuremonitor`` exporter's mapping of this service's real spans and metrics produces. There is no
  Azure here: the mapping is the documented one (../shared/TELEMETRY-NOTES.md §3), not App Insights itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.fakes.collector_prometheus import CollectorExposition
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver, Span
from tests.fakes.prometheus import PrometheusServer
from tests.shared import schema

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = json.loads((ROOT / "telemetry" / "dashboards" / "question-app.json").read_text())
VARIABLES = {"$namespace": "otel-app", "$service": "question-app", "$__rate_interval": "1m", "$__range": "5m",
             "$__interval": "1m"}


def panels() -> list[dict]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def prom_targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() if p["datasource"]["type"] == "prometheus"
            for t in p["targets"]]


def kql_targets() -> list[tuple[str, str]]:
    return [(p["title"], t["azureLogAnalytics"]["query"]) for p in panels() for t in p["targets"]
            if t.get("queryType") == "Azure Log Analytics"]


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


# --- import -----------------------------------------------------------------------------------------
def test_dashboard_validates_against_the_grafana_schema() -> None:
    core = {k: v for k, v in DASHBOARD.items() if not k.startswith("__")}
    jsonschema.Draft7Validator(schema("grafana-dashboard.jsonschema.json")).validate(core)


def test_every_target_validates_against_its_data_source_schema() -> None:
    validators = {"prometheus": jsonschema.Draft7Validator(schema("grafana-prometheus.jsonschema.json")),
                  "grafana-azure-monitor-datasource":
                      jsonschema.Draft7Validator(schema("grafana-azuremonitor.jsonschema.json"))}
    for panel in panels():
        for target in panel["targets"]:
            validators[panel["datasource"]["type"]].validate(target)


def test_it_imports_with_no_editing() -> None:
    inputs = {i["name"]: i for i in DASHBOARD["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert inputs["DS_AZURE_MONITOR"]["pluginId"] == "grafana-azure-monitor-datasource"
    assert DASHBOARD["uid"] == "question-app-otel" and DASHBOARD["id"] is None and len(DASHBOARD["uid"]) <= 40
    text = json.dumps(DASHBOARD)
    used = set(re.findall(r"\$\{(DS_[A-Z_]+|VAR_[A-Z_]+)\}", text))
    assert used == set(inputs)  # every ${…} is asked for on import, and every input is used
    for panel in panels():
        assert panel["datasource"]["uid"] in {"${DS_PROMETHEUS}", "${DS_AZURE_MONITOR}"}
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"namespace", "service", "appinsights", "operation_id"} <= variables
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert [r.split(" ")[0] for r in rows] == ["Service", "LLM", "Quiz", "Application"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (python3 tests/prerequisites.py installs it)"
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(prom_targets())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- real data ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scraped(otlp: OTLPReceiver, llm_server: FakeOpenAI):
    """Play success and failure rounds in two bursts while a real Prometheus scrapes the exposition."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    mp.setenv("OTEL_METRIC_EXPORT_INTERVAL", "250")
    mp.setenv("OTEL_SERVICE_NAME", "question-app")
    mp.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=otel-app,service.instance.id=question-app-7d9f-abcde,"
                                          "k8s.pod.name=question-app-7d9f-abcde,k8s.namespace.name=otel-app")
    otlp.clear()
    llm_server.clear()
    from app.main import create_app
    from tests.conftest import settings_for

    def burst(client: TestClient) -> list[str]:
        trace_ids = []
        for verdict, subject, difficulty in [("correct", "math", "easy"), ("incorrect", "history", "hard"),
                                             ("partially_correct", "science", "medium"), ("correct", "poetry", "hard")]:
            llm_server.script("Grade", verdict=verdict)
            r = client.post("/ask", json={"subject": subject, "difficulty": difficulty})
            assert r.status_code == 200
            trace_ids.append(r.json()["trace_id"])
        llm_server.fail_next(Fault("status", 429, {"Retry-After": "1"}), times=2)
        assert client.post("/ask", json={"subject": "math"}).status_code == 503
        llm_server.fail_next(Fault("status", 500), times=2)
        assert client.post("/ask", json={"subject": "math"}).status_code == 502
        assert client.post("/ask", json={"session_id": "X" * 22}).status_code == 404
        return trace_ids

    with CollectorExposition(otlp) as exposition, PrometheusServer([exposition.target]) as prometheus, \
            TestClient(create_app(settings_for(llm_server))) as client:
        prometheus.wait_for_scrape()
        first = burst(client)
        time.sleep(3)
        second = burst(client)
        time.sleep(3)
        otlp.wait_for(lambda: all(len(otlp.trace(t)) == 8 for t in first + second))
        if os.environ.get("DASHBOARD_PNG"):  # a picture of the panels, for the README
            from tests.render_dashboard import render

            render(prometheus.url, DASHBOARD, substitute, Path(os.environ["DASHBOARD_PNG"]))
        yield prometheus, exposition, otlp
    mp.undo()
    llm_server.clear()


def has_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


@pytest.mark.parametrize(("title", "expr"), prom_targets(), ids=[t for t, _ in prom_targets()])
def test_every_promql_panel_returns_data(scraped, title: str, expr: str) -> None:
    prometheus, _, _ = scraped
    assert has_data(prometheus.query(substitute(expr))), f"{title}: no data for {substitute(expr)}"


def test_the_variables_find_the_service(scraped) -> None:
    prometheus, _, _ = scraped
    (namespace, service) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]
    assert prometheus.label_values("service_namespace", "http_server_request_duration_seconds_count") == ["otel-app"]
    match = re.search(r"label_values\((.+), service_name\)", service["query"])
    assert match, service["query"]
    assert prometheus.label_values("service_name", substitute(match.group(1))) == ["question-app"]
    assert "service_namespace" in namespace["query"]
    # job and instance are the exporter's (honorLabels), as the PodMonitor keeps them.
    series = prometheus.query("quiz_rounds_total")
    assert {s["metric"]["job"] for s in series} == {"otel-app/question-app"}
    assert {s["metric"]["instance"] for s in series} == {"question-app-7d9f-abcde"}


def test_the_collector_names_are_the_documented_ones(scraped) -> None:
    _, exposition, _ = scraped
    contract = (ROOT / "docs" / "telemetry.md").read_text()
    documented = set(re.findall(r"\| `([a-z_]+)` \|\n", contract))
    assert documented <= exposition.names()
    assert {"http_server_request_duration_seconds", "gen_ai_client_operation_duration_seconds",
            "gen_ai_client_token_usage", "quiz_rounds_total", "quiz_agent_step_duration_seconds",
            "quiz_errors_total", "http_server_active_requests", "process_cpu_time_seconds_total",
            "process_memory_usage_bytes"} <= exposition.names()


# --- App Insights ------------------------------------------------------------------------------------------
AI_COLUMNS = {
    "requests": {"timestamp", "id", "name", "url", "source", "success", "resultCode", "duration",
                 "operation_Id", "operation_ParentId", "operation_Name", "cloud_RoleName", "cloud_RoleInstance",
                 "customDimensions", "customMeasurements", "itemType"},
    "dependencies": {"timestamp", "id", "name", "target", "type", "data", "success", "resultCode", "duration",
                     "operation_Id", "operation_ParentId", "cloud_RoleName", "cloud_RoleInstance",
                     "customDimensions", "customMeasurements", "itemType"},
    "exceptions": {"timestamp", "type", "outerMessage", "outerType", "problemId", "operation_Id",
                   "operation_ParentId", "cloud_RoleName", "cloud_RoleInstance", "customDimensions", "itemType"},
    "customMetrics": {"timestamp", "name", "value", "valueCount", "valueSum", "valueMin", "valueMax",
                      "cloud_RoleName", "cloud_RoleInstance", "customDimensions", "itemType"},
}
KQL_WORDS = {"where", "project", "extend", "summarize", "by", "order", "desc", "asc", "take", "top", "join",
             "kind", "leftouter", "on", "and", "or", "not", "union", "count", "sum", "avg", "bin", "tostring",
             "todouble", "startswith", "contains", "has", "true", "false", "ago", "percentile", "dcount", "max",
             "min", "as", "in"}


def ai_rows(spans: list[Span], points: list) -> dict[str, list[dict[str, Any]]]:
    """The azuremonitor exporter's mapping (trace_to_envelope.go, metric_to_envelopes.go)."""
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in AI_COLUMNS}

    def role(resource: dict) -> str:
        ns = resource.get("service.namespace")
        return f"{ns}.{resource['service.name']}" if ns else resource["service.name"]

    for s in spans:
        dims = {k: str(v) for k, v in {**s.resource, **s.attributes}.items() if isinstance(v, (str, bool))}
        dims["otel.status_code"] = {0: "UNSET", 1: "OK", 2: "ERROR"}[s.status_code]
        measures = {k: v for k, v in s.attributes.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        table = "requests" if s.kind in ("SERVER", "CONSUMER") else "dependencies"
        name = s.name
        if table == "requests" and "http.method" in s.attributes:
            name = f"{s.attributes['http.method']} {s.attributes.get('http.route', '')}".strip()
        rows[table].append({"name": name, "operation_Id": s.trace_id, "cloud_RoleName": role(s.resource),
                            "type": "InProc" if s.kind == "INTERNAL" else "", "success": s.status_code != 2,
                            "customDimensions": dims, "customMeasurements": measures})
        if s.status_code == 2 and s.kind == "INTERNAL":
            rows["exceptions"].append({"operation_Id": s.trace_id, "cloud_RoleName": role(s.resource),
                                       "customDimensions": dims})
    for p in points:
        dims = {k: str(v) for k, v in {**p.resource, **p.attributes}.items()}
        rows["customMetrics"].append({"name": p.name, "cloud_RoleName": role(p.resource), "customDimensions": dims})
    return rows


def kql_references(query: str) -> tuple[set[str], set[str], dict[str, set[str]], set[str]]:
    """(tables, identifiers, {customDimensions/customMeasurements: keys}, compared names)."""
    keys = {bag: set(re.findall(rf'{bag}\["([^"]+)"\]', query)) for bag in ("customDimensions", "customMeasurements")}
    names = set(re.findall(r'\bname\s*(?:==|startswith)\s*"([^"]+)"', query))
    code = re.sub(r'"[^"]*"', '""', query)
    code = re.sub(r"\$__\w+\([^)]*\)|\$__\w+", "", code)
    tables = set(re.findall(r"^\s*(\w+)\s*$", code.split("\n|")[0], re.M))
    tables |= set(re.findall(r"\(\s*(\w+)\s*\n", code))
    aliases = set(re.findall(r"(\w+)\s*=(?!=)", code))
    identifiers = set(re.findall(r"\b[A-Za-z_]\w*\b", code)) - KQL_WORDS - aliases - tables
    return tables, identifiers, keys, names


def test_every_kql_query_uses_only_what_our_telemetry_produces(scraped) -> None:
    _, _, otlp = scraped
    rows = ai_rows(otlp.spans(), otlp.metric_points())
    for title, query in kql_targets():
        tables, identifiers, keys, names = kql_references(query)
        assert tables and tables <= set(AI_COLUMNS), (title, tables)
        columns = set().union(*(AI_COLUMNS[t] for t in tables))
        assert identifiers <= columns, (title, identifiers - columns)
        ours = [r for t in tables for r in rows[t] if r["cloud_RoleName"] == "otel-app.question-app"]
        assert ours, (title, "no rows of this service in", tables)
        for bag, wanted in keys.items():
            present = set().union(*(r.get(bag, {}).keys() for r in ours))
            assert wanted <= present, (title, bag, wanted - present)
        for name in names:
            assert any(r["name"] == name or r["name"].startswith(name) for r in ours), (title, name)


def test_the_trace_panel_targets_our_role_and_operation(scraped) -> None:
    (panel,) = [p for p in panels() if p["type"] == "traces"]
    target = panel["targets"][0]["azureTraces"]
    assert target["operationId"] == "$operation_id" and target["resultFormat"] == "trace"
    (flt,) = target["filters"]
    assert flt["property"] == "cloud_RoleName" and substitute(flt["filters"][0]) == "otel-app.question-app"
    _, _, otlp = scraped
    rows = ai_rows(otlp.spans(), [])
    assert {r["cloud_RoleName"] for r in rows["requests"]} == {"otel-app.question-app"}
