"""The service's telemetry, in three rooms (importing this package imports none of them):

- ``telemetry.contract``: every name and bounded value the service emits that is ours to choose, and its
  instruments. OpenTelemetry API only: the graph imports it, no SDK comes with it.
- ``telemetry.spans``: reading and marking the current span (API only).
- ``telemetry.evaluations``: ``gen_ai.evaluation.result`` events (the logs API).
- ``telemetry.sdk``: ``configure()`` — the SDK's providers, the OTLP/gRPC exporters and the instrumentations.
  Only a process's bootstrap (``app.bootstrap``) imports it.
"""
