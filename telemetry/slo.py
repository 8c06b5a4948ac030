"""Service level objectives of question-app, as Prometheus rules: recording rules for the SLIs, multi-window
multi-burn-rate alerts on them, and plain alerts for the Collector's export failures, for no data and for
spend over a daily budget.

One source, two forms (``question-app rules``):

- ``rules(slo)`` → a Prometheus rules file (``groups:``), what ``promtool check rules`` / ``promtool test
  rules`` read and any Prometheus (or the Prometheus Operator's ``PrometheusRule.spec``) loads. Shipped as
  ``deploy/slo-rules.yaml``; its unit tests are ``deploy/slo-rules.test.yaml``.
- ``azure_template(slo)`` → an ARM template of ``Microsoft.AlertsManagement/prometheusRuleGroups`` (API
  2023-03-01), the form Azure Managed Prometheus evaluates (it reads no rules file and no PrometheusRule).
  Shipped as ``deploy/slo-rules.azure.json``; deploy with ``az deployment group create``.

The SLIs (valid events: ``POST /ask`` and ``POST /ag-ui`` requests of live traffic that were not answered 4xx):

- availability: a round failed on our side — answered 5xx, or a stream that answered 200 and then ended in an
  error (``quiz_errors_total`` with an error type of ``SERVER_ERROR_TYPES``) — over valid requests;
- latency: requests that took longer than ``latency_threshold_s`` (a bucket bound of
  ``http.server.request.duration``) over requests answered 2xx/3xx.

Burn-rate alerts follow the Google SRE workbook, chapter 5 "Alerting on SLOs", table 5-8: page when the 1 h
and the 5 min error ratios both exceed 14.4 × the error budget (2 % of a 30-day budget in an hour), or the 6 h
and the 30 min ratios both exceed 6 × (5 % in six hours). The long window makes the alert significant, the
short one makes it stop soon after the burning stops.

Metric names are the Collector's (docs/telemetry.md); the service's rules filter on
``job="<namespace>/<service>"``, the label the Collector's prometheus exporter sets and the PodMonitor keeps
(``honorLabels``), the Collector's alert on the PodMonitor's own job. Aggregations keep ``cluster``, the label
Azure Managed Prometheus puts on every series, so that rule groups bound to a cluster find the recorded series.
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from telemetry import contract as C

ROUTES: Final = "/ask|/ag-ui"  # the routes that play rounds
WINDOWS: Final = ("5m", "30m", "1h", "6h")  # the burn-rate alerts' windows (SRE workbook table 5-8)
# (long window, short window, burn rate): SRE workbook, table 5-8 ("page" rows).
BURN_RATES: Final = (("1h", "5m", 14.4, "fast"), ("6h", "30m", 6.0, "slow"))
BUDGET_WINDOW: Final = "30d"
# The OpenAI SDK's exceptions for 429 and 5xx answers. The openai-v2 instrumentation writes error.type as the
# class's repr (``<class 'openai.RateLimitError'>``, seen on the real series in tests/test_dashboard.py), the
# GenAI conventions ask for the bare name: the rules match either.
UPSTREAM_ERRORS: Final = ("RateLimitError", "InternalServerError")
# The Collector's own counters of items an exporter could not send (its internal telemetry, port 8888).
# Collector ≥ 0.152 (OTel Go SDK's Prometheus reader) exposes them without `_total`, older builds with it.
EXPORT_FAILED: Final = "otelcol_exporter_send_failed_(spans|metric_points|log_records)(_total)?"
# Azure severity of an alert rule (0 Critical … 4 Verbose) for our severity label.
AZURE_SEVERITY: Final = {"critical": 0, "warning": 2}


class SLO(BaseSettings):
    """The objectives and what the rules select, from ``SLO_*`` environment variables.

    Raises ``pydantic.ValidationError`` naming the variable for a target outside (0.5, 1) or a latency
    threshold that is not a bucket bound of ``http.server.request.duration`` (``REQUEST_DURATION_BUCKETS``:
    a share under a threshold between bounds cannot be computed from a histogram).
    """

    model_config = SettingsConfigDict(env_prefix="SLO_", extra="ignore")

    namespace: str = Field("otel-app", description="service.namespace (the Kubernetes namespace): job's first half.")
    service: str = Field("question-app", description="service.name: job's second half.")
    collector_job: str = Field("otel-app/otel-collector-metrics",
                               description="job of the Collector's own metrics (the PodMonitor's: namespace/name).")
    availability: float = Field(0.995, gt=0.5, lt=1, description="Share of valid round requests that succeed.")
    latency_threshold_s: float = Field(30.0, description="A round is fast when it takes at most this (seconds).")
    latency: float = Field(0.95, gt=0.5, lt=1, description="Share of successful round requests that are fast.")
    daily_budget_usd: float = Field(50.0, gt=0, description="LLM spend over 24 hours that raises an alert (USD).")
    runbook_url: str = Field("https://github.com/REPLACE/question-app/blob/main/docs/reference/alerts.md",
                             description="Where your copy of docs/reference/alerts.md is: each alert links its "
                                         "runbook section.")

    @field_validator("latency_threshold_s")
    @classmethod
    def _a_bucket_bound(cls, value: float) -> float:
        if value not in C.REQUEST_DURATION_BUCKETS:
            raise ValueError(f"must be a bucket bound of http.server.request.duration: "
                             f"{', '.join(f'{b:g}' for b in C.REQUEST_DURATION_BUCKETS)}")
        return value

    @property
    def job(self) -> str:
        """The ``job`` label of the service's series (``service.namespace/service.name``)."""
        return f"{self.namespace}/{self.service}"


