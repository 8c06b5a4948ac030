// The quiz in a browser: plays rounds through POST /ask (server-sent events), restores a session with
// GET /sessions/{id}, rates rounds. Same origin only; no dependencies, no build step.
// A round outlives its connection (docs/reference/api.md "Rounds outlive their connection"): each has an Idempotency-Key, a
// dropped stream is resumed from its last event id (GET /sessions/{id}/round with Last-Event-ID), and Stop
// is DELETE /sessions/{id}/round.
// Model text is always inserted as text (textContent), never as markup.

const TEXT = {
  en: {
    skip: "Skip to the game", title: "Teacher–Student quiz", settings: "Round settings", language: "Language",
    subject: "Subject", difficulty: "Difficulty", easy: "easy", medium: "medium", hard: "hard",
    who: "Who answers", student_model: "The Student agent", student_person: "I'll answer",
    message: "Or say it in your own words (optional)", message_example: "e.g. a hard history question",
    play: "Play a round", next: "Next round", new_session: "New session", score: "Score",
    retry: "Try again", your_answer: "Your answer", submit_answer: "Submit answer", rounds: "Rounds",
    key_title: "API key required", api_key: "API key", save: "Save",
    key_help: "This service asks for an API key. It is kept in this tab only and sent in a header.",
    teacher: "Teacher", student: "Student", you: "You", reference: "Reference answer", trace: "Trace",
    copy: "Copy", copied: "Copied", open_app_insights: "Open in Application Insights",
    rate_round: "Was this round fair?", thumbs_up: "▲ Thumbs up", thumbs_down: "▼ Thumbs down",
    comment: "Comment (optional)", thanks: "Thank you — feedback recorded.",
    round_n: "Round {n}", tokens: "{n} tokens",
    bank_item: "From the question bank ({id}), checked against its reference answer.",
    adaptive: "adaptive (needs a learner)", learner: "Learner (optional)", learner_example: "e.g. ana",
    review_note: "Asked again: {learner} missed this question before.",
    adaptive_note: "Adaptive difficulty: {difficulty}, where {learner} was predicted right {p}% of the time (aiming at {target}%).",
    teacher_said: "The Teacher graded it: {verdict}.",
    correct: "✓ Correct", partially_correct: "◐ Partially correct", incorrect: "✗ Incorrect",
    no_rounds: "No rounds yet: play one.",
    score_line: "Rounds played: {played} · correct {correct} of the last {kept} · accuracy {accuracy}",
    asking: "The Teacher is writing a question…", answering: "The Student is answering…",
    grading: "The Teacher is grading…", step_done: "{speaker} has spoken…", awaiting: "Your turn: answer the Teacher's question.",
    finished: "Round {n} graded: {verdict}.", retry_in: "You can try again in {s} s.",
    retry_now: "You can try again now.", embedded: "Embedded demo model ({model}): its answers are poor, the play is real.",
    model: "Model: {model}", network: "The service could not be reached",
    network_detail: "Check that question-app is running, then try again.",
    restored: "Session restored: {n} round(s).",
    stop: "Stop", stopping: "Stopping the round…", stopped: "Round stopped: the session is as it was before it.",
    reconnecting: "Connection lost — reconnecting…", lost: "The connection to the round was lost",
    lost_detail: "It may have finished: reload the page to see the session, or play again.",
    format: "Question", format_open: "open answer", format_choice: "multiple choice",
    choose: "Answer {letter}",
    hint: "Hint", hints_left: "{n} hint(s) left", no_hints_left: "No hints left", tutor: "Tutor",
    hinting: "The Tutor is finding a hint…", hinted_note: "Answered after {n} hint(s): {credit}% credit.",
  },
  ko: {
    skip: "게임으로 건너뛰기", title: "선생님–학생 퀴즈", settings: "라운드 설정", language: "언어",
    subject: "주제", difficulty: "난이도", easy: "쉬움", medium: "보통", hard: "어려움",
    who: "누가 답하나요", student_model: "학생 에이전트", student_person: "제가 답할게요",
    message: "또는 자유롭게 입력 (선택)", message_example: "예: 어려운 역사 문제",
    play: "라운드 시작", next: "다음 라운드", new_session: "새 세션", score: "점수",
    retry: "다시 시도", your_answer: "나의 답", submit_answer: "답 제출", rounds: "라운드",
    key_title: "API 키가 필요합니다", api_key: "API 키", save: "저장",
    key_help: "이 서비스는 API 키를 요구합니다. 키는 이 탭에만 보관되고 헤더로 전송됩니다.",
    teacher: "선생님", student: "학생", you: "나", reference: "모범 답안", trace: "트레이스",
    copy: "복사", copied: "복사됨", open_app_insights: "Application Insights에서 열기",
    rate_round: "이 라운드는 공정했나요?", thumbs_up: "▲ 좋아요", thumbs_down: "▼ 싫어요",
    comment: "의견 (선택)", thanks: "감사합니다 — 피드백이 기록되었습니다.",
    round_n: "{n}라운드", tokens: "토큰 {n}개",
    bank_item: "문제 은행 문항({id}): 모범 답안과 대조해 채점했습니다.",
    adaptive: "적응형 (학습자 필요)", learner: "학습자 (선택)", learner_example: "예: ana",
    review_note: "복습 문제: {learner}님이 전에 틀린 문제입니다.",
    adaptive_note: "적응형 난이도: {difficulty} — {learner}님의 예상 정답률 {p}% (목표 {target}%).",
    teacher_said: "선생님의 채점: {verdict}.",
    correct: "✓ 정답", partially_correct: "◐ 부분 정답", incorrect: "✗ 오답",
    no_rounds: "아직 라운드가 없습니다. 시작해 보세요.",
    score_line: "진행한 라운드: {played} · 최근 {kept}개 중 정답 {correct} · 정확도 {accuracy}",
    asking: "선생님이 문제를 내는 중…", answering: "학생이 답하는 중…", step_done: "{speaker}: 완료…",
    grading: "선생님이 채점하는 중…", awaiting: "내 차례: 선생님의 질문에 답하세요.",
    finished: "{n}라운드 채점 완료: {verdict}.", retry_in: "{s}초 후에 다시 시도할 수 있습니다.",
    retry_now: "지금 다시 시도할 수 있습니다.", embedded: "내장 데모 모델({model}): 답의 품질은 낮지만 진행은 실제입니다.",
    model: "모델: {model}", network: "서비스에 연결할 수 없습니다",
    network_detail: "question-app이 실행 중인지 확인한 뒤 다시 시도하세요.",
    restored: "세션 복원됨: {n}개 라운드.",
    stop: "중지", stopping: "라운드를 중지하는 중…", stopped: "라운드가 중지되었습니다: 세션은 그 전과 같습니다.",
    reconnecting: "연결이 끊겼습니다 — 다시 연결하는 중…", lost: "라운드와의 연결이 끊겼습니다",
    lost_detail: "이미 끝났을 수 있습니다: 페이지를 새로 고쳐 세션을 확인하거나 다시 시작하세요.",
    format: "문제 형식", format_open: "주관식", format_choice: "객관식", choose: "{letter} 선택",
    hint: "힌트", hints_left: "남은 힌트 {n}개", no_hints_left: "남은 힌트 없음", tutor: "튜터",
    hinting: "튜터가 힌트를 찾는 중…", hinted_note: "힌트 {n}개를 본 뒤의 답: 점수 {credit}%.",
  },
};
const SESSION_KEY = "question-app.session";
const API_KEY = "question-app.api-key";

