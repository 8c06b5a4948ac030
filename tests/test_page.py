"""The page at ``/`` in a real browser: Debian's Chromium driven by Playwright (the system browser is the
executable; nothing downloads one), against the service as a real process on loopback with the fake LLM."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import new_page, open_page
from tests.conftest import CANARY_KEY, HEX32
from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.service import ROOT, clean_env, start_service, stop

PAGE_KEY = "page-test-key-5d1e"  # API_KEYS of the authenticated service
LINK = "https://portal.azure.com/#view/transaction/{trace_id}"

# The order a round's parts appear in, recorded in the page by a MutationObserver: (what, ms, stream open).
RECORD_ORDER = """() => {
  window.__seen = [];
  const start = performance.now();
  new MutationObserver(() => {
    for (const [what, sel] of [["question", ".question"], ["answer", ".answer-text"], ["verdict", ".verdict"]]) {
      const el = document.querySelector(`#rounds .round ${sel}`);
      if (el && el.textContent && !window.__seen.some(s => s[0] === what)) {
        window.__seen.push([what, performance.now() - start,
                            document.querySelector("#rounds").getAttribute("aria-busy") === "true"]);
      }
    }
  }).observe(document.querySelector("#rounds"), {subtree: true, childList: true, characterData: true});
}"""


# All the text the document holds, shown or not: ``innerText`` skips hidden elements, where a leak would sit.
# Every node's text (``textContent``), every attribute's value, and what form fields hold (``value`` is no
# attribute once the field is filled).
EVERYTHING_IN_THE_DOM = """() => [
  document.documentElement.textContent,
  ...[...document.querySelectorAll("*")].flatMap(el => [...el.attributes].map(a => a.value)),
  ...[...document.querySelectorAll("input, textarea, select")].map(el => el.value),
].join("\\n")"""
# The page's Content-Security-Policy, directive by directive: only this origin, nothing inline, no framing.
POLICY = {"default-src": ["'none'"], "script-src": ["'self'"], "style-src": ["'self'"], "img-src": ["'self'"],
          "connect-src": ["'self'"], "base-uri": ["'none'"], "form-action": ["'self'"],
          "frame-ancestors": ["'none'"]}


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as ``{directive: [source, …]}`` (CSP3's parse: split on ``;``, names
    lower-cased; a browser ignores a repeated directive, so here it is an error)."""
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        if not part.strip():
            continue
        name, *sources = part.split()
        assert name.lower() not in parsed, f"{name} twice in {policy!r}"
        parsed[name.lower()] = sources
    return parsed


