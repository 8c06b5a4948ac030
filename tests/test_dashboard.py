"""The Grafana dashboard imports, and every panel shows real data from this service.

- The dashboard validates against the Grafana dashboard schema (export keys set aside), and each target
  against its data source's query schema (../shared/schemas).
- Every PromQL expression parses (``promtool check rules``) and returns data from a real Prometheus that
  scraped this service's metrics under the Collector's names and labels, after real /ask traffic.
- Every KQL query references only tables, columns and ``customDimensions`` keys that the ``azuremonitor``
  exporter's mapping of this service's real spans, events and metrics produces, and the panels' ``where``
  filters select the rows they say they do. There is no Azure here: the mapping (``tests/fakes/azuremonitor.py``)
  is a model of the exporter and of Azure's ingestion that first passes the exporter's own test cases
  (``tests/test_azuremonitor_model.py``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from app.errors import QuizError
from graphs import agents
from tests.docs import pages
from tests.fakes import wait_until
from tests.fakes.azuremonitor import app_insights
from tests.fakes.collector_prometheus import CollectorExposition
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import SPANS_PER_ROUND, MetricPoint, OTLPReceiver
from tests.fakes.prometheus import PrometheusServer
from tests.shared import schema
from tests.test_contract import all_subclasses
from tests.test_reviewer import reviews

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
    assert [r.split(" ")[0] for r in rows] == ["Service", "LLM", "Quiz", "Application", "Evaluation", "Cost", "SLO",
                                              "Learners"]
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
TELEMETRY_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BLRP_SCHEDULE_DELAY": "100",
                 "OTEL_METRIC_EXPORT_INTERVAL": "250", "OTEL_SERVICE_NAME": "question-app",
                 "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=otel-app,service.instance.id=question-app-7d9f-abcde,"
                                             "k8s.pod.name=question-app-7d9f-abcde,k8s.namespace.name=otel-app"}


@contextmanager
def observed(otlp: OTLPReceiver, llm: FakeOpenAI, scrape_interval: str = "1s", case: str | None = None, **env: str):
    """The service (a TestClient) exporting to ``otlp``, exposed as the Collector would, scraped by a real
    Prometheus: yields ``(client, prometheus, exposition)``. With ``case``, the app's resource says
    ``test.case=<case>`` and only its metrics are exposed (the module's ``scraped`` app exports meanwhile)."""
    from app.http.factory import create_app
    from tests.conftest import settings_for

    mp = pytest.MonkeyPatch()
    variables = {**TELEMETRY_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, **env}
    if case:
        variables["OTEL_RESOURCE_ATTRIBUTES"] += f",test.case={case}"
    for name, value in variables.items():
        mp.setenv(name, value)
    otlp.clear()
    llm.clear()
    try:
        with CollectorExposition(otlp, (lambda points: [p for p in points if p.resource.get("test.case") == case])
                                 if case else None) as exposition, \
                PrometheusServer([exposition.target], scrape_interval=scrape_interval,
                                 rule_files=[ROOT / "deploy" / "slo-rules.yaml"]) as prometheus, \
                TestClient(create_app(settings_for(llm, llm_timeout_s=30.0))) as client:
            prometheus.wait_for_scrape()
            yield client, prometheus, exposition
    finally:
        mp.undo()
        llm.clear()
        llm.latency_s = 0.0


def streamed(client: TestClient, body: dict) -> str:
    with client.stream("POST", "/ask", json=body, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        return "".join(r.iter_text())


EVAL_ITEMS = ("math-easy-en-1", "geography-easy-en-1", "trap-einstein-nobel-en")


def evaluate(otlp: OTLPReceiver, llm: FakeOpenAI) -> None:
    """``question-app eval`` of three items as its own process, exporting to ``otlp`` with the pod's resource
    (and its own ``quiz.traffic=evaluation``), against the fake LLM."""
    from tests.conftest import CANARY_KEY
    from tests.service import clean_env

    llm.script("StudentAnswer", answer="56")  # right for the first item (7 × 8), wrong for the second
    llm.script("Grade", verdict="correct")  # the Teacher, and the independent judge of the third
    env = clean_env(**TELEMETRY_ENV, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OPENAI_BASE_URL=llm.base_url,
                    OPENAI_API_KEY=CANARY_KEY, OPENAI_MODEL="gpt-5.2-chat")
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([str(Path(sys.executable).parent / "question-app"), "eval", "--ids", *EVAL_ITEMS,
                               "--out", out], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def ag_ui(client: TestClient) -> str:
    """One AG-UI run (``POST /ag-ui``) on a new thread: its event stream."""
    body = {"threadId": str(uuid.uuid4()), "runId": "run-1", "messages": [], "forwardedProps": {"subject": "math"}}
    with client.stream("POST", "/ag-ui", json=body) as r:
        assert r.status_code == 200
        return "".join(r.iter_text())


@pytest.fixture(scope="module")
def scraped(otlp: OTLPReceiver, llm_server: FakeOpenAI):
    """Play success and failure rounds in two bursts while a real Prometheus scrapes the exposition."""
    def burst(client: TestClient) -> list[str]:
        trace_ids = []
        for verdict, subject, difficulty in [("correct", "math", "easy"), ("incorrect", "history", "hard"),
                                             ("partially_correct", "science", "medium"), ("correct", "poetry", "hard")]:
            llm_server.script("Grade", verdict=verdict)
            r = client.post("/ask", json={"subject": subject, "difficulty": difficulty})
            assert r.status_code == 200
            trace_ids.append(r.json()["trace_id"])
            rating = "up" if verdict == "correct" else "down"
            assert client.post(f"/sessions/{r.json()['session_id']}/rounds/1/feedback",
                               json={"rating": rating}).status_code == 204
        # A new named learner's round (the calibration panel): partly right, so the next burst's new learner is
        # predicted in the same tenth (77.6 %, then 75.6 %: quiz.learning's priors) and its series grows.
        llm_server.script("Grade", verdict="partially_correct")
        assert client.post("/ask", json={"subject": "math", "difficulty": "easy", "language": "en",
                                         "learner_id": f"dash-{uuid.uuid4().hex[:8]}"}).status_code == 200
        llm_server.script("Grade", verdict="incorrect")  # a person plays the Student: asked, a hint, answered
        llm_server.respond("Review", reviews("reject"))  # its first question goes back to the Teacher
        pending = client.post("/ask", json={"subject": "math", "student": "person"}).json()
        assert client.post("/ask", json={"session_id": pending["session_id"], "hint": True}).status_code == 200
        assert client.post("/ask", json={"session_id": pending["session_id"], "answer": "42"}).status_code == 200
        llm_server.fail_next(Fault("status", 429, {"Retry-After": "1"}), times=2)
        assert client.post("/ask", json={"subject": "math"}).status_code == 503
        llm_server.fail_next(Fault("status", 500), times=2)
        assert client.post("/ask", json={"subject": "math"}).status_code == 502
        assert client.post("/ask", json={"session_id": "X" * 22}).status_code == 404
        llm_server.fail_next(Fault("status", 500), times=2)  # a streamed round that fails after its 200
        assert "event: error" in streamed(client, {"subject": "math"})
        assert '"RUN_FINISHED"' in ag_ui(client)  # an AG-UI client plays a round, and one that fails
        llm_server.fail_next(Fault("status", 500), times=2)
        assert '"code":"/problems/llm-upstream"' in ag_ui(client)
        return trace_ids

    with observed(otlp, llm_server) as (client, prometheus, exposition), \
            CollectorExposition(otlp, newer_genai_conventions) as upgraded, \
            PrometheusServer([upgraded.target]) as upgraded_prometheus:
        upgraded_prometheus.wait_for_scrape()
        first = burst(client)
        time.sleep(3)
        second = burst(client)
        evaluate(otlp, llm_server)  # an evaluation run beside the service: apart in every live panel
        time.sleep(3)
        otlp.wait_for(lambda: all(len(otlp.trace(t)) == SPANS_PER_ROUND for t in first + second))
        # grades and feedback of live rounds (22), both judges' verdicts of the evaluation's items (6)
        otlp.wait_for(lambda: len(otlp.events("gen_ai.evaluation.result")) == 28)
        if os.environ.get("DASHBOARD_PNG"):  # a picture of the panels, for the README
            from tests.render_dashboard import render

            render(prometheus.url, DASHBOARD, substitute, Path(os.environ["DASHBOARD_PNG"]))
        yield prometheus, exposition, otlp, upgraded_prometheus


def newer_genai_conventions(points: list[MetricPoint]) -> list[MetricPoint]:
    """The metrics as an instrumentation on the newer GenAI conventions will name them: the
    ``gen_ai.client.token.usage`` histogram becomes the counters ``gen_ai.client.inference.usage.input_tokens``
    / ``.output_tokens`` (token type in the name), ``gen_ai.client.operation.duration`` of an inference becomes
    ``gen_ai.client.inference.duration`` (semantic-conventions-genai, migration.md)."""
    out = []
    for p in points:
        if p.name == "gen_ai.client.token.usage":
            attributes = {k: v for k, v in p.attributes.items() if k != "gen_ai.token.type"}
            name = f"gen_ai.client.inference.usage.{p.attributes['gen_ai.token.type']}_tokens"
            out.append(dataclasses.replace(p, name=name, kind="sum", monotonic=True, attributes=attributes,
                                           count=1, bounds=(), bucket_counts=()))
        elif p.name == "gen_ai.client.operation.duration":
            out.append(dataclasses.replace(p, name="gen_ai.client.inference.duration"))
        else:
            out.append(p)
    return out


def has_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


@pytest.mark.parametrize(("title", "expr"), prom_targets(), ids=[t for t, _ in prom_targets()])
def test_every_promql_panel_returns_data(scraped, title: str, expr: str) -> None:
    prometheus, *_ = scraped
    assert has_data(prometheus.query(substitute(expr))), f"{title}: no data for {substitute(expr)}"


def test_the_slo_rules_record_from_the_services_series(scraped) -> None:
    """deploy/slo-rules.yaml, loaded into the Prometheus that scraped the bursts: every recording rule has data
    from the service's real series, under the Collector's names and labels, and the values say what the
    bursts did (per burst: a 503, a 502 and two streams that failed after their 200 among the rounds; two
    thumbs down of four; a review rejected; 429s and 500s from the LLM)."""
    from telemetry.slo import rules

    prometheus, *_ = scraped
    recorded = [r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r]

    def value(record: str) -> dict[str, float]:
        return {s["metric"].get("gen_ai_request_model", s["metric"]["job"]): float(s["value"][1])
                for s in prometheus.query(record)}

    wait_until(lambda: all(value(r) for r in recorded), timeout_s=30, what="every recording rule evaluated")
    for record in recorded:
        assert {s["metric"]["job"] for s in prometheus.query(record)} == {"otel-app/question-app"}, record
    assert 0 < value("job:quiz_round_errors:ratio_rate5m")["otel-app/question-app"] < 1
    assert value("job:quiz_round_slow:ratio_rate5m")["otel-app/question-app"] == 0  # every round under 30 s
    assert value("job_model:gen_ai_client_upstream_errors:ratio_rate5m")["gpt-5.2-chat"] > 0  # the real error.type
    assert value("job:quiz_review_rejected:ratio_rate1h")["otel-app/question-app"] > 0
    assert 0 < value("job:quiz_feedback_down:ratio_rate1h")["otel-app/question-app"] < 1
    assert 0 <= value("job:quiz_eval_judges_agree:ratio1d")["otel-app/question-app"] <= 1
    assert value("job:quiz_llm_cost_usd:increase1d")["otel-app/question-app"] > 0
    assert value("job:quiz_round_errors:objective")["otel-app/question-app"] == 0.995
    # Rounds failing by the handful among a few dozen are far past 6 × the budget: a page fires on the real
    # series (which one depends on how long ago the bursts were); no false "no data" while the data flows.
    wait_until(lambda: prometheus.query('ALERTS{alertname=~"QuestionAppAvailability(Fast|Slow)Burn", '
                                        'alertstate="firing"}'), timeout_s=30, what="an availability burn to fire")
    assert prometheus.query('ALERTS{alertname="QuestionAppNoData"}') == []
    assert prometheus.query('ALERTS{alertname="QuestionAppLatencyFastBurn"}') == []


def test_the_variables_find_the_service(scraped) -> None:
    prometheus, *_ = scraped
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
    _, exposition, *_ = scraped
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
    "traces": {"timestamp", "message", "severityLevel", "operation_Id", "operation_ParentId", "cloud_RoleName",
               "cloud_RoleInstance", "customDimensions", "itemType"},
    "customMetrics": {"timestamp", "name", "value", "valueCount", "valueSum", "valueMin", "valueMax",
                      "cloud_RoleName", "cloud_RoleInstance", "customDimensions", "itemType"},
}
KQL_WORDS = {"strcat", "where", "project", "extend", "summarize", "by", "order", "desc", "asc", "take", "top", "join",
             "kind", "leftouter", "on", "and", "or", "not", "union", "count", "sum", "avg", "bin", "tostring",
             "todouble", "toint", "isnotempty", "startswith", "contains", "has", "true", "false", "ago",
             "percentile", "dcount", "max", "min", "as", "in"}
def kql_references(query: str) -> tuple[set[str], set[str], dict[str, set[str]], set[str]]:
    """(tables, identifiers, {customDimensions/customMeasurements: keys}, compared names)."""
    keys = {bag: set(re.findall(rf'{bag}\["([^"]+)"\]', query)) for bag in ("customDimensions", "customMeasurements")}
    names = set(re.findall(r'\bname\s*(?:==|startswith)\s*"([^"]+)"', query))
    code = re.sub(r'"[^"]*"', '""', query)
    code = re.sub(r"\$__\w+\([^)]*\)|\$__\w+", "", code)
    tables = set(re.findall(r"^\s*(\w+)\s*$", code.split("\n|")[0], re.M))
    tables |= set(re.findall(r"\(\s*(\w+)\s*\n", code))
    if union := re.match(r"\s*union\s+([\w\s,]+?)\s*\n", code):
        tables |= {t.strip() for t in union.group(1).split(",")}
    aliases = set(re.findall(r"(\w+)\s*=(?!=)", code))
    identifiers = set(re.findall(r"\b[A-Za-z_]\w*\b", code)) - KQL_WORDS - aliases - tables
    return tables, identifiers, keys, names


def documented_kql() -> list[tuple[str, str]]:
    """The KQL queries of the README and every page of the docs (```kusto blocks, one query per `//` comment)."""
    found = []
    for path in pages():
        doc = str(path.relative_to(ROOT))
        for block in re.findall(r"```kusto\n(.*?)```", path.read_text(), re.S):
            for query in re.split(r"^//.*\n", block, flags=re.M):
                if query.strip():
                    found.append((f"{doc}: {query.strip().splitlines()[0]}", query))
    return found


def test_every_kql_query_uses_only_what_our_telemetry_produces(scraped) -> None:
    _, _, otlp, _ = scraped
    rows = app_insights(otlp.spans(), otlp.logs(), otlp.metric_points())
    queries = kql_targets() + documented_kql()
    assert len(queries) >= len(kql_targets()) + 5
    for title, query in queries:
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


def test_app_insights_rows_follow_the_exporters_rules(scraped) -> None:
    """What a user writing KQL meets: numbers as strings in customDimensions, 4xx as failed requests,
    a failed stream as a successful request whose server span is ERROR, exceptions from exception events."""
    _, _, otlp, _ = scraped
    spans = otlp.spans()
    rows = app_insights(spans, otlp.logs(), [])
    workflow = next(r for r in rows["dependencies"] if r["name"] == "invoke_workflow quiz"
                    and r["customDimensions"]["otel.status_code"] == "STATUS_CODE_UNSET")
    assert workflow["customDimensions"]["gen_ai.usage.input_tokens"].isdigit()
    assert workflow["customDimensions"]["quiz.round"] == "1" and workflow["type"] == "InProc"
    assert all(r["customMeasurements"] == {} for t in ("requests", "dependencies") for r in rows[t])
    assert not any("gen_ai.response.finish_reasons" in r["customDimensions"] for r in rows["dependencies"])
    requests = {r["resultCode"]: r for r in rows["requests"]}
    assert {r["name"] for r in rows["requests"]} == {"POST /ask", "POST /ag-ui",  # <method> <route template>
                                                     "POST /sessions/{session_id}/rounds/{round_no}/feedback"}
    assert requests["404"]["success"] is False and requests["502"]["success"] is False
    assert requests["204"]["success"] is True
    failed_streams = [r for r in rows["requests"] if r["resultCode"] == "200"
                      and r["customDimensions"]["otel.status_code"] == "STATUS_CODE_ERROR"]
    assert len(failed_streams) == 4 and all(r["success"] for r in failed_streams)  # /ask's and /ag-ui's
    assert sorted(r["name"] for r in failed_streams) == ["POST /ag-ui"] * 2 + ["POST /ask"] * 2
    assert {r["customDimensions"]["error.type"] for r in failed_streams} == {"upstream"}
    exception_events = [e for s in spans for e in s.events if e.name == "exception"]
    assert len(rows["exceptions"]) == len(exception_events) > 0
    assert len(rows["exceptions"]) < len([s for s in spans if s.status_code == 2]) * 2
    grades = [r for r in rows["traces"] if r["customDimensions"].get("gen_ai.evaluation.name") == "correctness"
              and r["customDimensions"].get("quiz.traffic") != "evaluation"]
    assert len(grades) == 14 and {g["customDimensions"]["gen_ai.evaluation.score.value"] for g in grades} \
        == {"1", "0.5", "0"}  # 7 graded rounds a burst: 4 plain, a learner's, a person's, an AG-UI run
    assert sorted(g["customDimensions"]["quiz.answered_by"] for g in grades).count("person") == 2


def kql_filter(query: str) -> Callable[[dict[str, Any]], bool]:
    """The ``| where`` clauses of a query's first pipeline (up to a join, extend or summarize) as a predicate on
    a row of the model: the subset of KQL our panels filter with (comparisons, ``in``, ``startswith``,
    ``isnotempty``, ``toint``, ``tostring(customDimensions[...])``, ``and``/``or``/``not``)."""
    clauses = []
    for line in substitute(query).split("\n| ")[1:]:
        if not line.startswith("where "):
            break
        clauses.append(line.removeprefix("where ").replace("\n", " "))
    code = " and ".join(f"({c})" for c in clauses) or "True"
    code = re.sub(r"\$__timeFilter\(\w+\)", "True", code)
    code = re.sub(r'tostring\(customDimensions\["([^"]+)"\]\)', r'D("\1")', code)
    code = re.sub(r'customDimensions\["([^"]+)"\]', r'D("\1")', code)
    code = re.sub(r"toint\(([^()]+(?:\([^()]*\))?)\)", r"I(\1)", code)
    code = re.sub(r"isnotempty\(([^()]+(?:\([^()]*\))?)\)", r"bool(\1)", code)
    code = re.sub(r'(\b\w+|D\("[^"]+"\))\s+startswith\s+("[^"]*")', r"str(\1).startswith(\2)", code)
    code = re.sub(r"\b(true|false)\b", lambda m: m.group(1).title(), code)
    code = re.sub(r'(?<![\w."])(name|success|resultCode|cloud_RoleName|message|type)(?![\w"(])', r'R("\1")', code)

    def matches(row: dict[str, Any]) -> bool:
        def I(value: Any) -> int:  # noqa: E743, N802  (KQL's toint)
            return int(value) if str(value).lstrip("-").isdigit() else -1

        scope = {"D": lambda k: row.get("customDimensions", {}).get(k, ""), "R": lambda k: row.get(k, ""),
                 "I": I, "str": str, "bool": bool, "True": True, "False": False}
        return bool(eval(code, {"__builtins__": {}}, scope))  # noqa: S307  (our own panels' filters)

    return matches


def kql_panel(title: str) -> str:
    return panel(title)["targets"][0]["azureLogAnalytics"]["query"]


def selected(scraped: Any, title: str, table: str) -> list[dict[str, Any]]:
    _, _, otlp, _ = scraped
    keep = kql_filter(kql_panel(title))
    return [r for r in app_insights(otlp.spans(), otlp.logs(), [])[table] if keep(r)]


def test_the_failed_rounds_panel_lists_5xx_and_failed_streams_never_4xx(scraped) -> None:
    """Each burst fails four rounds: a 503 (rate limited), a 502, and a streamed round on /ask and on /ag-ui
    that answered 200 and then failed (their server span ERROR); its 404 and the feedback are not failed
    rounds."""
    failed = selected(scraped, "Failed rounds (", "requests")
    assert sorted(r["resultCode"] for r in failed) == ["200"] * 4 + ["502"] * 2 + ["503"] * 2
    # error.type: the status code of a 5xx answer (HTTP conventions), the round's cause for a failed stream.
    assert {r["customDimensions"]["error.type"] for r in failed} == {"502", "503", "upstream"}


def test_the_slowest_rounds_panel_holds_only_rounds_that_played_to_the_end(scraped) -> None:
    played = selected(scraped, "Slowest rounds", "requests")
    assert played and {r["resultCode"] for r in played} == {"200"}
    assert not [r for r in played if "error.type" in r["customDimensions"]]  # no stream that failed after its 200


def test_the_evaluation_results_panel_finds_the_grades_with_a_message_a_person_can_read(scraped) -> None:
    results = selected(scraped, "Evaluation results", "traces")
    names = {r["customDimensions"]["gen_ai.evaluation.name"] for r in results}
    assert names == {"correctness", "user_feedback"}
    assert all(r["message"].startswith("gen_ai.evaluation.result ") for r in results)
    assert "gen_ai.evaluation.result correctness: partially_correct (0.5)" in {r["message"] for r in results}


def test_the_tokens_panel_is_by_agent_step(scraped) -> None:
    steps = {(r["customDimensions"]["gen_ai.agent.name"], r["customDimensions"]["quiz.step"])
             for r in selected(scraped, "Tokens per agent step", "dependencies")}
    assert steps == {(s.agent, s.name) for s in agents.steps() if s.schema is not None}
    query = kql_panel("Tokens per agent step")
    assert 'customDimensions["gen_ai.agent.name"]' in query and 'customDimensions["quiz.step"]' in query


def test_every_value_a_query_compares_a_dimension_with_is_one_the_rows_have(scraped) -> None:
    """A filter on a value the exporter never writes (``otel.status_code == "ERROR"``) selects nothing, or
    everything with ``!=``: every such literal is one of the values the model's rows carry for that key."""
    _, _, otlp, _ = scraped
    rows = app_insights(otlp.spans(), otlp.logs(), otlp.metric_points())
    seen: dict[str, set[str]] = {}
    for table in rows.values():
        for row in table:
            for key, text in row.get("customDimensions", {}).items():
                seen.setdefault(key, set()).add(text)
    compared = [(title, key, literal) for title, query in kql_targets() + documented_kql()
                for key, literal in re.findall(r'customDimensions\["([^"]+)"\]\)?\s*[!=]=\s*"([^"]*)"', query)]
    assert len(compared) >= 10
    assert [c for c in compared if c[2] not in seen.get(c[1], set())] == []


def test_evaluation_traffic_is_left_out_of_every_live_panel(scraped) -> None:
    """The evaluation run's series are in Prometheus (its agent steps, LLM calls, judged items), and every
    panel but the Evaluation row's leaves them out by the resource label ``quiz_traffic``."""
    prometheus, *_ = scraped
    # (the SLO row reads recorded series, whose rules choose their traffic: tests/test_slo.py)
    live = [(title, expr) for title, expr in prom_targets()
            if 'quiz_traffic="evaluation"' not in expr and not re.match(r"job(_model)?:", expr)]
    assert all('quiz_traffic!="evaluation"' in expr for _, expr in live)
    evaluation_only = [title for title, expr in live if has_data(prometheus.query(substitute(
        expr.replace('quiz_traffic!="evaluation"', 'quiz_traffic="evaluation"'))))]
    # Agent step duration, LLM latency, tokens and calls: series an evaluation run makes, kept out.
    assert len(evaluation_only) >= 4, evaluation_only
    assert {s["metric"]["quiz_traffic"] for s in prometheus.query("quiz_agent_step_duration_seconds_count")} == {
        "live", "evaluation"}
    (series,) = prometheus.query(substitute('sum(quiz_eval_items_total{job="$namespace/$service"})'))
    assert float(series["value"][1]) == 2 * len(EVAL_ITEMS)  # one count per item and judge
    # The Evaluation row's accuracy: the Teacher passed all three, the strict judge the 7 × 8 and the judged one.
    accuracy = next(expr for title, expr in prom_targets() if title.startswith("Evaluation accuracy"))
    found = {s["metric"]["quiz_eval_judge"]: float(s["value"][1]) for s in prometheus.query(substitute(accuracy))}
    assert found == {"teacher": 1.0, "strict": pytest.approx(2 / 3)}


def test_every_kql_query_leaves_evaluation_traffic_out() -> None:
    queries = [t["azureLogAnalytics"]["query"] for p in panels() for t in p.get("targets", [])
               if "azureLogAnalytics" in t]
    assert queries and all('tostring(customDimensions["quiz.traffic"]) != "evaluation"' in q for q in queries)


def test_the_trace_panel_targets_our_role_and_operation(scraped) -> None:
    (panel,) = [p for p in panels() if p["type"] == "traces"]
    target = panel["targets"][0]["azureTraces"]
    assert target["operationId"] == "$operation_id" and target["resultFormat"] == "trace"
    (flt,) = target["filters"]
    assert flt["property"] == "cloud_RoleName" and substitute(flt["filters"][0]) == "otel-app.question-app"
    _, _, otlp, _ = scraped
    rows = app_insights(otlp.spans(), [], [])
    assert {r["cloud_RoleName"] for r in rows["requests"]} == {"otel-app.question-app"}


# --- what the panels say -------------------------------------------------------------------------------------
def panel(title: str) -> dict:
    (found,) = [p for p in panels() if p["title"].startswith(title)]
    return found


def totals(expr: str) -> str:
    """The query over the counters' totals instead of their rates: exact counts, whatever the scrape timing."""
    return re.sub(r"rate\((.+?)\[\$__rate_interval\]\)", r"\1", expr)


def test_the_failed_request_ratio_counts_streamed_rounds_that_failed_after_their_200(scraped) -> None:
    prometheus, *_ = scraped
    (series,) = prometheus.query(substitute(totals(panel("Failed round requests")["targets"][0]["expr"])))
    # Per burst, 12 requests to /ask: 4 played, a named learner's, a person's round (asked, a hint, answered),
    # a 503, a 502, a 404 (the caller's fault: not counted) and a streamed round that failed after answering 200;
    # and 2 AG-UI runs, one ending in RUN_ERROR after its 200. The status codes alone would say 2 of 14.
    assert float(series["value"][1]) == pytest.approx(4 / 14)


def test_the_failed_ratio_names_exactly_the_error_types_answered_with_5xx() -> None:
    from app.http import problems
    from app.llm import errors as llm_errors  # noqa: F401  (its QuizErrors are counted below)
    from telemetry import contract

    expr = panel("Failed round requests")["targets"][0]["expr"]
    (regex,) = re.findall(r'error_type=~"([^"]+)"', expr)
    classes: set[type[QuizError]] = {QuizError, *all_subclasses(QuizError)}
    five_xx = {c.error_type for c in classes if c.status >= 500}
    five_xx |= {t for status, (_, t, _) in problems._HTTP_PROBLEMS.items() if status >= 500}
    assert set(regex.split("|")) == set(contract.SERVER_ERROR_TYPES) == five_xx | {"internal"}


def test_the_llm_panels_keep_working_when_the_genai_metrics_get_their_new_names(scraped) -> None:
    *_, upgraded = scraped
    assert upgraded.query("gen_ai_client_token_usage_sum") == []  # only the new names are there
    assert upgraded.query("gen_ai_client_inference_usage_input_tokens_total")
    for title in ("LLM call latency p95 by model", "Tokens per second", "LLM calls per second"):
        for target in panel(title)["targets"]:
            assert has_data(upgraded.query(substitute(target["expr"]))), title
    tokens = upgraded.query(substitute(panel("Tokens per second")["targets"][0]["expr"]))
    assert {s["metric"]["gen_ai_token_type"] for s in tokens} == {"input", "output"}


def test_the_latency_panel_sees_rounds_longer_than_the_asgi_default_buckets(otlp: OTLPReceiver,
                                                                           llm_server: FakeOpenAI) -> None:
    """The ASGI instrumentation's buckets end at 10 s, where p99 of real rounds would sit flat."""
    (p99,) = [t for t in panel("Latency p50 / p95 / p99")["targets"] if "0.99" in t["expr"]]
    with observed(otlp, llm_server, case="slow-rounds") as (client, prometheus, _):
        def requests_scraped() -> float:
            result = prometheus.query('sum(http_server_request_duration_seconds_count{http_route="/ask"})')
            return float(result[0]["value"][1]) if result else 0.0

        assert client.post("/ask", json={}).status_code == 200  # the series exists before the slow rounds
        wait_until(lambda: requests_scraped() >= 1, timeout_s=15, what="the first round scraped")
        llm_server.latency_s = 3.6  # each of the three LLM calls: rounds of ~11 s
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(lambda _: client.post("/ask", json={}).status_code, range(3)))
        assert codes == [200, 200, 200]
        wait_until(lambda: requests_scraped() >= 4, timeout_s=15, what="the slow rounds scraped")
        (series,) = prometheus.query(substitute(p99["expr"]))
    assert 10.5 < float(series["value"][1]) <= 15, series


def production_timing() -> tuple[float, float, float]:
    """(metric export interval, scrape interval, rate window) in seconds, as the manifests and the dashboard
    set them: OTEL_METRIC_EXPORT_INTERVAL (SDK default 60 s), the PodMonitor's interval, and Grafana's
    ``$__rate_interval`` = 4 × the panel's min interval (Grafana's default 15 s when a panel sets none)."""
    deployment = next(d for d in yaml.safe_load_all((ROOT / "deployment.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    export_s = int(env.get("OTEL_METRIC_EXPORT_INTERVAL") or 60000) / 1000
    monitor = next(d for d in yaml.safe_load_all((ROOT / "otel-collector.yaml").read_text())
                   if d and d["kind"] == "PodMonitor")
    scrape_s = float(monitor["spec"]["podMetricsEndpoints"][0]["interval"].removesuffix("s"))
    window_s = 4 * float(panel("Rounds per second by verdict").get("interval", "15s").removesuffix("s"))
    return export_s, scrape_s, window_s


def test_rate_panels_neither_gap_nor_step_at_the_production_timing(otlp: OTLPReceiver, llm_server: FakeOpenAI) -> None:
    """The manifests' export interval, scrape interval and rate window, all divided by 30: under steady
    traffic every point of a rate panel has a value above zero."""
    export_s, scrape_s, window_s = (value / 30 for value in production_timing())
    with observed(otlp, llm_server, scrape_interval=f"{scrape_s:g}s", case="production-timing",
                  OTEL_METRIC_EXPORT_INTERVAL=str(int(export_s * 1000))) as (client, prometheus, _):
        started = time.time()
        while time.time() < started + 6 * window_s + 4:
            assert client.post("/ask", json={}).status_code == 200
            time.sleep(0.15)
        ended = time.time()
        time.sleep(2 * scrape_s)
        for title in ("Rounds per second by verdict", "Requests per second by status"):
            expr = panel(title)["targets"][0]["expr"].replace("$__rate_interval", f"{window_s * 1000:g}ms")
            (series,) = prometheus.query_range(substitute(expr), started + window_s + 2, ended, scrape_s / 2)
            values = [float(v) for _, v in series["values"]]
            expected = int((ended - started - window_s - 2) / (scrape_s / 2))
            assert len(values) >= expected and min(values) > 0, (title, values)



def scaling_trigger() -> dict[str, Any]:
    """The Prometheus trigger of the ScaledObject in deploy/scaled (its query and threshold, as KEDA reads them)."""
    (scaled_object,) = [d for d in yaml.safe_load_all((ROOT / "deploy" / "scaled" / "keda.yaml").read_text())
                        if d and d["kind"] == "ScaledObject"]
    (trigger,) = scaled_object["spec"]["triggers"]
    return trigger["metadata"]


def test_the_scaledobject_query_measures_rounds_in_flight_against_capacity(otlp: OTLPReceiver,
                                                                          llm_server: FakeOpenAI) -> None:
    """KEDA's query, word for word from deploy/scaled/keda.yaml, in a real Prometheus over the service's real
    series: one value (KEDA wants a single element), 0 when idle, 3/4 while three rounds wait at the LLM in a
    process of four places — over the 0.7 threshold, so the HPA wants ceil(0.75 / 0.7) = 2 pods — and 0 after."""
    metadata = scaling_trigger()
    query, threshold = metadata["query"], float(metadata["threshold"])

    def value(prometheus: PrometheusServer) -> float | None:
        result = prometheus.query(query)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    with observed(otlp, llm_server, case="keda", MAX_CONCURRENT_ROUNDS="4") as (client, prometheus, _):
        wait_until(lambda: value(prometheus) is not None, timeout_s=15, what="the idle series scraped")
        assert value(prometheus) == 0.0  # the series exist before any round: an idle service, not a lost one
        llm_server.latency_s = 1.5  # four calls: rounds of ~6 s, waiting on the LLM as on Azure OpenAI
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            rounds = [pool.submit(client.post, "/ask", json={}) for _ in range(3)]
            wait_until(lambda: value(prometheus) == 0.75, timeout_s=15, what="three rounds in flight scraped")
            assert math.ceil(0.75 / threshold) == 2  # AverageValue: the pods the HPA would want
            assert [r.result().status_code for r in rounds] == [200] * 3
        wait_until(lambda: value(prometheus) == 0.0, timeout_s=15, what="the rounds' end scraped")