const $ = (selector, root = document) => root.querySelector(selector);
const ui = {
  setup: $("#setup"), language: $("#language"), subject: $("#subject"), difficulty: $("#difficulty"), learner: $("#learner"),
  format: $("#format"),
  message: $("#message"), play: $("#play"), stop: $("#stop"), newSession: $("#new-session"), score: $("#score"),
  progress: $("#progress"), problem: $("#problem"), problemTitle: $("#problem-title"),
  problemDetail: $("#problem-detail"), problemRetry: $("#problem-retry"), retry: $("#retry"),
  answerForm: $("#answer-form"), answer: $("#answer"), submitAnswer: $("#submit-answer"), rounds: $("#rounds"),
  hint: $("#hint"), hintsLeft: $("#hints-left"),
  keyDialog: $("#key-dialog"), keyForm: $("#key-form"), apiKey: $("#api-key"), model: $("#model"),
};

const state = {
  lang: "en", config: null, sessionId: localStorage.getItem(SESSION_KEY), played: 0, kept: [],
  busy: false, retryAt: 0, lastAction: null, card: null, keyWaiters: [], streaming: false,
  hintsLeft: 0, typed: "",  // the question that waits: hints the person may still ask for, what they typed
};
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000];  // then the round is given up as lost
const LAST_EVENTS = new Set(["round", "awaiting_answer", "error", "cancelled"]);  // a stream's possible ends