def _le(bound: float) -> str:
    """A regex (in a PromQL string) matching the ``le`` label of ``bound`` as the Collector's exporter writes it
    (``30``, ``7.5``) and as Prometheus 3 stores it (``30.0``: le values are normalised at scrape,
    prometheus/prometheus CHANGELOG 3.0, #15164)."""
    if bound.is_integer():
        return f"{int(bound)}(\\\\.0)?"
    return f"{bound:g}".replace(".", "\\\\.")


BY: Final = "cluster, job"  # Azure Managed Prometheus labels every series with its cluster; elsewhere it is empty


def _sum(expr: str, by: str = BY) -> str:
    return f"sum by ({by}) ({expr})"


def _ratio(bad: str, total: str, by: str = BY) -> str:
    """``bad / total`` by cluster and job: 0 (not nothing) when there was traffic and no bad event, and nothing
    (not NaN) when there was no traffic."""
    return f"({_sum(bad, by)} or {_sum(total, by)} * 0) / ({_sum(total, by)} > 0)"


def _recording(slo: SLO) -> list[dict[str, Any]]:
    live = f'job="{slo.job}", quiz_traffic!="evaluation"'
    valid = f'{live}, http_route=~"{ROUTES}", http_response_status_code!~"4.."'
    served = f'{live}, http_route=~"{ROUTES}", http_response_status_code=~"[23].."'
    failed = f'{live}, http_route=~"{ROUTES}", error_type=~"{"|".join(C.SERVER_ERROR_TYPES)}"'
    fast = f'{served}, le=~"{_le(slo.latency_threshold_s)}"'
    requests, answered = "http_server_request_duration_seconds_count", "http_server_request_duration_seconds_bucket"
    rules: list[dict[str, Any]] = []
    # The 5-minute rates of bad and valid events, recorded apart: the 5-minute ratios divide them, and the
    # 30-day budget sums them (spent by events, not by minutes: a busy error-free hour outweighs a quiet
    # failing one, which an average of the ratios would weigh the same). 0, not nothing, without bad events.
    every = _sum(f"rate({requests}{{{valid}}}[5m])")
    every_served = _sum(f"rate({requests}{{{served}}}[5m])")
    for sli, bad_rate, valid_rate in (
            ("errors", f"{_sum(f'rate(quiz_errors_total{{{failed}}}[5m])')} or {every} * 0", every),
            ("slow", f"{every_served} - {_sum(f'rate({answered}{{{fast}}}[5m])')}", every_served)):
        rules.append({"record": f"job:quiz_round_{sli}:rate5m", "expr": bad_rate})
        rules.append({"record": f"job:quiz_round_{sli}_valid:rate5m", "expr": valid_rate})
    for sli in ("errors", "slow"):
        rules.append({"record": f"job:quiz_round_{sli}:ratio_rate5m",
                      "expr": f"job:quiz_round_{sli}:rate5m / (job:quiz_round_{sli}_valid:rate5m > 0)"})
    for window in WINDOWS[1:]:
        rules.append({"record": f"job:quiz_round_errors:ratio_rate{window}",
                      "expr": _ratio(f"rate(quiz_errors_total{{{failed}}}[{window}])",
                                     f"rate({requests}{{{valid}}}[{window}])")})
    for window in WINDOWS[1:]:
        total = _sum(f"rate({requests}{{{served}}}[{window}])")
        rules.append({"record": f"job:quiz_round_slow:ratio_rate{window}",
                      "expr": f"1 - {_sum(f'rate({answered}{{{fast}}}[{window}])')} / ({total} > 0)"})
    for sli, objective in (("errors", slo.availability), ("slow", slo.latency)):
        rules.append({"record": f"job:quiz_round_{sli}:objective", "expr": f"vector({objective})",
                      "labels": {"job": slo.job}})
        rules.append({"record": f"job:quiz_round_{sli}:budget_remaining{BUDGET_WINDOW}",
                      "expr": f"1 - (sum_over_time(job:quiz_round_{sli}:rate5m[{BUDGET_WINDOW}]) / "
                              f"sum_over_time(job:quiz_round_{sli}_valid:rate5m[{BUDGET_WINDOW}])) "
                              f"/ {1 - objective:.6g}"})
    upstream = f'{live}, error_type=~".*({"|".join(UPSTREAM_ERRORS)}).*"'
    calls = "gen_ai_client_operation_duration_seconds_count"
    rules.append({"record": "job_model:gen_ai_client_upstream_errors:ratio_rate5m",
                  "expr": _ratio(f"rate({calls}{{{upstream}}}[5m])", f"rate({calls}{{{live}}}[5m])",
                                 f"{BY}, gen_ai_request_model")})
    reviews = f'rate(quiz_agent_step_outcomes_total{{{live}, quiz_step="review"}}[1h])'
    rejected = f'rate(quiz_agent_step_outcomes_total{{{live}, quiz_step="review", quiz_step_outcome="rejected"}}[1h])'
    rules.append({"record": "job:quiz_review_rejected:ratio_rate1h", "expr": _ratio(rejected, reviews)})
    feedback = f"rate(quiz_feedback_total{{{live}}}[1h])"
    down = f'rate(quiz_feedback_total{{{live}, quiz_rating="down"}}[1h])'
    rules.append({"record": "job:quiz_feedback_down:ratio_rate1h", "expr": _ratio(down, feedback)})
    # An evaluation run is a short process (a Kubernetes Job): its counters may reach Prometheus at their final
    # value, which increase() never sees. Each run's series (its own pod) at its largest, summed over the day,
    # as the dashboard's evaluation accuracy panel reads them.
    strict = f'job="{slo.job}", quiz_traffic="evaluation", quiz_eval_judge="strict"'
    judged = f"max_over_time(quiz_eval_items_total{{{strict}}}[1d])"
    agreed = f'max_over_time(quiz_eval_items_total{{{strict}, {C.ATTR_EVAL_AGREED.replace(".", "_")}="true"}}[1d])'
    rules.append({"record": "job:quiz_eval_judges_agree:ratio1d", "expr": _ratio(agreed, judged)})
    # The day's bill: live spend's increase, and each evaluation run's spend at its largest (as above).
    spend = "quiz_llm_cost_usd_total"
    rules.append({"record": "job:quiz_llm_cost_usd:increase1d",
                  "expr": _sum(f'increase({spend}{{{live}}}[1d]) or max_over_time({spend}{{job="{slo.job}", '
                               f'quiz_traffic="evaluation"}}[1d])')})
    return rules


