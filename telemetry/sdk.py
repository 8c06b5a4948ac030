"""Built-in OpenTelemetry: one ``configure()`` that builds the providers and turns on instrumentation.

Spans, metrics and events (log records) leave over OTLP/gRPC (``OTEL_EXPORTER_OTLP_ENDPOINT``, default
``http://localhost:4317``). Everything else is the SDK's standard environment
(https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/): ``OTEL_SERVICE_NAME``
(default here ``question-app``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*`` / ``OTEL_BLRP_*`` (span and log queues, bounded: dropped, never buffered without limit, when the
Collector is down), ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (e.g. ``langchain``: no graph and node spans),
``OTEL_METRIC_EXPORT_INTERVAL`` (ms; the SDK's default 60000, the deployment sets 15000: see docs/telemetry.md
"Timing"), ``OTEL_EXPORTER_OTLP_TIMEOUT``.

Instrumentation (libraries, not ours):
- ``opentelemetry-instrumentation-fastapi``: the ``POST /ask`` SERVER span, ``http.server.*`` metrics.
- ``opentelemetry-instrumentation-langchain``: the LangGraph run — a graph span and an ``execute_task`` span
  per node — with its LLM spans and metrics left out (``GenAISpans``, ``METRIC_VIEWS``).
- ``opentelemetry-instrumentation-openai-v2``: a ``chat {model}`` CLIENT span per LLM call with ``gen_ai.*``
  attributes, and the ``gen_ai.client.operation.duration`` / ``gen_ai.client.token.usage`` metrics.
- ``opentelemetry-instrumentation-system-metrics``: process CPU and memory.

``OTEL_SEMCONV_STABILITY_OPT_IN`` defaults to ``http,gen_ai_latest_experimental``. ``http``: the stable HTTP
conventions only — ``http.request.method``, ``http.response.status_code``, ``url.*`` on the server span, which
are the names the Collector's ``azuremonitor`` exporter (semconv 1.34 since contrib PR #43703) maps to App Insights
``requests`` (name, ``resultCode``, ``success``, ``url``), and ``http.server.request.duration`` in seconds for
Prometheus. The old names (``http.method``, ``http.status_code`` …, which ``http/dup`` would add) are not mapped
by that exporter, only copied into ``customDimensions``: bytes for nothing. ``gen_ai_latest_experimental``
selects the current GenAI conventions (``gen_ai.provider.name``) and the content-capture modes of
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (default ``NO_CONTENT``: no prompt or completion text).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks.base import BaseCallbackManager
from langgraph.pregel import Pregel
from langgraph.types import Command
from opentelemetry import trace
from opentelemetry._logs import Logger
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION
from opentelemetry.trace import SpanKind, Tracer

from telemetry import contract as C
from telemetry.contract import REQUEST_DURATION_BUCKETS, QuizInstruments
from telemetry.evaluations import Evaluations, content_capture_on

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "question-app"
TRACER_NAME = "question-app"  # the instrumentation scope of our own spans, metrics and events
LANGCHAIN_SCOPE = "opentelemetry.instrumentation.langchain"
DEFAULT_SEMCONV_OPT_IN = "http,gen_ai_latest_experimental"
PROCESS_METRICS = {  # opentelemetry-instrumentation-system-metrics config: this process only, not the node
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
}


# Buckets that cover a round (the ASGI instrumentation's end at 10 s), and bounded metric labels. Should an
# operator opt into `http/dup`, the old-convention HTTP metrics come back with `http.host`, `http.server_name`
# and `http.target` (the raw path) as attributes, with which a client could mint new series at will: dropped.
METRIC_VIEWS = [
    View(instrument_name=HTTP_SERVER_REQUEST_DURATION,
         aggregation=ExplicitBucketHistogramAggregation(REQUEST_DURATION_BUCKETS)),
    *(View(instrument_name=name, aggregation=DropAggregation()) for name in (
        "http.server.duration", "http.server.request.size", "http.server.response.size")),
    View(instrument_name="http.server.active_requests", attribute_keys={"http.request.method", "url.scheme"}),
    # opentelemetry-instrumentation-langchain records gen_ai.client.* for every LLM call too, with the unit
    # "token" instead of "{token}" and without the required gen_ai.operation.name: openai-v2's are kept.
    View(meter_name=LANGCHAIN_SCOPE, aggregation=DropAggregation()),
]


class GenAISpans(SpanProcessor):
    """The GenAI spans of a round as one story, in front of the exporting processor ``inner``.

    - A ``chat`` span of ``opentelemetry-instrumentation-openai-v2`` knows neither the session
      (``gen_ai.conversation.id``, which session views in App Insights and Langfuse group by) nor that
      ``openai`` is Azure OpenAI here: when a GenAI span starts beneath one of ours (``invoke_agent``), both are
      copied from it, so one LLM call says the same ``gen_ai.provider.name`` on its workflow, agent and chat
      spans.
    - ``opentelemetry-instrumentation-langchain`` traces the LangGraph run (the graph, ``execute_task`` per
      node) and each LLM call again: its LLM spans are not exported (openai-v2's ``chat`` spans are closer to
      the conventions: span name, units, required attributes — measured, docs/telemetry.md), and its spans
      name the framework (``langgraph``) as ``gen_ai.provider.name``; they are exported with the round's provider.
    """

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self._providers: dict[int, str] = {}  # trace id → provider of a round in progress (our workflow span)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Copy the conversation and provider from our enclosing span; remember the provider of a round."""
        attributes = span.attributes or {}
        if GenAI.GEN_AI_OPERATION_NAME in attributes:
            parent = trace.get_current_span(parent_context)
            inherited = getattr(parent, "attributes", None) or {}
            if _scope(parent) == TRACER_NAME and GenAI.GEN_AI_OPERATION_NAME in inherited:
                for key in (GenAI.GEN_AI_CONVERSATION_ID, GenAI.GEN_AI_PROVIDER_NAME):
                    if key in inherited:
                        span.set_attribute(key, inherited[key])
            elif _scope(span) == TRACER_NAME and GenAI.GEN_AI_PROVIDER_NAME in attributes:
                self._providers[span.context.trace_id] = str(attributes[GenAI.GEN_AI_PROVIDER_NAME])
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Drop LangChain's LLM spans, give LangChain's graph spans the round's provider, export the rest."""
        trace_id = span.context.trace_id if span.context else 0
        if _scope(span) == LANGCHAIN_SCOPE:
            if span.kind is SpanKind.CLIENT:  # not built (LangChainRuns.LLM_CALLBACKS); kept if a version does
                return
            provider = self._providers.get(trace_id)
            attributes = span.attributes or {}
            if provider and attributes.get(GenAI.GEN_AI_PROVIDER_NAME) not in (None, provider):
                span = ReadableSpan(
                    span.name, span.context, span.parent, span.resource,
                    {**attributes, GenAI.GEN_AI_PROVIDER_NAME: provider}, span.events, span.links, span.kind,
                    status=span.status, start_time=span.start_time, end_time=span.end_time,
                    instrumentation_scope=span.instrumentation_scope)
        elif _scope(span) == TRACER_NAME and (span.attributes or {}).get(
                GenAI.GEN_AI_OPERATION_NAME) == GenAI.GenAiOperationNameValues.INVOKE_WORKFLOW.value:
            self._providers.pop(trace_id, None)
        self.inner.on_end(span)

    def shutdown(self) -> None:
        """Shut the exporting processor down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the exporting processor."""
        return self.inner.force_flush(timeout_millis)