function t(key, values = {}) {
  const template = (TEXT[state.lang] && TEXT[state.lang][key]) || TEXT.en[key] || key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}

function setLanguage(lang) {
  state.lang = lang === "ko" ? "ko" : "en";
  document.documentElement.lang = state.lang;
  ui.language.value = state.lang;
  translate();
  for (const card of ui.rounds.children) relabel(card);
  showModel();
  showScore();
  ui.play.textContent = t(state.sessionId ? "next" : "play");
}

// --- talking to the service --------------------------------------------------------------------------
function headers(extra = {}) {
  const h = { ...extra };
  const key = sessionStorage.getItem(API_KEY);
  if (key) h.Authorization = `Bearer ${key}`;  // a header, never the URL
  return h;
}

async function call(path, { method = "GET", body, accept = "application/json", extra = {} } = {}) {
  const init = { method, headers: headers({ Accept: accept, ...extra }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw { title: t("network"), detail: t("network_detail"), status: 0 };
  }
  if (response.status === 401 && state.config && state.config.auth_required) {
    sessionStorage.removeItem(API_KEY);
    await askForKey();
    return call(path, { method, body, accept, extra });
  }
  if (!response.ok) throw await problemOf(response);
  return response;
}

async function problemOf(response) {
  let problem = { title: `HTTP ${response.status}`, detail: response.statusText || "" };
  try {
    const body = await response.json();
    if (body && typeof body === "object") problem = body;
  } catch { /* not a problem body: keep the status line */ }
  const header = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  if (Number.isFinite(header)) problem.retry_after = header;
  return problem;
}

function askForKey() {
  return new Promise((resolve) => {
    state.keyWaiters.push(resolve);
    if (!ui.keyDialog.open) {
      ui.apiKey.value = "";
      ui.keyDialog.showModal();
      ui.apiKey.focus();
    }
  });
}

ui.keyForm.addEventListener("submit", () => {
  const key = ui.apiKey.value.trim();
  if (!key) return;
  sessionStorage.setItem(API_KEY, key);
  ui.apiKey.value = "";
  const waiters = state.keyWaiters.splice(0);
  for (const resolve of waiters) resolve();
});

// --- problems and retry ---------------------------------------------------------------------------------
let countdown = null;

function showProblem(problem) {
  ui.problemTitle.textContent = problem.title || "Error";
  ui.problemDetail.textContent = problem.detail || "";
  ui.problem.hidden = false;
  clearInterval(countdown);
  const wait = Number(problem.retry_after);
  if (Number.isFinite(wait) && wait > 0) {
    state.retryAt = Date.now() + wait * 1000;
    const tick = () => {
      const left = Math.ceil((state.retryAt - Date.now()) / 1000);
      if (left > 0) {
        ui.problemRetry.textContent = t("retry_in", { s: left });
        ui.retry.disabled = true;
        ui.play.disabled = true;
      } else {
        clearInterval(countdown);
        ui.problemRetry.textContent = t("retry_now");
        ui.retry.disabled = false;
        ui.play.disabled = state.busy || !ui.answerForm.hidden;
      }
    };
    tick();
    countdown = setInterval(tick, 250);
  } else {
    state.retryAt = 0;
    ui.problemRetry.textContent = "";
    ui.retry.disabled = false;
  }
  ui.retry.hidden = !state.lastAction;
}

function clearProblem() {
  clearInterval(countdown);
  state.retryAt = 0;
  ui.problem.hidden = true;
  ui.problemTitle.textContent = ui.problemDetail.textContent = ui.problemRetry.textContent = "";
}

ui.retry.addEventListener("click", () => { if (state.lastAction) state.lastAction(); });

// --- rounds on screen ---------------------------------------------------------------------------------------
function newCard() {
  const card = $("#round-template").content.firstElementChild.cloneNode(true);
  translate(card);
  ui.rounds.prepend(card);
  return card;
}

function relabel(card) {
  translate(card);
  if (card.dataset.round) $(".round-title", card).textContent = t("round_n", { n: card.dataset.round });
  if (card.dataset.answeredBy) $(".student .who", card).textContent = t(card.dataset.answeredBy === "person" ? "you" : "student");
  if (card.dataset.verdict) $(".verdict", card).textContent = t(card.dataset.verdict);
  const checked = $(".checked", card);
  if (card.dataset.item) {
    checked.textContent = t("bank_item", { id: card.dataset.item }) + (card.dataset.teacherVerdict
      ? " " + t("teacher_said", { verdict: t(card.dataset.teacherVerdict) }) : "");
    checked.hidden = false;
  }
  const learning = $(".learning", card);
  if (card.dataset.learner && (card.dataset.review || card.dataset.adaptive)) {
    const learner = card.dataset.learner;
    if (card.dataset.review) learning.textContent = t("review_note", { learner });
    else {
      const choice = JSON.parse(card.dataset.adaptive);
      learning.textContent = t("adaptive_note", { learner, difficulty: t(choice.difficulty),
        p: Math.round(choice.predicted * 100), target: Math.round(choice.target * 100) });
    }
    learning.hidden = false;
  }
  if (card.dataset.tokens) $(".tokens", card).textContent = t("tokens", { n: card.dataset.tokens });
  if (card.dataset.hinted) {
    const hinted = $(".hinted", card);
    hinted.textContent = t("hinted_note", { n: card.dataset.hinted, credit: card.dataset.credit });
    hinted.hidden = false;
  }
  for (const who of card.querySelectorAll('.step[data-step="hint"] .who')) who.textContent = t("tutor");
}

function showQuestion(card, round, question, options = []) {
  card.dataset.round = round;
  $(".question", card).textContent = question;
  if (options.length) showOptions(card, options);
  relabel(card);
}

// A multiple-choice question's options, lettered by the list (A, B …), each as text; while the question waits
// for the person's answer, each is a button that answers with its letter.
function showOptions(card, options) {
  const list = $(".options", card);
  list.replaceChildren(...options.map((option, index) => {
    const item = document.createElement("li");
    const letter = "ABCDE"[index];
    const button = document.createElement("button");
    button.type = "button";
    button.className = "option";
    button.dataset.letter = letter;
    button.textContent = option;
    button.setAttribute("aria-label", `${t("choose", { letter })}: ${option}`);
    button.addEventListener("click", () => {
      if (state.card !== card || card.dataset.state !== "awaiting") return;
      ui.answer.value = letter;
      submitAnswer();
    });
    item.append(button);
    return item;
  }));
  list.hidden = false;
}

function showAnswer(card, answer, answeredBy) {
  card.dataset.answeredBy = answeredBy || "model";
  $(".answer-text", card).textContent = answer;
  $(".student", card).hidden = false;
  relabel(card);
}

// A step this page has no place of its own for: its speaker, what it said and its outcome, as text, in the
// order it came (before the first turn not yet shown).
function showStep(card, event) {
  const turn = document.createElement("div");
  turn.className = "turn step";
  turn.dataset.step = event.step;
  const who = document.createElement("p");
  who.className = "who";
  who.textContent = event.speaker;
  const said = document.createElement("p");
  said.className = "step-text";
  said.textContent = event.outcome ? `${event.outcome}: ${event.text}` : event.text;
  turn.append(who, said);
  const next = [".student", ".grade"].map((selector) => $(selector, card)).find((el) => el.hidden);
  card.insertBefore(turn, next || $(".meta", card));
  ui.progress.textContent = t("step_done", { speaker: event.speaker });
}

function showGrade(card, verdict, feedback) {
  card.dataset.verdict = verdict;
  card.classList.add(`verdict-${verdict}`);
  $(".feedback", card).textContent = feedback;
  $(".grade", card).hidden = false;
  relabel(card);
}

function showTrace(card, traceId) {
  if (!traceId) return;
  $(".trace-id", card).textContent = traceId;
  $(".meta", card).hidden = false;
  const template = state.config && state.config.app_insights_link_template;
  if (template) {
    const link = $(".ai-link", card);
    link.href = template.replaceAll("{trace_id}", encodeURIComponent(traceId));
    link.hidden = false;
  }
}

function showFinished(card, round) {
  showAnswer(card, round.student_answer ?? round.answer, round.answered_by);
  showGrade(card, round.verdict, round.feedback);
  $(".reference-text", card).textContent = round.reference_answer;
  $(".reference", card).hidden = false;
  const learner = round.learner_id || ui.learner.value.trim();
  if (learner && (round.review || round.adaptive)) {  // a named learner's round: a review, or adaptive
    card.dataset.learner = learner;
    if (round.review) card.dataset.review = "true";
    if (round.adaptive) card.dataset.adaptive = JSON.stringify(round.adaptive);
  }
  if (round.item_id) {  // a question bank's item: its check gave the verdict, the Teacher's grade beside it
    card.dataset.item = round.item_id;
    if (round.checked_by && round.teacher_verdict && round.teacher_verdict !== round.verdict) {
      card.dataset.teacherVerdict = round.teacher_verdict;
    }
  }
  if (round.hints && round.hints.length) {  // a person asked the Tutor: say what the answer earned
    card.dataset.hinted = round.hints.length;
    card.dataset.credit = Math.round((round.credit ?? 0.5) * 100);
  }
  const usage = round.usage ? round.usage.total_tokens : (round.input_tokens || 0) + (round.output_tokens || 0);
  if (usage) card.dataset.tokens = usage;
  showTrace(card, round.trace_id);
  $(".rate", card).hidden = false;
  relabel(card);
}

function clearRounds() {
  ui.rounds.replaceChildren();
  state.kept = [];
  state.played = 0;
}

function showScore() {
  if (!state.sessionId || (!state.played && !state.kept.length)) {
    ui.score.textContent = t("no_rounds");
    return;
  }
  const correct = state.kept.filter((r) => r.verdict === "correct").length;
  const accuracy = state.kept.length ? `${Math.round((100 * correct) / state.kept.length)}%` : "–";
  ui.score.textContent = t("score_line", { played: state.played, correct, kept: state.kept.length, accuracy });
}

function remember(sessionId) {
  state.sessionId = sessionId;
  if (sessionId) localStorage.setItem(SESSION_KEY, sessionId);
  else localStorage.removeItem(SESSION_KEY);
  ui.play.textContent = t(sessionId ? "next" : "play");
}

// The question of `card` waits for the person's answer (`typed` so far), with `hintsLeft` hints to ask for.
function awaitAnswer(card, typed = "", hintsLeft = state.hintsLeft) {
  state.card = card;
  card.dataset.state = "awaiting";
  state.hintsLeft = hintsLeft;
  ui.answerForm.hidden = false;
  ui.answer.value = typed;
  ui.hint.disabled = !hintsLeft;
  ui.hintsLeft.textContent = hintsLeft ? t("hints_left", { n: hintsLeft }) : t("no_hints_left");
  ui.progress.textContent = t("awaiting");
  ui.play.disabled = true;
  ui.answer.focus();
}

// The hints a question got, as the Tutor's turns (a restored session's, or a kept round's).
function showHints(card, hints) {
  for (const text of hints || []) showStep(card, { step: "hint", speaker: t("tutor"), text });
}

// --- playing --------------------------------------------------------------------------------------------------
function settings() {
  const body = {};
  const message = ui.message.value.trim();
  const subject = ui.subject.value.trim();
  if (message) body.message = message;
  if (subject) body.subject = subject;
  body.difficulty = ui.difficulty.value;
  body.format = ui.format.value;
  const learner = ui.learner.value.trim();
  if (learner) body.learner_id = learner;
  body.language = state.lang;
  body.student = ui.setup.elements.student.value;
  if (state.sessionId) body.session_id = state.sessionId;
  return body;
}

function setBusy(busy) {
  state.busy = busy;
  ui.play.disabled = busy || Date.now() < state.retryAt || !ui.answerForm.hidden;  // a question waits: answer it
  ui.newSession.disabled = busy;
  ui.stop.disabled = !(busy && state.streaming && state.sessionId);
  ui.submitAnswer.disabled = busy;
  ui.hint.disabled = busy || !state.hintsLeft;
  ui.rounds.setAttribute("aria-busy", String(busy));
}

// One round's stream: POST /ask with a fresh Idempotency-Key; when the connection drops before the stream's
// last event, resume it — GET /sessions/{id}/round once the session is known, else the same POST with the
// same key — from the last event id, after 0.5, 1, 2, 4, 8 s. Every event is shown once.
async function stream(body, card) {
  const key = crypto.randomUUID();
  const seen = { lastId: "", ended: false, failed: false };
  state.streaming = true;
  setBusy(true);
  clearProblem();
  for (let attempt = 0; ; attempt += 1) {
    const resume = seen.lastId ? { "Last-Event-ID": seen.lastId } : {};
    const request = attempt > 0 && state.sessionId && seen.lastId
      ? call(`/sessions/${encodeURIComponent(state.sessionId)}/round`, { accept: "text/event-stream", extra: resume })
      : call("/ask", { method: "POST", body, accept: "text/event-stream", extra: { "Idempotency-Key": key, ...resume } });
    try {
      await readEvents(await request, card, seen);
      if (seen.ended) break;  // the stream ended with its last event
    } catch (problem) {
      if (!(problem instanceof Error) && problem.status !== 0) {  // the service answered with a problem
        seen.failed = true;
        showProblem(problem);
        break;
      }
    }
    if (attempt >= RECONNECT_DELAYS_MS.length) {  // the round cannot be reached: give it up
      seen.failed = true;
      showProblem({ title: t("lost"), detail: t("lost_detail"), status: 0 });
      break;
    }
    ui.progress.textContent = t("reconnecting");
    await new Promise((resolve) => { setTimeout(resolve, RECONNECT_DELAYS_MS[attempt]); });
  }
  state.streaming = false;
  setBusy(false);
  const failed = seen.failed;
  if (failed && !card.dataset.verdict && card.dataset.state !== "awaiting") {
    if (body.hint) awaitAnswer(card, state.typed);  // no hint: the question waits as it was
    else if (body.answer === undefined) card.remove();  // a failed round leaves the session as it was
    else awaitAnswer(card, body.answer);  // the question still waits for an answer: keep what was typed
  }
  if (card.dataset.state !== "awaiting") ui.play.focus();
}

// A stream's events, each shown once: those at or before `seen.lastId` (sent again on a resume) are skipped.
async function readEvents(response, card, seen) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseEvent(block);
      if (!event || (event.id && seen.lastId && !after(event.id, seen.lastId))) continue;
      if (event.id) seen.lastId = event.id;
      seen.failed = handle(event, card) || seen.failed;
      if (state.sessionId) ui.stop.disabled = !state.busy;  // the round can be stopped once its session is known
      if (LAST_EVENTS.has(event.name)) seen.ended = true;
    }
  }
}

