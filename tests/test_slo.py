"""The SLO rules (telemetry/slo.py → deploy/slo-rules.yaml, deploy/slo-rules.azure.json): what ships is what
the generator makes, promtool accepts the file and its unit tests (every alert fires on synthetic series and
resolves when they recover), Azure's form carries the same rules within Azure's limits, and every alert has a
runbook in docs/reference/alerts.md. That the rules read real series of this service under the Collector's names
is proven against a real Prometheus in tests/test_dashboard.py (``test_the_slo_rules_record_from_the_services_series``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from telemetry.slo import SLO, azure_template, render, rules
from tests.docs import everything, page

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "slo-rules.yaml"
UNIT_TESTS = ROOT / "deploy" / "slo-rules.test.yaml"
AZURE = ROOT / "deploy" / "slo-rules.azure.json"
DOCS = everything()
RUNBOOK = page("docs/reference/alerts.md")


def alerts() -> list[dict]:
    return [r for g in rules()["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool comes with Debian's prometheus package (python3 tests/prerequisites.py installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_what_ships_is_what_question_app_rules_prints() -> None:
    assert RULES.read_text() == render()
    assert AZURE.read_text() == render(azure=True)
    question_app = str(Path(sys.executable).parent / "question-app")
    env = {"PATH": "/usr/bin:/bin"}
    printed = subprocess.run([question_app, "rules"], capture_output=True, text=True, env=env, timeout=60)
    assert printed.returncode == 0 and printed.stdout == RULES.read_text(), printed.stderr
    printed = subprocess.run([question_app, "rules", "--azure"], capture_output=True, text=True, env=env, timeout=60)
    assert printed.returncode == 0 and printed.stdout == AZURE.read_text(), printed.stderr


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_fires_and_then_resolves_in_the_unit_tests() -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    for alert in alerts():
        name = alert["alert"]

        def minutes(duration: str) -> int:
            return int(duration[:-1]) * {"m": 1, "h": 60}[duration[-1]]

        shown = [(minutes(t["eval_time"]), bool(t["exp_alerts"])) for case in cases
                 for t in case.get("alert_rule_test", []) if t["alertname"] == name]
        fired = [at for at, firing in shown if firing]
        assert fired, f"{name}: no unit test in which it fires"
        assert any(at > min(fired) and not firing for at, firing in shown), f"{name}: never seen to resolve"


def test_every_recording_rule_reads_live_traffic_but_the_judges_and_the_spend() -> None:
    for rule in (r for g in rules()["groups"] for r in g["rules"] if "record" in r):
        reads_raw = re.search(r"\b(quiz|http|gen_ai)_\w+\{", rule["expr"])
        if rule["record"] == "job:quiz_eval_judges_agree:ratio1d":
            assert 'quiz_traffic="evaluation"' in rule["expr"]  # only evaluation runs have two judges
        elif rule["record"] == "job:quiz_llm_cost_usd:increase1d":  # the bill: evaluation runs' dollars too
            assert 'quiz_traffic!="evaluation"' in rule["expr"] and 'quiz_traffic="evaluation"' in rule["expr"]
        elif reads_raw:
            assert rule["expr"].count("quiz_traffic!=\"evaluation\"") == rule["expr"].count("{"), rule["record"]


def test_the_quality_and_upstream_ratios_are_unit_tested() -> None:
    tested = {t["expr"] for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for t in case.get("promql_expr_test", [])}
    assert {"job_model:gen_ai_client_upstream_errors:ratio_rate5m", "job:quiz_review_rejected:ratio_rate1h",
            "job:quiz_feedback_down:ratio_rate1h", "job:quiz_eval_judges_agree:ratio1d"} <= tested


def test_the_azure_form_carries_the_same_rules_within_azures_limits() -> None:
    template = json.loads(AZURE.read_text())
    groups = template["resources"]
    assert {g["type"] for g in groups} == {"Microsoft.AlertsManagement/prometheusRuleGroups"}
    assert {g["apiVersion"] for g in groups} == {"2023-03-01"}
    ours = {(r.get("record") or r["alert"], r["expr"]) for g in rules()["groups"] for r in g["rules"]}
    theirs = {(r.get("record") or r["alert"], r["expression"]) for g in groups for r in g["properties"]["rules"]}
    assert theirs == ours
    for group in groups:
        properties = group["properties"]
        assert len(properties["rules"]) <= 20  # Azure Monitor service limits: rules per Prometheus rule group
        assert properties["scopes"] == ["[parameters('azureMonitorWorkspaceId')]"]
        assert re.fullmatch(r"PT\d+M", properties["interval"])
        for rule in properties["rules"]:
            if "alert" in rule:
                assert rule["severity"] in range(5) and rule["actions"] == [
                    {"actionGroupId": "[parameters('actionGroupId')]"}]
                assert re.fullmatch(r"PT\d+[MH]", rule.get("for", "PT0M"))
    used = set(re.findall(r"parameters\('(\w+)'\)", AZURE.read_text()))
    assert used == set(template["parameters"])  # every parameter declared is used, and none is missing
    assert azure_template() == template


def test_every_alert_has_a_runbook_with_three_first_steps_and_the_kql_that_finds_the_traces() -> None:
    runbook = RUNBOOK.split("\n## Runbook", 1)[1]
    for alert in alerts():
        name = alert["alert"]
        assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        match = re.search(rf"^### {name}\n(.*?)(?=^### |\Z)", runbook, re.S | re.M)
        assert match, f"docs/reference/alerts.md's runbook has no section ### {name}"
        section = match.group(1)
        assert len(re.findall(r"^\d\. ", section, re.M)) >= 3, f"{name}: the first three things to look at"
        assert "```kusto" in section, f"{name}: the KQL that finds the traces"


def test_every_slo_setting_is_in_the_readme() -> None:
    for name in SLO.model_fields:
        assert f"`SLO_{name.upper()}`" in DOCS, name


@pytest.mark.parametrize(("value", "ok"), [("31", False), ("10", True), ("7.5", True)])
def test_a_latency_threshold_must_be_a_bucket_bound(value: str, ok: bool) -> None:
    question_app = str(Path(sys.executable).parent / "question-app")
    done = subprocess.run([question_app, "rules"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SLO_LATENCY_THRESHOLD_S": value})
    if not ok:
        assert done.returncode == 2 and "latency_threshold_s" in done.stderr and "bucket bound" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    le = {"10": 'le=~"10(\\\\.0)?"', "7.5": 'le=~"7\\\\.5"'}[value]
    assert le in done.stdout and f"slower than {value} s" in done.stdout