def _scope(span: object) -> str | None:
    scope = getattr(span, "instrumentation_scope", None)
    return scope.name if scope is not None else None


class LangChainRuns(LangchainInstrumentor):
    """``opentelemetry-instrumentation-langchain``, undone completely on ``uninstrument()``.

    0.62.4 unwraps class methods by dotted names (``"BaseCallbackManager.__init__"``) that
    ``opentelemetry.instrumentation.utils.unwrap()`` does not resolve, so its wrappers — bound to the first
    tracer provider — stay, and a later app in the same process (tests, a reloaded worker) would trace its
    LangGraph runs twice, once into a provider that was shut down.
    """

    WRAPPED = ((BaseCallbackManager, "__init__"), (Pregel, "stream"), (Pregel, "astream"), (Command, "__init__"))
    LLM_CALLBACKS = ("on_chat_model_start", "on_llm_start", "on_llm_end", "on_llm_error")

    def _instrument(self, **kwargs: Any) -> None:
        """Instrument; give its callback handler the two LangGraph lifecycle callbacks it lacks, and silence
        its LLM callbacks (``LLM_CALLBACKS``: openai-v2 traces each call; those spans were dropped unexported).

        It joins every callback manager, LangGraph's interrupt/resume dispatchers included, without being a
        ``GraphCallbackHandler``: each pause and resume of a round logged an ``AttributeError`` warning.
        """
        super()._instrument(**kwargs)
        injector = getattr(BaseCallbackManager.__init__, "_self_wrapper", None)
        handler = getattr(injector, "_callback_handler", None)
        if handler is None:
            return
        for callback in ("on_interrupt", "on_resume"):
            if not hasattr(handler, callback):
                setattr(handler, callback, _ignore_graph_event)
        # Its LLM spans (and their dropped metrics) are never exported (GenAISpans): openai-v2 traces each call.
        # Not building them saves their attributes' JSON and the span itself, per call
        # (docs/explanation/performance.md).
        for callback in self.LLM_CALLBACKS:
            setattr(handler, callback, _ignore_llm_run)

    def _uninstrument(self, **kwargs: Any) -> None:
        super()._uninstrument(**kwargs)
        for owner, name in self.WRAPPED:
            if hasattr(getattr(owner, name), "__wrapped__"):
                unwrap(owner, name)