// Whether event id `id` comes after `last` (ids are "<attempt>.<n>", docs/reference/api.md "Rounds outlive their connection").
function after(id, last) {
  const [a, n] = id.split(".").map(Number);
  const [b, m] = last.split(".").map(Number);
  return a > b || (a === b && n > m);
}

function parseEvent(block) {
  let name = "message";
  let id = "";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { name, id, payload: JSON.parse(data.join("\n")) } : null;
}

// One server-sent event; returns true when it ended the round without a result (`error`, `cancelled`).
function handle({ name, payload }, card) {
  switch (name) {
    case "trace":
      remember(payload.session_id);
      showTrace(card, payload.trace_id);
      if (!card.dataset.round) ui.progress.textContent = t("asking");
      break;
    case "question":
      showQuestion(card, payload.round, payload.question, payload.options || []);
      ui.progress.textContent = t(settingsStudent() === "person" ? "awaiting" : "answering");
      break;
    case "answer":
      showAnswer(card, payload.student_answer, payload.answered_by);
      ui.progress.textContent = t("grading");
      break;
    case "grade":
      showGrade(card, payload.verdict, payload.feedback);
      break;
    case "round":
      card.dataset.state = "graded";
      showFinished(card, payload);
      state.played = payload.round;
      state.kept.push(payload);
      ui.progress.textContent = t("finished", { n: payload.round, verdict: t(payload.verdict) });
      ui.answerForm.hidden = true;
      ui.message.value = "";
      showScore();
      break;
    case "awaiting_answer":
      showQuestion(card, payload.round, payload.question, payload.options || []);
      awaitAnswer(card, state.typed || "", payload.hints_left);
      state.typed = "";
      break;
    case "error":
      showProblem(payload);
      return true;
    case "cancelled":  // Stop: the session is as it was before the round
      ui.progress.textContent = t("stopped");
      return true;
    default:
      // Any other step of the agent table (graphs/agents.py): every step event says who spoke and what.
      if (payload.speaker !== undefined && payload.text !== undefined) showStep(card, payload);
      break;
  }
  return false;
}