def _alert(slo: SLO, name: str, expr: str, severity: str, summary: str, description: str,
           for_: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": f"{slo.runbook_url}#{name.lower()}"}
    return rule


def _alerts(slo: SLO) -> list[dict[str, Any]]:
    alerts = []
    for sli, objective, what in (("errors", slo.availability, "Availability"), ("slow", slo.latency, "Latency")):
        budget = 1 - objective
        for long, short, burn, speed in BURN_RATES:
            threshold = f"{burn * budget:.6g}"
            alerts.append(_alert(
                slo, f"QuestionApp{what}{speed.title()}Burn",
                f"job:quiz_round_{sli}:ratio_rate{long} > {threshold} and job:quiz_round_{sli}:ratio_rate{short} > "
                f"{threshold}",
                "critical", f"question-app {what.lower()} SLO ({objective:.4g}) burning {burn:g}× its budget",
                f"{{{{ $labels.job }}}}: the {long} and {short} ratios of "
                + ("failed rounds (5xx or a failed stream)" if sli == "errors"
                   else f"rounds slower than {slo.latency_threshold_s:g} s")
                + f" are above {threshold} ({burn:g} × the {budget:.4g} budget): at this rate the 30-day budget "
                  f"lasts {30 / burn:.3g} days.", labels={"slo": what.lower(), "window": speed}))
    alerts.append(_alert(
        slo, "QuestionAppCollectorExportFailing",
        f'sum by (job, exporter) (rate({{__name__=~"{EXPORT_FAILED}", job="{slo.collector_job}"}}[5m])) > 0',
        "warning", "The Collector cannot send telemetry to {{ $labels.exporter }}",
        "The Collector's {{ $labels.exporter }} exporter has been failing to send spans, metric points or log "
        "records for 10 minutes: that backend (azuremonitor: Application Insights) is missing data, and once the "
        "sending queue is full what the app sends is dropped.", "10m"))
    alerts.append(_alert(
        slo, "QuestionAppNoData",
        f'absent_over_time(process_cpu_time_seconds_total{{job="{slo.job}", quiz_traffic!="evaluation"}}[5m])',
        "critical", "No metrics from question-app for 10 minutes",
        f"No live series of job {slo.job} reached Prometheus for 10 minutes (5 without a sample, then 5 more; "
        "the Collector keeps exposing a series for 5 minutes after its last point, so about 15 after the pods "
        "stopped): the pods, the Collector, its prometheus exporter or the PodMonitor's scrape is down. Every "
        "other alert on this service is blind meanwhile. An evaluation run's series do not count.", "5m"))
    alerts.append(_alert(
        slo, "QuestionAppLLMSpendOverBudget",
        f"job:quiz_llm_cost_usd:increase1d > {slo.daily_budget_usd:g}",
        "warning", f"LLM spend over the last 24 h is above the daily budget (USD {slo.daily_budget_usd:g})",
        "{{ $labels.job }} spent USD {{ $value | printf \"%.2f\" }} on the LLM in 24 hours (the price table, "
        "live and evaluation traffic). A model the price table does not name has no spend: this alert cannot see "
        "it.", "15m"))
    return alerts


def rules(slo: SLO | None = None) -> dict[str, Any]:
    """The Prometheus rules file: one group evaluated every minute, the recording rules first. Rules of a group
    run in order at one evaluation time (Prometheus docs, "Recording rules"), so every alert reads the ratios
    recorded at its own evaluation; in separate groups it would read them a minute old, or not, by chance."""
    slo = slo or SLO()
    return {"groups": [{"name": "question-app-slo", "interval": "1m", "rules": _recording(slo) + _alerts(slo)}]}


def _iso_duration(duration: str) -> str:
    """A Prometheus duration (``10m``, ``1h``) as ISO 8601 (``PT10M``), as the ARM rule groups want it."""
    number, unit = int(duration[:-1]), duration[-1]
    return f"P{number}D" if unit == "d" else f"PT{number}{unit.upper()}"


MAX_AZURE_RULES: Final = 20  # rules per Prometheus rule group (Azure Monitor service limits)


def azure_template(slo: SLO | None = None) -> dict[str, Any]:
    """``rules(slo)`` as an ARM template of ``Microsoft.AlertsManagement/prometheusRuleGroups`` (apiVersion
    2023-03-01; learn.microsoft.com/azure/templates/microsoft.alertsmanagement/prometheusrulegroups): the
    recording rules in groups of at most ``MAX_AZURE_RULES``, the alerts in one more, each scoped to the Azure
    Monitor workspace and bound to the AKS cluster; alerts go to an action group and resolve by themselves.
    Parameters: ``clusterName``, ``azureMonitorWorkspaceId``, ``actionGroupId``, ``runbookUrl`` (default
    ``SLO_RUNBOOK_URL``: where your copy of docs/reference/alerts.md is), ``location``.

    Azure evaluates groups apart, so an alert reads ratios recorded up to a minute before: nothing at the
    burn-rate alerts' scale of 5 minutes to 6 hours."""
    slo = slo or SLO()
    (group,) = rules(slo)["groups"]
    recording = [r for r in group["rules"] if "record" in r]
    parts = [(f"recording-{i // MAX_AZURE_RULES + 1}", recording[i:i + MAX_AZURE_RULES])
             for i in range(0, len(recording), MAX_AZURE_RULES)]
    parts.append(("alerts", [r for r in group["rules"] if "alert" in r]))
    resources = []
    for part, members in parts:
        azure_rules = []
        for rule in members:
            if "record" in rule:
                azure_rules.append({"record": rule["record"], "expression": rule["expr"],
                                    **({"labels": rule["labels"]} if "labels" in rule else {})})
                continue
            anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
            azure_rules.append({
                "alert": rule["alert"], "expression": rule["expr"], "enabled": True,
                "severity": AZURE_SEVERITY[rule["labels"]["severity"]],
                **({"for": _iso_duration(rule["for"])} if "for" in rule else {}),
                "labels": rule["labels"],
                "annotations": {**rule["annotations"],
                                "runbook_url": f"[concat(parameters('runbookUrl'), '#{anchor}')]"},
                "actions": [{"actionGroupId": "[parameters('actionGroupId')]"}],
                "resolveConfiguration": {"autoResolved": True, "timeToResolve": "PT10M"}})
        resources.append({
            "type": "Microsoft.AlertsManagement/prometheusRuleGroups", "apiVersion": "2023-03-01",
            "name": f"{group['name']}-{part}", "location": "[parameters('location')]",
            "properties": {"description": f"question-app SLOs, {part} (generated by question-app rules)",
                           "enabled": True, "clusterName": "[parameters('clusterName')]",
                           "scopes": ["[parameters('azureMonitorWorkspaceId')]"],
                           "interval": _iso_duration(group["interval"]), "rules": azure_rules}})

    def parameter(description: str, default: str | None = None) -> dict[str, Any]:
        return {"type": "string", **({"defaultValue": default} if default is not None else {}),
                "metadata": {"description": description}}

    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {
                "clusterName": parameter("The AKS cluster's name."),
                "azureMonitorWorkspaceId": parameter("Resource ID of the Azure Monitor workspace Managed "
                                                     "Prometheus writes to."),
                "actionGroupId": parameter("Resource ID of the action group alerts go to."),
                "runbookUrl": parameter("Your copy of docs/reference/alerts.md: each alert links its runbook section.",
                                        slo.runbook_url),
                "location": parameter("Where the rule groups live.", "[resourceGroup().location]")},
            "resources": resources}


def render(azure: bool = False, slo: SLO | None = None) -> str:
    """The shipped text: the rules file as YAML (``azure=False``) or the ARM template as JSON."""
    import yaml

    if azure:
        return json.dumps(azure_template(slo), indent=2) + "\n"
    header = ("# question-app SLOs: generated by `question-app rules` from telemetry/slo.py (SLO_* settings);\n"
              "# do not edit: regenerate. Unit tests: deploy/slo-rules.test.yaml (promtool test rules).\n")
    return header + yaml.safe_dump(rules(slo), sort_keys=False, width=200, allow_unicode=True)