def _ignore_llm_run(*args: Any, **kwargs: Any) -> None:
    """An LLM run's start, end or error: traced by ``opentelemetry-instrumentation-openai-v2`` instead."""


def _ignore_graph_event(event: Any) -> None:
    """A LangGraph interrupt or resume (``langgraph.callbacks``): the round's own spans record them."""


# Instrumentors are process-wide singletons: the app that instrumented each one last (its tracer provider).
_OWNERS: dict[type, TracerProvider] = {}


def take_over(instrumentor: Any, owner: TracerProvider, **providers: Any) -> Any:
    """Instrument with ``providers``, first undoing another app's instrumentation in this process (tests,
    a factory called twice): the newest app's providers win, and only the owner undoes it on shutdown."""
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(**providers)
    _OWNERS[type(instrumentor)] = owner
    return instrumentor


def sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED=true`` (the SDK's standard switch): no providers export anything."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def build_resource(service_version: str, traffic: str = C.TRAFFIC_LIVE) -> Resource:
    """Defaults (``service.name=question-app``, ``service.version``, ``quiz.traffic`` = ``traffic``: ``live``
    for the service, ``evaluation`` for ``question-app eval``) under the environment's resource.

    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over the defaults.
    """
    defaults = Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME, SERVICE_VERSION: service_version,
                                C.RESOURCE_TRAFFIC: traffic})
    return defaults.merge(OTELResourceDetector().detect())