function settingsStudent() {
  return ui.setup.elements.student.value;
}

function play() {
  if (state.busy || Date.now() < state.retryAt) return;
  const body = settings();
  state.lastAction = play;
  const card = newCard();
  card.dataset.state = "playing";
  stream(body, card);
}

function submitAnswer() {
  const answer = ui.answer.value.trim();
  if (!answer || state.busy || !state.card) return;
  const card = state.card;
  card.dataset.state = "answering";
  ui.answerForm.hidden = true;
  state.lastAction = submitAnswer;
  ui.answer.value = answer;  // kept for a retry
  stream({ session_id: state.sessionId, answer }, card);
}

// A hint for the question that waits: the Tutor's turn joins the card, and the question waits again with
// what was typed so far.
function askHint() {
  if (state.busy || !state.card || !state.hintsLeft) return;
  const card = state.card;
  card.dataset.state = "hinting";
  state.typed = ui.answer.value;
  ui.answerForm.hidden = true;
  state.lastAction = askHint;
  ui.progress.textContent = t("hinting");
  stream({ session_id: state.sessionId, hint: true }, card);
}

ui.hint.addEventListener("click", askHint);
ui.setup.addEventListener("submit", (event) => { event.preventDefault(); play(); });
ui.answerForm.addEventListener("submit", (event) => { event.preventDefault(); submitAnswer(); });
ui.newSession.addEventListener("click", () => {
  remember(null);
  clearRounds();
  clearProblem();
  ui.answerForm.hidden = true;
  ui.play.disabled = false;
  ui.progress.textContent = "";
  showScore();
  ui.subject.focus();
});
ui.language.addEventListener("change", () => setLanguage(ui.language.value));
ui.stop.addEventListener("click", async () => {
  if (!state.streaming || !state.sessionId) return;
  ui.stop.disabled = true;
  ui.progress.textContent = t("stopping");
  try {
    await call(`/sessions/${encodeURIComponent(state.sessionId)}/round`, { method: "DELETE" });
  } catch (problem) {
    if (problem.status !== 404) showProblem(problem);  // 404: it had already ended, as the stream will show
  }
});