@pytest.fixture(scope="module")
def services(llm_server: FakeOpenAI, otlp: OTLPReceiver,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """``services(**settings)`` → the base URL of a ``question-app`` process with those extra settings
    (one process per distinct set, for the module), its LLM the fake server, its telemetry the receiver."""
    started: dict[tuple[tuple[str, str], ...], str] = {}
    logs = tmp_path_factory.mktemp("page")
    with ExitStack() as stack:
        def service(**extra: str) -> str:
            key = tuple(sorted(extra.items()))
            if key not in started:
                env = clean_env(OPENAI_BASE_URL=llm_server.base_url, OPENAI_API_KEY=CANARY_KEY,
                                OPENAI_MODEL="gpt-5.2-chat", LLM_MAX_RETRIES="0", LLM_TIMEOUT_S="5",
                                OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                                OTEL_BLRP_SCHEDULE_DELAY="100", OTEL_METRIC_EXPORT_INTERVAL="500",
                                OTEL_RESOURCE_ATTRIBUTES="service.namespace=otel-app", **extra)
                process, base = start_service(env, logs / f"service-{len(started)}.log")
                stack.callback(stop, process)
                started[key] = base
            return started[key]

        yield service


@pytest.fixture
def page(browser: Browser, fake_llm: FakeOpenAI) -> Iterator[Page]:
    with new_page(browser) as page:
        yield page


def test_a_round_arrives_step_by_step_while_the_stream_is_open(page: Page, services, fake_llm: FakeOpenAI,
                                                               otlp: OTLPReceiver) -> None:
    fake_llm.latency_s = 0.5  # each agent step takes half a second: the parts must come apart
    fake_llm.script("Question", question="What is the boiling point of water at sea level?",
                    reference_answer="100 °C")
    fake_llm.script("StudentAnswer", answer="100 degrees Celsius")
    fake_llm.script("Grade", verdict="correct", feedback="Exactly right.")
    open_page(page, services())
    page.evaluate(RECORD_ORDER)
    page.get_by_label("Subject").fill("science")
    page.get_by_role("button", name="Play a round").click()

    card = page.locator("#rounds .round").first
    expect(card.locator(".reference-text")).to_have_text("100 °C", timeout=15_000)
    seen = page.evaluate("window.__seen")
    assert [what for what, _, _ in seen] == ["question", "answer", "verdict"], seen
    assert all(stream_open for _, _, stream_open in seen), seen  # each part came while the stream was open
    assert seen[1][1] - seen[0][1] > 300 and seen[2][1] - seen[1][1] > 300, seen  # as each step finished

    expect(card.locator(".question")).to_have_text("What is the boiling point of water at sea level?")
    expect(card.locator(".answer-text")).to_have_text("100 degrees Celsius")
    expect(card.locator(".verdict")).to_have_text("✓ Correct")  # a sign and a word, not only a colour
    expect(card.locator(".feedback")).to_have_text("Exactly right.")
    expect(page.locator("#score")).to_contain_text("accuracy 100%")
    expect(page.get_by_role("button", name="Next round")).to_be_focused()

    trace_id = card.locator(".trace-id").inner_text()
    assert HEX32.match(trace_id)
    assert otlp.wait_for(lambda: otlp.trace(trace_id))  # the id shown is the round's real trace
    card.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == trace_id
    expect(card.locator(".ai-link")).to_be_hidden()  # no App Insights link unless configured


def test_playing_as_the_student_with_the_keyboard_only(page: Page, services, fake_llm: FakeOpenAI) -> None:
    # The reference answer has letters no hex trace id has, so "not on the page yet" cannot match an id by chance.
    fake_llm.script("Question", question="What is 6 × 7?", reference_answer="forty-two")
    fake_llm.script("Grade", verdict="correct", feedback="Yes, forty-two.")
    open_page(page, services())
    keyboard = page.keyboard

    tab_to(page, "subject")
    keyboard.press("Control+A")
    keyboard.type("math")
    tab_to(page, "student-model")
    keyboard.press("ArrowDown")  # radio group: "I'll answer"
    assert page.evaluate("document.activeElement.value") == "person"
    tab_to(page, "play")
    keyboard.press("Enter")

    expect(page.locator("#answer")).to_be_focused(timeout=15_000)  # the page hands the turn to the player
    card = page.locator("#rounds .round").first
    expect(card.locator(".question")).to_have_text("What is 6 × 7?")
    expect(card.locator(".reference")).to_be_hidden()  # never before grading
    assert "forty-two" not in page.evaluate(EVERYTHING_IN_THE_DOM)  # not even hidden
    keyboard.type("42, I think")
    keyboard.press("Enter")

    expect(card.locator(".verdict")).to_have_text("✓ Correct", timeout=15_000)
    expect(card.locator(".student .who")).to_have_text("You")
    expect(card.locator(".answer-text")).to_have_text("42, I think")
    expect(card.locator(".reference-text")).to_have_text("forty-two")
    assert "<answer>42, I think</answer>" in fake_llm.requests_for("Grade")[-1].prompt_text
    assert [r.tool_name for r in fake_llm.requests] == ["Question", "Review", "Grade"]  # no Student agent


def tab_to(page: Page, element_id: str, presses: int = 30) -> None:
    """Press Tab until the element with ``element_id`` has the focus (the test uses keys, not clicks)."""
    for _ in range(presses):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} is not reachable with Tab")