@dataclass
class Telemetry:
    """The app's providers, its tracer and instruments; ``shutdown()`` flushes and stops everything."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    tracer: Tracer
    instruments: QuizInstruments
    evaluations: Evaluations
    _instrumentors: list[Any] = field(default_factory=list)
    _exporters: list[Any] = field(default_factory=list)

    def instrument_app(self, app: Any, untraced: tuple[str, ...] = ()) -> None:
        """Server spans and ``http.server.*`` metrics for a FastAPI app.

        ``/health`` is not traced (probes would flood App Insights), nor are the URLs matching the regular
        expressions ``untraced`` (e.g. a page's static files); the per-message ASGI ``receive``/``send`` spans are
        left out (noise, and OTLP bytes per round).
        """
        FastAPIInstrumentor.instrument_app(app, tracer_provider=self.tracer_provider,
                                           meter_provider=self.meter_provider,
                                           excluded_urls=",".join(("health", *untraced)),
                                           exclude_spans=["receive", "send"])

    def shutdown(self, timeout_s: float = 3.0) -> float:
        """Flush pending spans, events and metrics (in parallel), then stop the exporters. Returns seconds taken.

        Bounded by ``timeout_s``: the SDK's own shutdown waits up to 30 s, and each export retries until
        ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s) while a Collector is unreachable. When the budget runs out the
        exporters are shut down, which aborts their retries; what was not delivered by then is lost.
        """
        started = time.monotonic()
        for instrumentor in self._instrumentors:
            if _OWNERS.get(type(instrumentor)) is self.tracer_provider:  # not taken over by a newer app
                instrumentor.uninstrument()
                del _OWNERS[type(instrumentor)]
        self._instrumentors.clear()
        watchdog = threading.Timer(timeout_s, self._abort_exports)
        watchdog.daemon = True
        watchdog.start()
        try:
            flushes = [threading.Thread(target=stop, name=f"otel-{name}-shutdown", daemon=True)
                       for name, stop in (("span", self.tracer_provider.shutdown),
                                          ("log", self.logger_provider.shutdown))]
            for flush in flushes:
                flush.start()
            self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
            for flush in flushes:
                flush.join(max(0.0, timeout_s + 1.0 - (time.monotonic() - started)))
        finally:
            watchdog.cancel()
        return time.monotonic() - started

    def _abort_exports(self) -> None:
        log.warning("telemetry: flush did not finish in time (Collector unreachable?); dropping the rest")
        for exporter in self._exporters:
            exporter.shutdown()


def configure(service_version: str, traffic: str = C.TRAFFIC_LIVE) -> Telemetry:
    """Build the tracer, meter and logger providers with OTLP/gRPC exporters and turn on instrumentation.
    ``traffic``: the ``quiz.traffic`` resource attribute (``build_resource``).

    Returns a ``Telemetry`` whose ``shutdown()`` must be called on the way out (the app's lifespan does).
    With ``OTEL_SDK_DISABLED=true`` the providers are no-ops and nothing is exported.
    """
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", DEFAULT_SEMCONV_OPT_IN)
    resource = build_resource(service_version, traffic)
    exporting = not sdk_disabled()

    tracer_provider = TracerProvider(resource=resource)
    logger_provider = LoggerProvider(resource=resource)
    readers: list[MetricReader] = []
    exporters: list[Any] = []
    if exporting:
        exporters = [OTLPSpanExporter(), OTLPMetricExporter(), OTLPLogExporter()]
        tracer_provider.add_span_processor(GenAISpans(BatchSpanProcessor(exporters[0])))
        readers.append(PeriodicExportingMetricReader(exporters[1]))
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporters[2]))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, views=METRIC_VIEWS)

    # The LangGraph run (graph and node spans). Its content switch follows ours; it sends no trace headers to
    # the LLM (that would change every request to Azure OpenAI, and the chat span already links the call).
    os.environ["TRACELOOP_TRACE_CONTENT"] = "true" if content_capture_on() else "false"
    # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (the standard variable; entry-point names) turns any of them off.
    disabled = {name.strip() for name in os.environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")}
    wanted: list[tuple[str, Any, dict[str, Any]]] = [
        ("langchain", LangChainRuns(disable_trace_context_propagation=True),
         {"tracer_provider": tracer_provider, "meter_provider": meter_provider}),
        ("openai", OpenAIInstrumentor(),
         {"tracer_provider": tracer_provider, "meter_provider": meter_provider, "logger_provider": logger_provider}),
        ("system_metrics", SystemMetricsInstrumentor(config=PROCESS_METRICS), {"meter_provider": meter_provider}),
    ]
    instrumentors = [take_over(instrumentor, tracer_provider, **providers)
                     for name, instrumentor, providers in wanted if name not in disabled]

    meter = meter_provider.get_meter(TRACER_NAME, service_version)
    events: Logger = logger_provider.get_logger(TRACER_NAME, service_version)
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        tracer=tracer_provider.get_tracer(TRACER_NAME, service_version),
        instruments=QuizInstruments.create(meter),
        evaluations=Evaluations(events),
        _instrumentors=instrumentors,
        _exporters=exporters,
    )
    log.info("telemetry: %s, service.name=%s", "exporting over OTLP/gRPC to " + os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317") if exporting else "disabled (OTEL_SDK_DISABLED)",
        resource.attributes.get(SERVICE_NAME))
    return telemetry