// --- copying trace ids and rating rounds ---------------------------------------------------------------------
ui.rounds.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  const card = button.closest(".round");
  if (button.classList.contains("copy")) {
    const traceId = $(".trace-id", card).textContent;
    try {
      await navigator.clipboard.writeText(traceId);
    } catch {
      const range = document.createRange();  // no clipboard permission: select it for Ctrl+C
      range.selectNodeContents($(".trace-id", card));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
    button.textContent = t("copied");
    setTimeout(() => { button.textContent = t("copy"); }, 1500);
  } else if (button.classList.contains("up") || button.classList.contains("down")) {
    const rating = button.classList.contains("up") ? "up" : "down";
    const comment = $(".comment", card).value.trim();
    const body = comment ? { rating, comment } : { rating };
    try {
      await call(`/sessions/${encodeURIComponent(state.sessionId)}/rounds/${card.dataset.round}/feedback`,
        { method: "POST", body });
      for (const b of card.querySelectorAll(".rate button")) {
        b.setAttribute("aria-pressed", String(b === button));
        b.disabled = true;
      }
      $(".comment", card).disabled = true;
      $(".rate-status", card).textContent = t("thanks");
    } catch (problem) {
      state.lastAction = null;
      showProblem(problem);
    }
  }
});

// --- start: configuration, then the session kept from an earlier visit ------------------------------------------------
function showModel() {
  const config = state.config;
  if (!config) return;
  ui.model.textContent = t(config.embedded ? "embedded" : "model", { model: config.model });
  ui.model.hidden = false;
}