def test_a_reload_restores_the_session_and_its_waiting_question(page: Page, services, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="Which planet is the largest?", reference_answer="Jupiter")
    fake_llm.script("StudentAnswer", answer="Saturn")
    fake_llm.script("Grade", verdict="incorrect", feedback="No: Jupiter.")
    open_page(page, services())
    page.get_by_label("Difficulty").select_option("hard")
    expect(page.get_by_label("Your answer")).to_be_hidden()  # until a question waits for it
    page.get_by_role("button", name="Play a round").click()
    expect(page.locator("#rounds .round .verdict")).to_have_text("✗ Incorrect", timeout=15_000)
    page.get_by_label("I'll answer").check()
    page.get_by_role("button", name="Next round").click()
    expect(page.locator("#answer")).to_be_visible(timeout=15_000)
    expect(page.locator("#rounds .round").first.locator(".question")).to_have_text("Which planet is the largest?")
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    cards = page.locator("#rounds .round")
    expect(cards).to_have_count(2)
    expect(cards.nth(1).locator(".verdict")).to_have_text("✗ Incorrect")
    expect(cards.nth(1).locator(".answer-text")).to_have_text("Saturn")
    expect(cards.nth(0).locator(".question")).to_have_text("Which planet is the largest?")
    expect(page.locator("#answer")).to_be_focused()
    expect(page.get_by_label("Difficulty")).to_have_value("hard")
    expect(page.get_by_label("I'll answer")).to_be_checked()
    expect(page.locator("#score")).to_contain_text("Rounds played: 1")

    page.get_by_label("Your answer").fill("Jupiter")
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    page.get_by_role("button", name="Submit answer").click()
    expect(cards.nth(0).locator(".verdict")).to_have_text("✓ Correct", timeout=15_000)
    expect(page.locator("#score")).to_contain_text("Rounds played: 2")


def test_feedback_from_the_page_reaches_the_otlp_receiver(page: Page, services, otlp: OTLPReceiver) -> None:
    since = time.time_ns()  # the receiver is the whole run's: other modules' services export to it too
    open_page(page, services())
    page.get_by_role("button", name="Play a round").click()
    card = page.locator("#rounds .round").first
    expect(card.locator(".verdict")).not_to_be_empty(timeout=15_000)
    trace_id = card.locator(".trace-id").inner_text()
    card.get_by_label("Comment (optional)").fill("The question was ambiguous.")
    card.get_by_role("button", name="Thumbs down").click()
    expect(card.get_by_role("status")).to_have_text("Thank you — feedback recorded.")
    expect(card.get_by_role("button", name="Thumbs down")).to_have_attribute("aria-pressed", "true")

    def feedback() -> list[Any]:
        return [e for e in otlp.events("gen_ai.evaluation.result")
                if e.attributes.get("gen_ai.evaluation.name") == "user_feedback" and e.trace_id == trace_id]

    (event,) = otlp.wait_for(feedback)
    assert event.attributes["gen_ai.evaluation.score.label"] == "down"
    # This page's round was traced; the page's own files and config were not. Only this test's spans are read:
    # those of the process that served its round (its service.instance.id), since it began. Spans of the page's
    # files would have ended before the round's and been exported no later.
    (ask,) = otlp.wait_for(lambda: [s for s in otlp.trace(trace_id) if s.kind == "SERVER"])
    assert ask.attributes["url.path"] == "/ask"
    instance = ask.resource["service.instance.id"]
    served = {s.attributes.get("url.path") for s in otlp.spans() if s.kind == "SERVER" and s.start_ns >= since
              and s.resource.get("service.instance.id") == instance}
    assert "/ask" in served and not served & {"/", "/static/app.js", "/static/style.css", "/ui/config"}, served
    assert "gen_ai.evaluation.explanation" not in event.attributes  # a comment is content: capture is off


def test_a_503_is_explained_with_its_retry_time_and_retried_after_it(page: Page, services,
                                                                    fake_llm: FakeOpenAI) -> None:
    open_page(page, services())
    fake_llm.fail_next(Fault("status", 429, {"Retry-After": "3"}))  # LLM_MAX_RETRIES=0: one call, refused
    page.get_by_role("button", name="Play a round").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The language model is rate limited", timeout=15_000)
    expect(alert).to_contain_text("Retry after 3 s")  # the problem's detail
    expect(alert).to_contain_text("You can try again in")
    expect(page.get_by_role("button", name="Try again")).to_be_disabled()
    expect(page.locator("#play")).to_be_disabled()
    expect(page.locator("#rounds .round")).to_have_count(0)  # a failed round left nothing behind
    assert "Traceback" not in page.locator("body").inner_text()

    expect(alert).to_contain_text("You can try again now", timeout=6_000)
    page.get_by_role("button", name="Try again").click()
    expect(page.locator("#rounds .round .verdict")).not_to_be_empty(timeout=15_000)
    expect(alert).to_be_hidden()


