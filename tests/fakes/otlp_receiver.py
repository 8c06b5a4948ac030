"""A real OTLP/gRPC receiver on 127.0.0.1: the Collector's side of the wire, for tests.

It implements the three OTLP services the app exports to (``TraceService/Export``,
``MetricsService/Export`` and ``LogsService/Export`` from opentelemetry-proto,
https://opentelemetry.io/docs/specs/otlp/) with
``grpcio``, keeps every request it accepted, and flattens spans and metric names for assertions.
It can also refuse (``UNAVAILABLE``) or stall exports, to play a Collector that is down or slow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from graphs.agents import Step
from graphs.agents import steps as agent_steps


def spans_per_round(steps: list[Step] | None = None) -> int:
    """The spans of one played round of ``steps`` (default: the agent table's): ``POST /ask``, ``invoke_workflow
    quiz``, the LangChain instrumentation's graph span and its workflow span; per step its ``execute_task``
    node span, its ``invoke_agent`` span and the ``chat`` span of its LLM call; an ``execute_task`` span for
    each loop's edge. A question the Reviewer sends back adds the asking and reviewing steps' spans again. A step
    played on request (``Step.when``: the Tutor's hint) plays in a request of its own, so none of its spans."""
    chosen = [step for step in (agent_steps() if steps is None else steps) if step.when is None]
    names = {step.name for step in chosen}
    return 4 + 3 * len(chosen) + sum(step.loop is not None and step.loop.to in names for step in chosen)


SPANS_PER_ROUND = spans_per_round()  # 17: ask, review (and its loop's edge), answer, grade
SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class SpanEvent:
    name: str
    attributes: dict[str, Any]
    time_ns: int


@dataclass
class Span:
    """One received span, flattened: ids as lowercase hex, kind as its name, attributes as a dict."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int
    start_ns: int
    end_ns: int
    events: list[SpanEvent] = field(default_factory=list)
    status_message: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id) of each link, hex


@dataclass
class LogRecord:
    """One received log record (an event when ``event_name`` is set), flattened like ``Span``."""

    event_name: str
    body: Any
    severity_number: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    trace_id: str
    span_id: str
    time_ns: int


@dataclass
class MetricPoint:
    name: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float  # sum for histograms, value for sums and gauges
    count: int  # data-point count for histograms, 1 otherwise
    monotonic: bool = False  # sums only: a Counter (True) or an UpDownCounter (False)
    time_ns: int = 0
    bounds: tuple[float, ...] = ()  # histograms: explicit bucket upper bounds
    bucket_counts: tuple[int, ...] = ()  # histograms: count per bucket (len(bounds) + 1)


class OTLPReceiver:
    """Start with ``with OTLPReceiver() as receiver:``; ``receiver.endpoint`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.refuse = False  # answer UNAVAILABLE, as a Collector that is restarting
        self.delay_s = 0.0  # stall each export, as a slow Collector
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 (gRPC method name)
                receiver._accept(receiver.trace_requests, request, context)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                receiver._accept(receiver.metric_requests, request, context)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                receiver._accept(receiver.log_requests, request, context)
                return logs_service_pb2.ExportLogsServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OTLPReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    def _accept(self, into: list[Any], request: Any, context: grpc.ServicerContext) -> None:
        """Keep one export request, unless playing a slow or refusing Collector says otherwise."""
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver refusing exports (test)")
        with self._lock:
            into.append(request)

    def metric_request_count(self) -> int:
        """How many metric export requests arrived (since the last ``clear``)."""
        with self._lock:
            return len(self.metric_requests)

    def clear(self) -> None:
        with self._lock:
            self.trace_requests.clear()
            self.metric_requests.clear()
            self.log_requests.clear()

    # -- views -------------------------------------------------------------------------------
    def spans(self) -> list[Span]:
        with self._lock:
            requests = list(self.trace_requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(Span(s.name, SPAN_KINDS[s.kind], s.trace_id.hex(), s.span_id.hex(),
                                        s.parent_span_id.hex(), _attrs(s.attributes), resource,
                                        ss.scope.name, s.status.code, s.start_time_unix_nano,
                                        s.end_time_unix_nano,
                                        [SpanEvent(e.name, _attrs(e.attributes), e.time_unix_nano) for e in s.events],
                                        s.status.message,
                                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links]))
        return out

    def logs(self) -> list[LogRecord]:
        with self._lock:
            requests = list(self.log_requests)
        return [LogRecord(r.event_name, _value(r.body) if r.HasField("body") else None, r.severity_number,
                          _attrs(r.attributes), _attrs(rl.resource.attributes), sl.scope.name, r.trace_id.hex(),
                          r.span_id.hex(), r.time_unix_nano)
                for request in requests for rl in request.resource_logs for sl in rl.scope_logs
                for r in sl.log_records]

    def events(self, name: str) -> list[LogRecord]:
        return [r for r in self.logs() if r.event_name == name]

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans() if s.trace_id == trace_id]

    def metric_points(self, start: int = 0) -> list[MetricPoint]:
        """The data points of every metric export request received, from the ``start``-th request on."""
        with self._lock:
            requests = list(self.metric_requests)[start:]
        out = []
        for request in requests:
            for rm in request.resource_metrics:
                resource = _attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        data = getattr(m, kind)
                        for p in data.data_points:
                            if kind in ("histogram", "exponential_histogram"):
                                value, count = p.sum, p.count
                            else:
                                value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                                count = 1
                            histogram = kind == "histogram"
                            out.append(MetricPoint(
                                m.name, m.unit, kind, _attrs(p.attributes), resource, value, count,
                                kind == "sum" and data.is_monotonic, p.time_unix_nano,
                                tuple(p.explicit_bounds) if histogram else (),
                                tuple(p.bucket_counts) if histogram else ()))
        return out

    def metric_names(self) -> set[str]:
        return {p.name for p in self.metric_points()}

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Poll ``predicate`` until it returns something truthy; raise ``AssertionError`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"OTLP receiver: condition not met within {timeout_s}s")
            time.sleep(0.05)