async function restore() {
  if (!state.sessionId) return;
  let session;
  try {
    session = await (await call(`/sessions/${encodeURIComponent(state.sessionId)}`)).json();
  } catch (problem) {
    if (problem.status === 404) remember(null);
    else { state.lastAction = restore; showProblem(problem); }
    return;
  }
  clearRounds();
  remember(session.session_id);
  ui.subject.value = session.subject;
  ui.difficulty.value = session.adaptive ? "adaptive" : session.difficulty;
  ui.format.value = session.format || "open";
  ui.learner.value = session.learner_id || "";
  ui.setup.elements.student.value = session.student;
  setLanguage(session.language);
  state.played = session.rounds_played;
  state.kept = session.rounds;
  for (const round of session.rounds) {
    const card = newCard();
    card.dataset.state = "graded";
    showQuestion(card, round.round, round.question, round.options || []);
    showHints(card, round.hints);
    showFinished(card, round);
  }
  if (session.awaiting_answer) {
    const card = newCard();
    const { round, question, hints, options } = session.awaiting_answer;
    showQuestion(card, round, question, options || []);
    showHints(card, hints);
    awaitAnswer(card, "", Math.max((state.config.hints_per_round ?? 0) - hints.length, 0));
  }
  ui.progress.textContent = t("restored", { n: session.rounds.length });
  showScore();
}

async function start() {
  setLanguage(navigator.language && navigator.language.startsWith("ko") ? "ko" : "en");
  try {
    state.config = await (await fetch("/ui/config", { headers: { Accept: "application/json" } })).json();
  } catch {
    state.config = { auth_required: false, app_insights_link_template: null, model: "", embedded: false,
      hints_per_round: 0 };
  }
  showModel();
  if (state.config.auth_required && !sessionStorage.getItem(API_KEY)) await askForKey();
  await restore();
  document.body.dataset.ready = "true";
}

start();