def test_model_text_is_shown_as_text_and_never_runs(page: Page, services, fake_llm: FakeOpenAI) -> None:
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    fake_llm.script("Question", question=f"Q {hostile}", reference_answer=f"R {hostile}")
    fake_llm.script("StudentAnswer", answer=f"A {hostile}")
    fake_llm.script("Grade", verdict="incorrect", feedback=f"F {hostile}")
    open_page(page, services())
    page.get_by_role("button", name="Play a round").click()
    card = page.locator("#rounds .round").first
    expect(card.locator(".reference-text")).to_have_text(f"R {hostile}", timeout=15_000)
    for selector, prefix in [(".question", "Q"), (".answer-text", "A"), (".feedback", "F")]:
        expect(card.locator(selector)).to_have_text(f"{prefix} {hostile}")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#rounds script, #rounds img").count() == 0


def test_the_page_is_labelled_and_its_language_follows_the_choice(page: Page, services,
                                                                  fake_llm: FakeOpenAI) -> None:
    base = services()
    response = httpx.get(base + "/")
    (csp,) = response.headers.get_list("content-security-policy")
    assert directives(csp) == POLICY
    assert not re.search(r"\son[a-z]+\s*=", response.text)  # no inline event handler attributes
    assert "<script>" not in response.text and "style=" not in response.text
    script = (ROOT / "app/http/web/static/app.js").read_text()
    for markup_sink in ("innerHTML", "outerHTML =", "insertAdjacentHTML", "document.write", "eval("):
        assert markup_sink not in script  # model text goes in with textContent only
    open_page(page, base)
    unlabelled = page.evaluate("""() => [...document.querySelectorAll("input, select, button, textarea")]
        .filter(el => !el.closest("template"))
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unlabelled == []

    page.get_by_label("Language").select_option("ko")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.get_by_label("주제")).to_be_visible()
    page.get_by_role("button", name="라운드 시작").click()
    expect(page.locator("#rounds .round .verdict")).not_to_be_empty(timeout=15_000)
    assert "Korean" in fake_llm.requests_for("Question")[-1].prompt_text  # the quiz language, too
    expect(page.locator("#rounds .round .round-title")).to_have_text("1라운드")


def test_with_api_keys_the_page_asks_for_a_key_and_sends_it_only_in_a_header(page: Page, services,
                                                                             tmp_path: Path) -> None:
    base = services(API_KEYS=PAGE_KEY, APP_INSIGHTS_LINK_TEMPLATE=LINK)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    page.goto(base + "/")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API key").fill(PAGE_KEY)
    dialog.get_by_label("API key").press("Enter")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_role("button", name="Play a round").click()
    card = page.locator("#rounds .round").first
    expect(card.locator(".verdict")).not_to_be_empty(timeout=15_000)

    asks = [auth for url, auth in sent if url.endswith("/ask")]
    assert asks == [f"Bearer {PAGE_KEY}"]
    assert not any(PAGE_KEY in url for url, _ in sent) and PAGE_KEY not in page.url
    trace_id = card.locator(".trace-id").inner_text()
    expect(card.locator(".ai-link")).to_have_attribute("href", LINK.replace("{trace_id}", trace_id))
    assert httpx.post(base + "/ask", json={}).status_code == 401  # the key is really required


def test_a_stream_cut_mid_round_reconnects_by_itself_and_shows_the_round_once(page: Page, services,
                                                                             fake_llm: FakeOpenAI) -> None:
    fake_llm.latency_s = 0.7  # the round is still playing when the network fails
    fake_llm.script("Question", question="Which planet is known as the Red Planet?", reference_answer="Mars")
    fake_llm.script("StudentAnswer", answer="Mars")
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    base = services()
    sent: list[tuple[str, str, dict[str, str]]] = []
    with CuttingProxy(int(base.rsplit(":", 1)[1])) as proxy:
        open_page(page, proxy.url)
        page.on("request", lambda r: sent.append((r.method, r.url, r.headers)))
        page.get_by_label("Subject").fill("science")
        page.get_by_role("button", name="Play a round").click()
        card = page.locator("#rounds .round").first
        expect(card.locator(".question")).to_have_text("Which planet is known as the Red Planet?", timeout=10_000)
        assert proxy.cut() >= 1  # mid-round: the answer and the grade are still to come
        expect(card.locator(".reference-text")).to_have_text("Mars", timeout=20_000)
    expect(card.locator(".verdict")).to_have_text("✓ Correct")
    expect(page.locator("#rounds .round")).to_have_count(1)
    expect(page.locator("#rounds .question")).to_have_count(1)  # nothing shown twice
    expect(page.locator("#problem")).to_be_hidden()
    posts = [h for method, url, h in sent if method == "POST" and url.endswith("/ask")]
    resumes = [(url, h) for method, url, h in sent if method == "GET" and url.endswith("/round")]
    assert len(posts) == 1 and posts[0]["idempotency-key"]  # one round asked, with its key
    assert resumes and re.fullmatch(r"1\.\d+", resumes[0][1]["last-event-id"])  # resumed after what it had
    # The round was played once (four LLM calls), and the session has it once.
    assert len(fake_llm.requests) == 4
    sid = page.evaluate("localStorage.getItem('question-app.session')")
    assert httpx.get(f"{base}/sessions/{sid}", timeout=10).json()["rounds_played"] == 1


def test_stop_ends_the_round_and_leaves_the_session_as_it_was(page: Page, services, fake_llm: FakeOpenAI) -> None:
    base = services()
    open_page(page, base)
    stop_button = page.get_by_role("button", name="Stop")
    expect(stop_button).to_be_disabled()  # nothing to stop
    page.get_by_role("button", name="Play a round").click()
    expect(page.locator("#rounds .round .verdict")).to_have_count(1, timeout=15_000)
    expect(stop_button).to_be_disabled()
    expect(page.locator("#score")).to_contain_text("Rounds played: 1")
    score = page.locator("#score").inner_text()
    fake_llm.latency_s = 3.0
    calls = len(fake_llm.requests)
    page.get_by_role("button", name="Next round").click()
    expect(stop_button).to_be_enabled(timeout=10_000)  # once the round's session is known
    stop_button.click()
    expect(page.locator("#progress")).to_have_text("Round stopped: the session is as it was before it.",
                                                   timeout=10_000)
    expect(page.locator("#rounds .round")).to_have_count(1)  # the stopped round's card is gone
    expect(page.locator("#score")).to_have_text(score)
    expect(stop_button).to_be_disabled()
    assert len(fake_llm.requests) == calls + 1  # its first call was cut short, and no other was made
    sid = page.evaluate("localStorage.getItem('question-app.session')")
    assert httpx.get(f"{base}/sessions/{sid}", timeout=10).json()["rounds_played"] == 1
    fake_llm.latency_s = 0.0
    page.get_by_role("button", name="Next round").click()  # and the game goes on
    expect(page.locator("#rounds .round .verdict")).to_have_count(2, timeout=15_000)
    expect(page.locator("#rounds .round").first).to_contain_text("Round 2")


def test_a_named_learner_plays_at_an_adaptive_difficulty_and_the_page_says_why(page: Page, services,
                                                                               fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Grade", verdict="correct", feedback="Right.")
    open_page(page, services())
    page.get_by_label("Subject").fill("math")
    page.get_by_label("Difficulty").select_option("adaptive")
    page.get_by_label("Learner (optional)").fill("ana")
    page.get_by_role("button", name="Play a round").click()
    card = page.locator("#rounds .round").first
    expect(card.locator(".verdict")).to_have_text("✓ Correct", timeout=15_000)
    # A new learner: easy, where a right answer is predicted 78 % of the time, closest to the 70 % aimed at.
    expect(card.locator(".learning")).to_have_text(
        "Adaptive difficulty: easy, where ana was predicted right 78% of the time (aiming at 70%).")
    page.reload()  # the session remembers its learner and that it is adaptive
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.get_by_label("Learner (optional)")).to_have_value("ana")
    expect(page.get_by_label("Difficulty")).to_have_value("adaptive")
    expect(card.locator(".learning")).to_contain_text("Adaptive difficulty: easy")
    # The Student agent answered: a learner is a person, so the learner has nothing recorded.
    assert httpx.get(services() + "/learners/ana").status_code == 404


def test_a_person_asks_the_tutor_for_a_hint_and_the_page_shows_it_as_text(page: Page, services,
                                                                           fake_llm: FakeOpenAI) -> None:
    hostile = '<img src=x onerror="window.__pwned = 1">'
    fake_llm.script("Question", question="Which gas do plants take in?", reference_answer="carbon dioxide")
    fake_llm.script("Hint", hint=f"Think of what you breathe out {hostile}")
    fake_llm.script("Grade", verdict="correct", feedback="Yes.")
    open_page(page, services())
    page.get_by_label("I'll answer").check()
    page.get_by_role("button", name="Play a round").click()
    expect(page.locator("#answer")).to_be_focused(timeout=15_000)
    expect(page.locator("#hints-left")).to_have_text("2 hint(s) left")
    page.get_by_label("Your answer").fill("oxy")  # typed, then the person asks for help
    page.get_by_role("button", name="Hint").click()
    card = page.locator("#rounds .round").first
    hint = card.locator('.step[data-step="hint"]')
    expect(hint.locator(".step-text")).to_have_text(f"Think of what you breathe out {hostile}", timeout=15_000)
    expect(hint.locator(".who")).to_have_text("Tutor")
    expect(page.locator("#hints-left")).to_have_text("1 hint(s) left")
    expect(page.get_by_label("Your answer")).to_have_value("oxy")  # what was typed is kept
    assert page.evaluate("window.__pwned") is None and card.locator("img").count() == 0
    assert "carbon dioxide" not in page.evaluate(EVERYTHING_IN_THE_DOM)

    page.reload()  # the hint comes back with the question that waits
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(card.locator('.step[data-step="hint"] .step-text')).to_have_text(
        f"Think of what you breathe out {hostile}")
    expect(page.locator("#hints-left")).to_have_text("1 hint(s) left")
    page.get_by_label("Your answer").fill("carbon dioxide")
    page.get_by_role("button", name="Submit answer").click()
    expect(card.locator(".verdict")).to_have_text("✓ Correct", timeout=15_000)
    expect(card.locator(".hinted")).to_have_text("Answered after 1 hint(s): 50% credit.")


def test_a_multiple_choice_question_is_answered_by_choosing_an_option(page: Page, services,
                                                                      fake_llm: FakeOpenAI) -> None:
    hostile = '<img src=x onerror="window.__pwned = 1">'
    options = ["Sydney", "Canberra", f"Melbourne {hostile}", "Perth"]
    fake_llm.script("Question", question="What is the capital of Australia?", reference_answer="Canberra",
                    options=options)
    open_page(page, services())
    page.get_by_label("Question").select_option("choice")
    page.get_by_label("I'll answer").check()
    page.get_by_role("button", name="Play a round").click()
    card = page.locator("#rounds .round").first
    expect(card.locator(".options .option")).to_have_text(options, timeout=15_000)  # as text, lettered A–D
    assert page.evaluate("window.__pwned") is None and card.locator("img").count() == 0
    card.get_by_role("button", name="Answer B: Canberra").click()
    expect(card.locator(".verdict")).to_have_text("✓ Correct", timeout=15_000)
    expect(card.locator(".answer-text")).to_have_text("B")
    expect(card.locator(".feedback")).to_have_text("Right: B) Canberra.")
    assert fake_llm.requests_for("Grade") == []  # graded exactly
    page.reload()  # the session remembers the format, and the round its options
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.get_by_label("Question")).to_have_value("choice")
    expect(card.locator(".options .option")).to_have_text(options)
