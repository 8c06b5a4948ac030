"""Cost per round: the price table, and the spend a user sees in every place the service reports it.

The fake LLM answers every call with fixed token counts (``FakeOpenAI.usage``: 1000 prompt tokens of which
400 were read from the provider's cache, 200 completion tokens), and the table prices the model at USD 2 per
million input tokens, 0.5 cached, 8 output. By hand, one call costs
(600 × 2 + 400 × 0.5 + 200 × 8) / 1e6 = USD 0.003, and a round of four calls (ask, review, answer, grade)
USD 0.012. The round's JSON, its SSE result, its span, the spend metric after a real Prometheus scraped it
through the Collector's exposition, and the dashboard's cost panels must all say so.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from graphs import agents
from graphs.graph import without_requested
from telemetry import contract as C
from telemetry.cost import DEFAULT_PRICES, Price, PriceTable, load_prices, total
from tests.fakes import wait_until
from tests.fakes.azuremonitor import app_insights
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.test_dashboard import kql_filter, kql_panel, observed, panel, streamed, substitute

PRICE = Price(input=2.0, cached_input=0.5, output=8.0)
USAGE = (1000, 200, 400)  # prompt tokens, completion tokens, cached prompt tokens: every call
PER_CALL = (600 * 2.0 + 400 * 0.5 + 200 * 8.0) / 1e6  # USD 0.003
# ask, review, answer, grade: each step one call when the Reviewer accepts (the Tutor's hint is a person's request)
ROUND_STEPS = without_requested(agents.steps())
CALLS = len(ROUND_STEPS)
PER_ROUND = CALLS * PER_CALL


def test_a_price_is_per_million_tokens_with_cached_input_at_its_own_price() -> None:
    assert PRICE.cost(1000, 200, 400) == pytest.approx(0.003)
    assert PRICE.cost(1000, 200) == pytest.approx((1000 * 2 + 200 * 8) / 1e6)
    assert PRICE.cost(10, 0, cached_input_tokens=50) == pytest.approx(10 * 0.5 / 1e6)  # cached ⊆ input
    assert total([0.001, 0.002]) == pytest.approx(0.003) and total([0.001, None]) is None


def test_the_shipped_table_prices_the_default_deployment_with_a_dated_source() -> None:
    from app.settings import Settings

    table = load_prices()
    deployment = Settings.model_fields["azure_openai_deployment_name"].default
    price = table.price(deployment)
    assert price is not None and price.input > price.cached_input > 0 and price.output > price.input
    text = DEFAULT_PRICES.read_text()
    comment = text.split(f"  {deployment}:")[0].rsplit("models:", 1)[1]
    assert re.search(r"20\d\d-\d\d-\d\d", comment) and "https://" in comment, "the price's date and source"
    assert table.price("smollm2-135m-instruct") == Price(input=0, cached_input=0, output=0)


@pytest.mark.parametrize(("content", "complaint"), [
    ("models: {m: {input: -1, cached_input: 0, output: 1}}", "greater than or equal to 0"),
    ("models: {m: {input: 1, output: 1}}", "cached_input"),
    ("currency: EUR\nmodels: {}", "USD"),
    ("models: [", "while parsing"),
])
def test_a_broken_table_stops_the_service_saying_which_file_and_what(tmp_path: Path, content: str,
                                                                      complaint: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(path))) as raised:
        load_prices(path)
    assert complaint in str(raised.value)


def prices_file(tmp_path: Path, model: str = "gpt-5.2-chat") -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(PriceTable(models={model: PRICE}).model_dump_json())  # JSON is YAML
    return path


def test_a_model_without_a_price_has_no_cost_never_a_guess(make_client, fake_llm: FakeOpenAI,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client: TestClient = make_client(llm_prices_file=prices_file(tmp_path, model="another-model"))
    assert "has no price for model gpt-5.2-chat" in caplog.text
    body = client.post("/ask", json={"subject": "math"}).json()
    assert body["usage"]["cost_usd"] is None and body["usage"]["input_tokens"] > 0


def test_spend_is_the_same_in_the_response_the_stream_the_span_the_metric_and_the_panels(
        otlp: OTLPReceiver, llm_server: FakeOpenAI, tmp_path: Path) -> None:
    with observed(otlp, llm_server, case="cost", LLM_PRICES_FILE=str(prices_file(tmp_path))) as (
            client, prometheus, _):
        llm_server.usage = USAGE
        first = client.post("/ask", json={"subject": "math"}).json()
        assert first["usage"]["cost_usd"] == pytest.approx(PER_ROUND)
        assert (first["usage"]["input_tokens"], first["usage"]["output_tokens"]) == (CALLS * 1000, CALLS * 200)
        spend = 'quiz_llm_cost_usd_total{job="otel-app/question-app", test_case="cost"}'
        wait_until(lambda: prometheus.query(f"sum({spend})"), timeout_s=30)  # scraped: the rate's start

        # A streamed round of the same session: its `round` event carries the same cost.
        events = streamed(client, {"session_id": first["session_id"]})
        round_event = json.loads(events.split("event: round\ndata: ", 1)[1].split("\n", 1)[0])
        assert round_event["usage"]["cost_usd"] == pytest.approx(PER_ROUND)
        # (the same subject and difficulty: one series of quiz_rounds_total, which the rates follow from 1 to 3)
        third = client.post("/ask", json={"subject": "math"}).json()
        assert third["usage"]["cost_usd"] == pytest.approx(PER_ROUND)

        # The round span, as App Insights gets it (a string in customDimensions), and the KQL panel's filter.
        def rounds() -> list:
            return [s for s in otlp.spans() if s.name == C.SPAN_ROUND and s.resource.get("test.case") == "cost"]

        otlp.wait_for(lambda: len(rounds()) == 3)
        assert all(s.attributes[C.ATTR_COST] == pytest.approx(PER_ROUND) for s in rounds())
        keep = kql_filter(kql_panel("Cost per round"))
        rows = [r for r in app_insights(otlp.spans(), [], [])["dependencies"]
                if r["operation_Id"] in {first["trace_id"], third["trace_id"]} and keep(r)]
        assert [float(r["customDimensions"][C.ATTR_COST]) for r in rows] == pytest.approx([PER_ROUND] * 2)

        # The metric: three rounds, each step's share, by model, agent and step.
        def by_step() -> dict[tuple[str, str], float]:
            return {(s["metric"]["gen_ai_agent_name"], s["metric"]["quiz_step"]): float(s["value"][1])
                    for s in prometheus.query(f"sum by (gen_ai_agent_name, quiz_step) ({spend})")}

        expected = {(step.agent, step.name): 3 * PER_CALL for step in ROUND_STEPS}
        wait_until(lambda: by_step() == pytest.approx(expected), timeout_s=30)
        assert {s["metric"]["gen_ai_request_model"] for s in prometheus.query(spend)} == {"gpt-5.2-chat"}

        # The panels' PromQL, all at one instant: the rounds after the first scrape are what the rates see.
        now = time.time()

        def value(expr: str) -> float:
            result = prometheus.query(substitute(expr).replace('quiz_traffic!="evaluation"',
                                                               'quiz_traffic!="evaluation", test_case="cost"'), now)
            return sum(float(s["value"][1]) for s in result)

        per_round = panel("Average cost per graded round")["targets"][0]["expr"]
        assert value(per_round) == pytest.approx(PER_ROUND)
        rounds_per_hour = value('sum(rate(quiz_rounds_total{job="$namespace/$service", '
                                'quiz_traffic!="evaluation"}[$__rate_interval])) * 3600')
        for title in ("LLM spend per hour by model", "LLM spend per hour by agent step"):
            assert value(panel(title)["targets"][0]["expr"]) == pytest.approx(rounds_per_hour * PER_ROUND), title


def test_the_evaluation_report_prices_its_items_with_the_same_table(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    from tests.test_eval import IDS, eval_env, question_app, script

    script(fake_llm)
    fake_llm.usage = USAGE
    env = {**eval_env(fake_llm), "LLM_PRICES_FILE": str(prices_file(tmp_path))}
    done = question_app("--ids", *IDS, "--out", str(tmp_path / "run"), env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    # Each item: the Reviewer's, the Student's and the Teacher's calls, and the judge prompt's for the one item no
    # mechanical check decides; every call the fake LLM answered is priced, none twice.
    assert len(fake_llm.requests) == 3 * len(IDS) + 1
    assert report["cost_usd"] == pytest.approx(len(fake_llm.requests) * PER_CALL)
    assert report["prices_usd_per_mtok"] == PRICE.model_dump()
    assert report["unpriced_items"] == 0
    assert "Cost: $" in (tmp_path / "run" / "report.md").read_text()



def test_attempts_that_never_gave_valid_output_are_billed_though_the_round_fails(
        make_client, fake_llm: FakeOpenAI, telemetry_env: OTLPReceiver, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.openai_server import Fault

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=otel-app,test.case=unbilled")
    client: TestClient = make_client(llm_prices_file=prices_file(tmp_path), structured_output_attempts=2)
    fake_llm.usage = USAGE
    fake_llm.fail_next(Fault("bad_arguments"), times=2)  # the Teacher's question: invalid twice
    assert client.post("/ask", json={"subject": "math"}).status_code == 502
    assert len(fake_llm.requests) == 2  # both attempts of the asking step, then the round stopped

    def ask_spend() -> float | None:
        points = [p for p in telemetry_env.metric_points() if p.name == C.METRIC_LLM_COST
                  and p.resource.get("test.case") == "unbilled" and p.attributes[C.ATTR_STEP] == "ask"]
        return max(points, key=lambda p: p.time_ns).value if points else None

    telemetry_env.wait_for(lambda: ask_spend() == pytest.approx(2 * PER_CALL))
