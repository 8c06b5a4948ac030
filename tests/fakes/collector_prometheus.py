"""The Collector's ``prometheus`` exporter, played from what the OTLP receiver got: for the dashboard tests.

The Python ``PrometheusMetricReader`` differs from the Collector in names and labels
(../shared/TELEMETRY-NOTES.md §5: no ``job``/``instance``, ``_ratio`` and unit-suffix rules, no resource
labels), so this exposes the latest cumulative point of every series the way the Collector configured in
otel-collector.yaml would: the names of ``tests/promnames.py`` (otlptranslator's rules), ``job`` =
``service.namespace/service.name``, ``instance`` = ``service.instance.id``, and every resource attribute as
a label (``resource_to_telemetry_conversion: enabled``). The exposition itself is written by
``prometheus_client`` and served over HTTP for a real Prometheus server to scrape.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from tests.fakes.otlp_receiver import MetricPoint, OTLPReceiver
from tests.promnames import prometheus_name


def label_name(key: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return f"key_{name}" if name[:1].isdigit() else re.sub(r"__+", "_", name)


def instrument(point: MetricPoint) -> str:
    if point.kind == "histogram":
        return "histogram"
    if point.kind == "sum":
        return "counter" if point.monotonic else "updowncounter"
    return "gauge"


def series_labels(point: MetricPoint) -> dict[str, str]:
    labels = {label_name(k): str(v) for k, v in point.resource.items()}
    labels.update({label_name(k): str(v) for k, v in point.attributes.items()})
    namespace, service = point.resource.get("service.namespace"), point.resource.get("service.name")
    if service:
        labels["job"] = f"{namespace}/{service}" if namespace else str(service)
    if point.resource.get("service.instance.id"):
        labels["instance"] = str(point.resource["service.instance.id"])
    return labels


class CollectorExposition:
    """Serve ``/metrics`` on 127.0.0.1 from ``receiver``'s latest points, as the Collector would."""

    def __init__(self, receiver: OTLPReceiver,
                 transform: Callable[[list[MetricPoint]], list[MetricPoint]] | None = None) -> None:
        """``transform``: rewrite the received points first (e.g. to play a newer instrumentation's names)."""
        self.receiver = receiver
        self.transform = transform or (lambda points: points)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._latest: dict[tuple, MetricPoint] = {}  # the newest point of every series, kept up to date
        self._read = 0  # metric export requests already folded into _latest
        self._fold = threading.Lock()
        self._server: WSGIServer = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> CollectorExposition:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def names(self) -> set[str]:
        return {prometheus_name(p.name, p.unit, instrument(p)) for p in self.points()}

    def points(self) -> list[MetricPoint]:
        return self.transform(self.receiver.metric_points())

    def latest(self) -> dict[tuple, MetricPoint]:
        """The newest point of every series, folding in only the requests that arrived since the last call: a
        scrape must not re-read everything received (over a long test, that outgrew Prometheus' 1 s scrape
        timeout and every scrape failed)."""
        with self._fold:
            arrived = self.receiver.metric_request_count()
            if arrived < self._read:  # the receiver was cleared
                self._latest, self._read = {}, 0
            for p in self.transform(self.receiver.metric_points(self._read)):
                key = (p.name, tuple(sorted(series_labels(p).items())))
                if key not in self._latest or p.time_ns >= self._latest[key].time_ns:
                    self._latest[key] = p
            self._read = max(self._read, arrived)
            return dict(self._latest)

    def collect(self):  # prometheus_client custom-collector protocol
        latest = self.latest()
        # One label set per family (prometheus_client needs it): the union of its series' labels, a label a
        # series lacks left empty, which Prometheus treats as absent.
        by_family: dict[str, list[tuple[dict[str, str], MetricPoint]]] = {}
        for (_, labels), p in sorted(latest.items(), key=lambda kv: kv[0]):
            by_family.setdefault(prometheus_name(p.name, p.unit, instrument(p)), []).append((dict(labels), p))
        families: list[Metric] = []
        for name, series in by_family.items():
            keys = sorted(set().union(*(labels for labels, _ in series)))
            kind = instrument(series[0][1])
            if kind == "histogram":
                histogram = HistogramMetricFamily(name, series[0][1].name, labels=keys)
                for labels, p in series:
                    cumulative, buckets = 0, []
                    for bound, count in zip((*p.bounds, float("inf")), p.bucket_counts, strict=True):
                        cumulative += count
                        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(cumulative)))
                    histogram.add_metric([labels.get(k, "") for k in keys], buckets, p.value)
                families.append(histogram)
                continue
            family = (CounterMetricFamily(name.removesuffix("_total"), series[0][1].name, labels=keys)
                      if kind == "counter" else GaugeMetricFamily(name, series[0][1].name, labels=keys))
            for labels, p in series:
                family.add_metric([labels.get(k, "") for k in keys], p.value)
            families.append(family)
        yield from families


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass
