"""The telemetry contract in code: every name and bounded value the service emits that is ours to choose.

This module is the only place those names are spelled. ``graphs/`` and ``app/`` import them from here; it
depends on the OpenTelemetry *API* and the semantic-conventions package only, so the graph may import it
and ``telemetry/`` never imports the graph. Names that come from instrumentation libraries
(``http.server.request.duration``, ``gen_ai.client.operation.duration``, ``chat {model}`` spans …) and
from the semantic conventions (``gen_ai.*``, ``error.type``) are listed in ``docs/telemetry.md``;
``tests/test_contract.py`` checks the service, this module and that page against each other.

Metric labels are bounded: every label value below is one of a closed set. A free-text subject becomes
``other`` (``subject_label``); session ids appear only on spans (``gen_ai.conversation.id``), never on
metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from opentelemetry.metrics import Counter, Histogram, Meter, UpDownCounter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI

from quiz.vocabulary import Rating, Verdict, subject_of

# --- bounded values -------------------------------------------------------------------------------------
# The quiz's own words (difficulty, language, verdict, subject, who answered) are label values too; they live
# in ``quiz.vocabulary``. Agent and step names (``gen_ai.agent.name``, ``quiz.step``) are the graph's agent
# table (``graphs.agents``): bounded by it, not spelled here.
# ``error.type`` of a request answered with a problem body (``quiz.errors``, the workflow span):
ErrorType = Literal[
    "validation",  # 400 body not JSON, 408 body too slow, 413 body too large, 422 a field is wrong
    "unauthorized",  # 401: authentication is on and no valid credential was sent
    "limited",  # 429: the principal's rate limit or fair share of rounds in progress (app.limits)
    "unknown_route",  # 404 no such path, 405 no such method on it
    "session_not_found",  # 404: unknown or expired session id
    "learner_not_found",  # 404: no such learner for this client (app.learners)
    "round_not_found",  # 404: feedback for a round the session does not keep
    "round_in_progress",  # 409: a round of the same session is still playing
    "answer_awaited",  # 409: the session's round awaits a person's answer; a new round cannot start
    "no_answer_awaited",  # 409: an answer was sent, but no round of the session awaits one
    "no_hints_left",  # 409: a hint was asked for, and the round's HINTS_PER_ROUND were given (or hints are off)
    "cancelled",  # 409: the round was stopped by its client (DELETE /sessions/{id}/round) before it ended
    "round_lost",  # 503: the replica playing the round stopped or died mid-round; a retry plays it again
    "overloaded",  # 503: MAX_CONCURRENT_ROUNDS rounds already in progress
    "session_store",  # 503: the checkpointer's database is unreachable
    "identity_provider",  # 503: Entra ID's signing keys cannot be fetched to check a token
    "rate_limited",  # 503: the LLM answered 429 after the client's retries
    "timeout",  # 504: an LLM call timed out
    "auth",  # 502: the LLM refused our credentials
    "upstream",  # 502: any other LLM failure
    "invalid_output",  # 502: structured output invalid on every attempt
    "internal",  # 500: a bug
]
# The error types answered with a 5xx status (or ending a stream that had answered 200): failed rounds that
# are the service's or its dependencies' fault, as opposed to the caller's (4xx).
SERVER_ERROR_TYPES: Final[tuple[ErrorType, ...]] = (
    "overloaded", "round_lost", "session_store", "identity_provider", "rate_limited", "timeout", "auth", "upstream",
    "invalid_output", "internal")
# ``error.type`` of a failed agent step (``quiz.agent.step.duration``, the agent span) is the exception's
# class name, as the semantic conventions recommend when there is no better code (bounded: the set of
# exception classes the step can raise).
ERROR_TYPES: Final[tuple[ErrorType, ...]] = get_args(ErrorType)

# --- spans --------------------------------------------------------------------------------------------
WORKFLOW_NAME: Final = "quiz"
SPAN_ROUND: Final = f"{GenAI.GenAiOperationNameValues.INVOKE_WORKFLOW.value} {WORKFLOW_NAME}"  # INTERNAL


def agent_span_name(agent: str) -> str:
    """``invoke_agent {gen_ai.agent.name}``: INTERNAL, one per agent step, child of ``SPAN_ROUND``
    (GenAI agent spans, https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/)."""
    return f"{GenAI.GenAiOperationNameValues.INVOKE_AGENT.value} {agent}"


# Span event on an agent span when the model's structured output did not validate (it is asked again).
EVENT_INVALID_OUTPUT: Final = "structured_output.invalid"
EVENT_ATTR_ATTEMPT: Final = "attempt"  # int, 1-based
EVENT_ATTR_SCHEMA: Final = "schema"  # the pydantic model's name: Question | StudentAnswer | Grade

# The Teacher's grade as a GenAI evaluation (``gen_ai.evaluation.result`` event, a log record with this
# event name): ``gen_ai.evaluation.name`` is ``EVALUATION_CORRECTNESS``, ``gen_ai.evaluation.score.label`` the
# verdict, ``gen_ai.evaluation.score.value`` its score below.
EVENT_EVALUATION_RESULT: Final = "gen_ai.evaluation.result"
EVALUATION_CORRECTNESS: Final = "correctness"
VERDICT_SCORES: Final[dict[Verdict, float]] = {"correct": 1.0, "partially_correct": 0.5, "incorrect": 0.0}
# A person's feedback on a graded round, as an evaluation of it: ``gen_ai.evaluation.name`` is
# ``EVALUATION_USER_FEEDBACK``, the label the rating, the explanation the comment (content).
EVALUATION_USER_FEEDBACK: Final = "user_feedback"
RATING_SCORES: Final[dict[Rating, float]] = {"up": 1.0, "down": 0.0}

# --- attributes (ours; gen_ai.* and error.type come from the semantic conventions) ---------------------
ATTR_SUBJECT: Final = "quiz.subject"  # bounded: SUBJECTS or OTHER_SUBJECT
ATTR_DIFFICULTY: Final = "quiz.difficulty"
ATTR_LANGUAGE: Final = "quiz.language"
ATTR_ROUND: Final = "quiz.round"  # int: the number of the round being played, 1-based
ATTR_VERDICT: Final = "quiz.verdict"
# Questions from a question bank (quiz.bank): where the round's question came from (QUESTION_SOURCES), on the
# round span and quiz.rounds; the bank item's id (spans only: a bank may hold thousands); on the grading span,
# the item's mechanical check that gave the verdict and the Teacher's own verdict beside it.
ATTR_QUESTION_SOURCE: Final = "quiz.question.source"
QUESTION_BANK: Final = "bank"
QUESTION_GENERATED: Final = "generated"
QUESTION_SOURCES: Final = (QUESTION_BANK, QUESTION_GENERATED)
ATTR_QUESTION_ITEM: Final = "quiz.question.item"
# open (an answer in the Student's words) or choice (multiple choice, graded exactly: quiz.choice), on the round
# span and quiz.rounds.
ATTR_QUESTION_FORMAT: Final = "quiz.question.format"
# A named learner's round (app.learners; the learner's id is never on telemetry): whether it asked a new question
# or a review due, how its difficulty was chosen, and — on quiz.learner.rounds — the learner's predicted chance
# of a right answer, floored to a tenth ("0.0" … "0.9"), beside the verdict: predicted against actual success.
ATTR_ROUND_KIND: Final = "quiz.round.kind"
ROUND_KINDS: Final = ("new", "review")
ATTR_DIFFICULTY_CHOSEN_BY: Final = "quiz.difficulty.chosen_by"
DIFFICULTY_CHOOSERS: Final = ("adaptive", "fixed")
ATTR_PREDICTION_BIN: Final = "quiz.prediction.bin"
# Hints (graphs.nodes.tutor_hint): how many the person had before answering, 0 … HINTS_PER_ROUND (at most 5), on
# the round span of their answer and on quiz.learner.rounds.
ATTR_HINTS_USED: Final = "quiz.hints.used"
ATTR_GRADE_CHECK: Final = "quiz.grade.check"  # numeric | contains
ATTR_TEACHER_VERDICT: Final = "quiz.grade.teacher_verdict"  # VERDICTS
ATTR_STEP: Final = "quiz.step"  # a step of the agent table (graphs/agents.py): ask, answer, grade …
ATTR_STEP_OUTCOME: Final = "quiz.step.outcome"  # the bounded outcome a step reports (the table's ``outcomes``)
ATTR_RATING: Final = "quiz.rating"
# quiz.admissions: whether a round was let in, and which limit refused it (app.limits); the principal only when
# the operator opts in (METRICS_PRINCIPAL_LABEL), as each principal is a new series.
ATTR_ADMISSION_OUTCOME: Final = "quiz.admission.outcome"
ADMITTED: Final = "allowed"
LIMITED: Final = "limited"
ATTR_LIMIT: Final = "quiz.limit"  # rounds | tokens | fair_share | capacity (app.limits), only when limited
ATTR_PRINCIPAL: Final = "quiz.principal"  # app.auth.Principal.id, opt-in
ATTR_ANSWERED_BY: Final = "quiz.answered_by"  # STUDENTS: who played the Student in the round
ATTR_COST: Final = "quiz.cost.usd"  # double, US dollars: the round's LLM spend by the price table (telemetry/cost.py)
ATTR_PROMPT_VERSION: Final = "quiz.prompt.version"  # the agent's prompt version (graphs/prompt_files), with
# gen_ai.prompt.name (the prompt's name: the agent's) on every agent span
# Evaluation (``question-app eval``): the item of the set, the run, the set's version, and which judge.
ATTR_EVAL_ITEM: Final = "quiz.eval.item"  # the item's id in evals/questions.yaml (spans and events only)
ATTR_EVAL_RUN: Final = "quiz.eval.run"  # the run's id (spans and events only)
ATTR_EVAL_SET_VERSION: Final = "quiz.eval.set_version"  # int
ATTR_EVAL_JUDGE: Final = "quiz.eval.judge"  # JUDGES
# "true" | "false": whether the two judges agree on the item (correct / not correct), on quiz.eval.items
ATTR_EVAL_AGREED: Final = "quiz.eval.agreed"
# "true" | "false": whether an injection item's hostile answer got a verdict other than the one it deserves, on
# quiz.eval.attacks (the attack success rate = "true" / all, per judge)
ATTR_EVAL_ATTACK_SUCCEEDED: Final = "quiz.eval.attack_succeeded"
JUDGE_TEACHER: Final = "teacher"  # the Teacher's grading step, as in live rounds
JUDGE_STRICT: Final = "strict"  # a mechanical check against the reference, else an independent judge prompt
JUDGES: Final = (JUDGE_TEACHER, JUDGE_STRICT)
# Prompt optimisation (``question-app optimize``): one trace per search, a span per round and candidate.
SPAN_OPTIMIZE: Final = "quiz.optimize"  # INTERNAL, root: gen_ai.prompt.name, quiz.prompt.version (the start)
SPAN_OPTIMIZE_ROUND: Final = "quiz.optimize.round"
SPAN_OPTIMIZE_CANDIDATE: Final = "quiz.optimize.candidate"  # the candidate scored on a split; items beneath
ATTR_OPTIMIZE_ROUND: Final = "quiz.optimize.round"  # int: 0 for the start, then 1, 2, …
ATTR_OPTIMIZE_CANDIDATE: Final = "quiz.optimize.candidate"  # the candidate's id (r1.2-v1: round, index, parent)
ATTR_OPTIMIZE_SPLIT: Final = "quiz.optimize.split"  # train | validation
ATTR_OPTIMIZE_SCORE: Final = "quiz.optimize.score"  # double: the strict judge's accuracy on the split
# A candidate's score as a GenAI evaluation: label the split, value the accuracy.
EVALUATION_PROMPT_ACCURACY: Final = "prompt_accuracy"
# A resource attribute on everything a process emits: live traffic (the service) or an evaluation run.
RESOURCE_TRAFFIC: Final = "quiz.traffic"
TRAFFIC_LIVE: Final = "live"
TRAFFIC_EVALUATION: Final = "evaluation"

# --- metrics ------------------------------------------------------------------------------------------
METRIC_ROUNDS: Final = "quiz.rounds"
METRIC_STEP_DURATION: Final = "quiz.agent.step.duration"
METRIC_STEP_OUTCOMES: Final = "quiz.agent.step.outcomes"
METRIC_ERRORS: Final = "quiz.errors"
METRIC_FEEDBACK: Final = "quiz.feedback"
METRIC_EVAL_ITEMS: Final = "quiz.eval.items"
METRIC_EVAL_ATTACKS: Final = "quiz.eval.attacks"
METRIC_LLM_COST: Final = "quiz.llm.cost.usd"
METRIC_ADMISSIONS: Final = "quiz.admissions"
METRIC_LEARNER_ROUNDS: Final = "quiz.learner.rounds"
METRIC_HINTS: Final = "quiz.hints"
# Rounds this process is playing now, and how many it may (MAX_CONCURRENT_ROUNDS): what the autoscaler reads
# (deploy/scaled). UpDownCounters, singular names as the conventions ask of them (``cicd.pipeline.run.active``;
# ``.limit`` for a known total: semantic conventions, general/naming.md), no attributes: one series per pod.
METRIC_ROUND_ACTIVE: Final = "quiz.round.active"
METRIC_ROUND_LIMIT: Final = "quiz.round.limit"

# Seconds; an agent step is one LLM call (plus a retry on invalid output): 10 ms … 80 s.
STEP_DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                                40.96, 81.92)


# Seconds, for ``http.server.request.duration`` (an SDK View; the ASGI instrumentation's own buckets end at
# 10 s): a round is three LLM calls of seconds each, with retries, so its tail reaches minutes.
REQUEST_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0,
                                   30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)


def prediction_bin(predicted: float) -> str:
    """``quiz.prediction.bin`` of a predicted chance (0–1): floored to a tenth, ``"0.0"`` … ``"0.9"`` (bounded)."""
    return f"{min(max(int(predicted * 10), 0), 9) / 10:.1f}"


def subject_label(subject: str) -> str:
    """The bounded metric label for a free-text subject: a known subject, else ``other``."""
    return subject_of(subject)


@dataclass(frozen=True)
class QuizInstruments:
    """The service's own instruments (OTel names; Prometheus names after the Collector in brackets).

    - ``rounds``: Counter ``quiz.rounds`` {round} [``quiz_rounds_total``], attributes ``quiz.subject``
      (bounded), ``quiz.difficulty``, ``quiz.verdict``, ``quiz.answered_by`` (``STUDENTS``),
      ``quiz.question.source``, ``quiz.question.format`` — finished rounds; accuracy = correct / all, for the
      Student agent and for people apart.
    - ``step_duration``: Histogram ``quiz.agent.step.duration`` s [``quiz_agent_step_duration_seconds``],
      attributes ``gen_ai.agent.name`` (the agent table), ``quiz.step`` (its steps), ``error.type``.
    - ``step_outcomes``: Counter ``quiz.agent.step.outcomes`` {outcome} [``quiz_agent_step_outcomes_total``],
      attributes ``gen_ai.agent.name``, ``quiz.step``, ``quiz.step.outcome`` (each bounded by the agent table),
      ``quiz.subject`` (bounded), ``quiz.difficulty`` — one count per run of a step that reports an outcome (a
      grade's verdict, a review's ``accepted`` or ``rejected``).
    - ``errors``: Counter ``quiz.errors`` {error} [``quiz_errors_total``], attribute ``error.type``
      (``ERROR_TYPES``) — every request answered with a problem body, streamed or not.
    - ``feedback``: Counter ``quiz.feedback`` {feedback} [``quiz_feedback_total``], attributes ``quiz.rating``
      (``up``, ``down``) and the round's ``quiz.verdict`` — people's thumbs on graded rounds.
    - ``eval_items``: Counter ``quiz.eval.items`` {item} [``quiz_eval_items_total``], attributes
      ``quiz.eval.judge`` (``JUDGES``), ``quiz.verdict``, ``quiz.subject``, ``quiz.difficulty``,
      ``quiz.eval.agreed`` (``"true"``/``"false"``: the judges agree on correct / not correct) — evaluation
      items judged (``question-app eval``), one count per judge; injection items are not among them.
    - ``eval_attacks``: Counter ``quiz.eval.attacks`` {attack} [``quiz_eval_attacks_total``], attributes
      ``quiz.eval.judge``, ``quiz.verdict``, ``quiz.language``, ``quiz.eval.attack_succeeded`` (``"true"``/
      ``"false"``) — injection items judged (``question-app eval``), one count per judge; the attack success
      rate is ``"true"`` over all.
    - ``llm_cost``: Counter ``quiz.llm.cost.usd`` {USD} [``quiz_llm_cost_usd_total``], attributes
      ``gen_ai.request.model``, ``gen_ai.agent.name``, ``quiz.step`` — US dollars spent on the LLM, by the price
      table (``telemetry.cost``), one add per agent step that called it; live and evaluation traffic apart by
      the resource's ``quiz.traffic``. Not recorded for a model the table has no price for.
    - ``admissions``: Counter ``quiz.admissions`` {request} [``quiz_admissions_total``], attributes
      ``quiz.admission.outcome`` (``allowed``, ``limited``), ``quiz.limit`` (when limited: ``rounds``,
      ``tokens``, ``fair_share``, ``capacity``) and, opted in, ``quiz.principal`` — every request for a round
      (``/ask``, an AG-UI run) and what the client limits (``app.limits``) made of it.
    - ``learner_rounds``: Counter ``quiz.learner.rounds`` {round} [``quiz_learner_rounds_total``], attributes
      ``quiz.prediction.bin``, ``quiz.verdict``, ``quiz.answered_by``, ``quiz.round.kind``,
      ``quiz.difficulty.chosen_by`` — graded rounds of named learners (``app.learners``): the predicted chance
      of a right answer beside the verdict (the calibration panel), reviews apart from new questions; with
      ``quiz.hints.used`` (0 … ``HINTS_PER_ROUND``).
    - ``hints``: Counter ``quiz.hints`` {hint} [``quiz_hints_total``], attributes ``quiz.subject`` (bounded),
      ``quiz.difficulty``, ``quiz.language`` — hints the Tutor gave people playing the Student.
    - ``round_active``: UpDownCounter ``quiz.round.active`` {round} [``quiz_round_active``], no attributes —
      rounds admitted (``MAX_CONCURRENT_ROUNDS``'s places held) and not yet released by this process.
    - ``round_limit``: UpDownCounter ``quiz.round.limit`` {round} [``quiz_round_limit``], no attributes — the
      process's ``MAX_CONCURRENT_ROUNDS``: past it, a round is shed with 503. The autoscaler's query is
      ``quiz_round_active`` over it (deploy/scaled).
    """

    rounds: Counter
    step_duration: Histogram
    step_outcomes: Counter
    errors: Counter
    feedback: Counter
    eval_items: Counter
    eval_attacks: Counter
    llm_cost: Counter
    admissions: Counter
    learner_rounds: Counter
    hints: Counter
    round_active: UpDownCounter
    round_limit: UpDownCounter

    @classmethod
    def create(cls, meter: Meter) -> QuizInstruments:
        """Create the instruments on ``meter`` (the SDK returns the same instrument for the same name)."""
        return cls(
            rounds=meter.create_counter(METRIC_ROUNDS, unit="{round}", description="Quiz rounds played to a verdict."),
            step_duration=meter.create_histogram(
                METRIC_STEP_DURATION, unit="s", description="Duration of one agent step of a round.",
                explicit_bucket_boundaries_advisory=STEP_DURATION_BUCKETS),
            step_outcomes=meter.create_counter(METRIC_STEP_OUTCOMES, unit="{outcome}",
                                               description="Outcomes of agent steps, by agent, step and outcome."),
            errors=meter.create_counter(METRIC_ERRORS, unit="{error}",
                                        description="Requests answered with a problem body, by cause."),
            feedback=meter.create_counter(METRIC_FEEDBACK, unit="{feedback}",
                                          description="People's feedback on graded rounds, by rating and verdict."),
            eval_items=meter.create_counter(METRIC_EVAL_ITEMS, unit="{item}",
                                            description="Evaluation items judged, by judge and verdict."),
            eval_attacks=meter.create_counter(
                METRIC_EVAL_ATTACKS, unit="{attack}",
                description="Injection items judged, by judge, verdict and whether the attack succeeded."),
            llm_cost=meter.create_counter(METRIC_LLM_COST, unit="{USD}",
                                          description="US dollars spent on the LLM, by model, agent and step."),
            admissions=meter.create_counter(METRIC_ADMISSIONS, unit="{request}",
                                            description="Requests for a round, allowed or limited, by limit."),
            learner_rounds=meter.create_counter(
                METRIC_LEARNER_ROUNDS, unit="{round}",
                description="Graded rounds of named learners, by predicted success (a tenth), verdict, who answered, "
                            "new or review, and how the difficulty was chosen."),
            hints=meter.create_counter(METRIC_HINTS, unit="{hint}",
                                       description="Hints the Tutor gave people playing the Student."),
            round_active=meter.create_up_down_counter(METRIC_ROUND_ACTIVE, unit="{round}",
                                                      description="Rounds being played by this process now."),
            round_limit=meter.create_up_down_counter(
                METRIC_ROUND_LIMIT, unit="{round}",
                description="Rounds this process may play at once (MAX_CONCURRENT_ROUNDS)."),
        )
