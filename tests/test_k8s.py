"""deployment.yaml, otel-collector.yaml and deploy/: valid for the API server (offline), and consistent with
each other and with the app.

Core objects are checked with ``kubernetes-validate --strict`` (a misspelt field fails); the custom
resources with ``jsonschema`` against the CRD schemas in ../shared/schemas (the operator's v1beta1
OpenTelemetryCollector, Azure Managed Prometheus' PodMonitor, KEDA's ScaledObject and TriggerAuthentication),
and for fields their schemas do not know (the API server's strict field validation). The scaled mode
(deploy/scaled) is a kustomization over deployment.yaml: rendered here as kustomize does for what it uses
(resources, then JSON 6902 patches).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.http.factory import create_app
from app.settings import Settings
from tests.docs import everything, page
from tests.shared import schema

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33.0"  # a current AKS version
MANIFESTS = ["deployment.yaml", "otel-collector.yaml", "deploy/hpa.yaml", "deploy/azure-monitor-secret.example.yaml",
             "deploy/eval-job.yaml", "deploy/scaled/keda.yaml"]
CRD_SCHEMAS = {"OpenTelemetryCollector": "opentelemetrycollector-v1beta1.schema.json",
               "PodMonitor": "azmonitoring-podmonitor-v1.schema.json",
               "ScaledObject": "keda-scaledobject-v1alpha1.schema.json",
               "TriggerAuthentication": "keda-triggerauthentication-v1alpha1.schema.json"}


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / name).read_text()) if d]


def one(name: str, kind: str) -> dict:
    (found,) = [d for d in docs(name) if d["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def crd_schema():
    def load(kind: str) -> dict:
        return schema(CRD_SCHEMAS[kind])

    return load


def all_objects() -> list[tuple[str, dict]]:
    return [(name, d) for name in MANIFESTS for d in docs(name)]


@pytest.mark.parametrize(("name", "obj"), [(n, d) for n, d in all_objects() if d["kind"] not in CRD_SCHEMAS],
                         ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}")
def test_core_objects_validate_strictly(name: str, obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert obj["metadata"]["namespace" if obj["kind"] != "Namespace" else "name"] == "otel-app"


def custom_resource(kind: str) -> dict:
    (found,) = [d for _, d in all_objects() if d["kind"] == kind]
    return found


def unknown_fields(obj: object, schema: dict, path: str = "") -> list[str]:
    """Fields ``schema`` does not declare, where it declares its fields (no ``additionalProperties``, no
    ``x-kubernetes-preserve-unknown-fields``): what the API server's strict field validation refuses, and what a
    structural schema alone (``jsonschema``) lets through."""
    if isinstance(obj, list):
        return [u for i, item in enumerate(obj) for u in unknown_fields(item, schema.get("items", {}), f"{path}[{i}]")]
    if not isinstance(obj, dict) or "properties" not in schema:
        return []
    if schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
        return []
    known = schema["properties"]
    return [f"{path}.{key}" for key in obj if key not in known] + [
        u for key, value in obj.items() if key in known for u in unknown_fields(value, known[key], f"{path}.{key}")]


@pytest.mark.parametrize("kind", sorted(CRD_SCHEMAS))
def test_custom_resources_validate_against_their_crds(kind: str, crd_schema) -> None:
    obj = custom_resource(kind)
    jsonschema.Draft4Validator(crd_schema(kind)).validate(obj)
    assert obj["metadata"]["namespace"] == "otel-app"
    if kind in {"ScaledObject", "TriggerAuthentication"}:
        assert unknown_fields(obj, crd_schema(kind)) == []


def test_a_misspelt_field_fails_validation(crd_schema) -> None:
    deployment = copy.deepcopy(one("deployment.yaml", "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    collector = copy.deepcopy(one("otel-collector.yaml", "OpenTelemetryCollector"))
    collector["spec"]["mode"] = "Deployment"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(crd_schema("OpenTelemetryCollector")).validate(collector)
    monitor = copy.deepcopy(one("otel-collector.yaml", "PodMonitor"))
    del monitor["spec"]["selector"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(crd_schema("PodMonitor")).validate(monitor)
    scaled = copy.deepcopy(custom_resource("ScaledObject"))
    scaled["spec"]["minReplicaCount"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(crd_schema("ScaledObject")).validate(scaled)
    scaled = copy.deepcopy(custom_resource("ScaledObject"))
    scaled["spec"]["maxReplicas"] = 6  # the HPA's word, not KEDA's: valid JSON schema, refused by the API server
    assert unknown_fields(scaled, crd_schema("ScaledObject")) == [".spec.maxReplicas"]
    auth = copy.deepcopy(custom_resource("TriggerAuthentication"))
    auth["spec"]["podIdentity"]["provider"] = "azure"  # pod identity, removed in KEDA 2.15
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(crd_schema("TriggerAuthentication")).validate(auth)


# --- the app's Deployment ---------------------------------------------------------------------------------
def pod_spec() -> dict:
    return one("deployment.yaml", "Deployment")["spec"]["template"]["spec"]


def container() -> dict:
    (c,) = pod_spec()["containers"]
    return c


def env() -> dict[str, dict]:
    return {e["name"]: e for e in container()["env"]}


def test_the_pod_is_locked_down() -> None:
    spec = pod_spec()
    pod, ctr = spec["securityContext"], container()["securityContext"]
    assert pod["runAsNonRoot"] is True and isinstance(pod["runAsUser"], int) and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctr["allowPrivilegeEscalation"] is False and ctr["readOnlyRootFilesystem"] is True
    assert ctr["capabilities"]["drop"] == ["ALL"]
    (tmp,) = [m for m in container()["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert {"key": "workload", "operator": "Equal", "value": "general", "effect": "NoSchedule"} in spec["tolerations"]
    # The Dockerfile's numeric user is the one the pod runs as.
    assert f"USER {pod['runAsUser']}:{pod['runAsGroup']}" in (ROOT / "Dockerfile").read_text()


def test_workload_identity_and_no_key_anywhere() -> None:
    template = one("deployment.yaml", "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert "REPLACE" in template["spec"]["serviceAccountName"]  # an obvious placeholder
    variables = env()
    assert variables["AZURE_OPENAI_ENDPOINT"]["valueFrom"]["secretKeyRef"]["key"] == "AZURE_AISERVICES_OPENAI_BASE"
    assert variables["AZURE_OPENAI_DEPLOYMENT_NAME"]["value"] == "gpt-5.2-chat"
    assert variables["AZURE_OPENAI_API_VERSION"]["value"] == "2024-12-01-preview"
    assert "AZURE_OPENAI_API_KEY" not in variables and "OPENAI_API_KEY" not in variables
    text = "\n".join((ROOT / m).read_text() for m in ("deployment.yaml", "otel-collector.yaml", "Dockerfile"))
    assert not re.search(r"(?i)(api[_-]?key|password|InstrumentationKey)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{16,}", text)


def test_every_env_var_is_one_the_app_or_the_sdk_reads() -> None:
    """A misspelt variable would be silently ignored: each must be a Settings field, a standard OTEL_*
    variable the service documents, or a helper that another variable interpolates."""
    fields = {name.upper() for name in Settings.model_fields} | {"CHECKPOINTER_URL"}  # an alias
    readme = everything()
    values = " ".join(e.get("value", "") for e in env().values())
    for name in env():
        if name.startswith("OTEL_"):
            assert f"`{name}`" in readme, f"{name} is not a documented OTEL_* variable"
        elif name.startswith("K8S_"):
            assert f"$({name})" in values, f"{name} is not used by any other variable"
        else:
            assert name in fields, f"{name} is not read by the app"


def test_resource_attributes_give_the_documented_role_name_and_job() -> None:
    variables = env()
    attrs = dict(kv.split("=", 1) for kv in variables["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
    service = variables["OTEL_SERVICE_NAME"]["value"]
    assert attrs["service.instance.id"] == "$(K8S_POD_NAME)" == attrs["k8s.pod.name"]
    assert {"k8s.namespace.name", "k8s.node.name"} <= set(attrs)
    contract = (ROOT / "docs" / "telemetry.md").read_text()
    assert f"`{attrs['service.namespace']}.{service}`" in contract  # App Insights cloud_RoleName
    assert f"`{attrs['service.namespace']}/{service}`" in contract  # Prometheus job
    for ref in ("K8S_POD_NAME", "K8S_NAMESPACE_NAME", "K8S_NODE_NAME"):
        names = list(variables)
        assert names.index(ref) < names.index("OTEL_RESOURCE_ATTRIBUTES")  # $(VAR) needs VAR defined first
    # The stable HTTP names only: the azuremonitor exporter maps nothing else (docs/telemetry.md).
    assert set(variables["OTEL_SEMCONV_STABILITY_OPT_IN"]["value"].split(",")) == {"http",
                                                                                   "gen_ai_latest_experimental"}
    assert variables["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"]["value"] == "NO_CONTENT"


def test_resources_probes_and_termination() -> None:
    ctr = container()
    assert ctr["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"cpu": "500m", "memory": "512Mi"}}
    app = create_app(Settings())
    paths = set(app.openapi()["paths"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ctr[probe]["httpGet"]["path"] in paths
        assert ctr[probe]["httpGet"]["port"] in {p["name"] for p in ctr["ports"]}
        assert ctr[probe]["timeoutSeconds"] >= 2
    grace = int(env()["GRACEFUL_SHUTDOWN_S"]["value"])
    pre_stop = ctr["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Room for the preStop pause, in-flight rounds and the telemetry flush (OTLP timeout) before SIGKILL.
    otlp_timeout = int(env()["OTEL_EXPORTER_OTLP_TIMEOUT"]["value"])
    assert pod_spec()["terminationGracePeriodSeconds"] >= pre_stop + grace + otlp_timeout
    assert int(env()["PORT"]["value"]) == ctr["ports"][0]["containerPort"] == 8000
    # The probes go to PROBE_PORT (answered off the event loop: app.http.probe), which the Service does not expose.
    probe_ports = {ctr[probe]["httpGet"]["port"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probe_ports == {"probes"}
    assert int(env()["PROBE_PORT"]["value"]) == next(p["containerPort"] for p in ctr["ports"] if p["name"] == "probes")
    assert one("deployment.yaml", "Service")["spec"]["ports"][0]["targetPort"] == "http"
    app.state.telemetry.shutdown()


def test_service_and_budget_select_the_deployments_pods() -> None:
    labels = one("deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = one("deployment.yaml", "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = one("deployment.yaml", "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and port["targetPort"] in {p["name"] for p in container()["ports"]}
    pdb = one("deployment.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1  # never blocks a drain with one replica
    hpa = one("deploy/hpa.yaml", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one("deployment.yaml", "Deployment")["metadata"]["name"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
        assert key in one("deployment.yaml", "Deployment")["metadata"]["labels"]


# --- the Collector ----------------------------------------------------------------------------------------
def collector() -> dict:
    return one("otel-collector.yaml", "OpenTelemetryCollector")


def operator_pod_labels(cr: dict) -> dict[str, str]:
    """The labels the OpenTelemetry Operator puts on the collector's pods (operator
    internal/manifests/manifestutils/labels.go; ../shared/TELEMETRY-NOTES.md §1)."""
    name, namespace = cr["metadata"]["name"], cr["metadata"]["namespace"]
    return {"app.kubernetes.io/managed-by": "opentelemetry-operator",
            "app.kubernetes.io/instance": f"{namespace}.{name}",
            "app.kubernetes.io/part-of": "opentelemetry",
            "app.kubernetes.io/component": "opentelemetry-collector",
            "app.kubernetes.io/name": f"{name}-collector"}


def collector_ports(cr: dict) -> dict[str, int]:
    """Named ports of the collector pods: spec.ports plus those the operator derives from the config."""
    config = cr["spec"]["config"]
    ports = {p["name"]: p["port"] for p in cr["spec"].get("ports", [])}
    for protocol, name in (("grpc", "otlp-grpc"), ("http", "otlp-http")):
        endpoint = config["receivers"]["otlp"]["protocols"].get(protocol, {}).get("endpoint")
        if endpoint:
            ports.setdefault(name, int(endpoint.rsplit(":", 1)[1]))
    # the Collector's own metrics: the operator derives their port and names it "metrics" (TELEMETRY-NOTES §1)
    for reader in config["service"].get("telemetry", {}).get("metrics", {}).get("readers", []):
        ports.setdefault("metrics", reader["pull"]["exporter"]["prometheus"]["port"])
    for exporter, settings in config["exporters"].items():
        if exporter.split("/")[0] == "prometheus":
            ports.setdefault(exporter.replace("/", "-").replace("_", "-")[:15],
                             int(settings["endpoint"].rsplit(":", 1)[1]))
    return ports


def test_the_apps_otlp_endpoint_is_the_collectors_grpc_service() -> None:
    cr = collector()
    url = urlsplit(env()["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"])
    assert url.scheme == "http"
    assert url.hostname == f"{cr['metadata']['name']}-collector.{cr['metadata']['namespace']}.svc.cluster.local"
    assert url.port == collector_ports(cr)["otlp-grpc"] == 4317


def test_the_collector_uses_the_contrib_image_pinned() -> None:
    image = collector()["spec"]["image"]
    assert "opentelemetry-collector-contrib:" in image
    assert re.search(r":\d+\.\d+\.\d+$", image) or "@sha256:" in image
    assert collector()["spec"]["mode"] == "deployment" and collector()["spec"]["resources"]["limits"]


def test_every_pipeline_component_is_defined_and_every_defined_one_is_used() -> None:
    config = collector()["spec"]["config"]
    pipelines = config["service"]["pipelines"]
    for kind in ("receivers", "processors", "exporters"):
        used = {c for p in pipelines.values() for c in p.get(kind, [])}
        assert used == set(config.get(kind, {})), kind
    assert set(config["service"].get("extensions", [])) == set(config.get("extensions", {}))
    for name, pipeline in pipelines.items():
        if pipeline.get("processors"):
            assert pipeline["processors"][0] == "memory_limiter", name
            assert pipeline["processors"][-1] == "batch", name


def test_pipelines_route_traces_and_metrics_where_the_contract_says() -> None:
    pipelines = collector()["spec"]["config"]["service"]["pipelines"]
    by_signal: dict[str, set[str]] = {}
    for name, pipeline in pipelines.items():
        by_signal.setdefault(name.split("/")[0], set()).update(pipeline["exporters"])
        if "azuremonitor" in pipeline["exporters"] and name.startswith("metrics"):
            assert "cumulativetodelta" in pipeline["processors"], "App Insights needs delta metrics"
        if "prometheus" in pipeline["exporters"]:
            assert "cumulativetodelta" not in pipeline["processors"], "Prometheus needs cumulative metrics"
    # logs: the gen_ai.evaluation.result events, to App Insights' `traces` table.
    assert by_signal == {"traces": {"azuremonitor"}, "metrics": {"prometheus", "azuremonitor"},
                         "logs": {"azuremonitor"}}
    prometheus = collector()["spec"]["config"]["exporters"]["prometheus"]
    assert prometheus["endpoint"].endswith(":8889") and prometheus["resource_to_telemetry_conversion"]["enabled"]



def test_attributes_are_cut_to_app_insights_limits_before_the_azuremonitor_exporter() -> None:
    """The exporter sends attributes whole and Azure refuses an item with a value over its limit
    (tests/fakes/azuremonitor.py, ``ingested``): the traces and logs pipelines cut every attribute first."""
    from tests.fakes.azuremonitor import MAX_PROPERTY_VALUE

    config = collector()["spec"]["config"]
    limits = config["processors"]["transform/appinsights-limits"]
    wanted = f"truncate_all(attributes, {MAX_PROPERTY_VALUE})"
    for signal, contexts in (("trace", {"span", "spanevent"}), ("log", {"log"})):
        statements = {s["context"]: s["statements"] for s in limits[f"{signal}_statements"]}
        assert set(statements) == contexts and all(statements[c] == [wanted] for c in contexts)
    for name in ("traces", "logs"):
        processors = config["service"]["pipelines"][name]["processors"]
        assert processors.index("transform/appinsights-limits") < processors.index("batch"), name

def test_delta_state_is_forgotten_for_series_that_went_away() -> None:
    """cumulativetodelta keeps a state per series; without max_staleness it grows with every restarted pod."""
    staleness = collector()["spec"]["config"]["processors"]["cumulativetodelta"]["max_staleness"]
    minutes = int(staleness.removesuffix("m"))
    export_s = int(dict((e["name"], e.get("value")) for e in container()["env"])["OTEL_METRIC_EXPORT_INTERVAL"]) / 1000
    assert 10 <= minutes <= 60 and minutes * 60 >= 20 * export_s  # far longer than an export gap, not forever
    assert f"max_staleness: {staleness}" in (ROOT / "docs" / "telemetry.md").read_text()


def test_the_connection_string_comes_from_the_documented_secret() -> None:
    cr = collector()
    (var,) = [e for e in cr["spec"]["env"] if e["name"] == "APPLICATIONINSIGHTS_CONNECTION_STRING"]
    ref = var["valueFrom"]["secretKeyRef"]
    example = one("deploy/azure-monitor-secret.example.yaml", "Secret")
    assert ref["name"] == example["metadata"]["name"] == "azure-monitor-secret"
    assert ref["key"] in example["stringData"]
    assert cr["spec"]["config"]["exporters"]["azuremonitor"]["connection_string"] == \
        "${env:APPLICATIONINSIGHTS_CONNECTION_STRING}"
    assert "azure-monitor-secret.yaml" in (ROOT / ".gitignore").read_text().split()


def test_the_podmonitor_scrapes_the_collectors_prometheus_port() -> None:
    cr, monitor = collector(), one("otel-collector.yaml", "PodMonitor")
    assert monitor["apiVersion"] == "azmonitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == cr["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= operator_pod_labels(cr).items()
    endpoint, own = monitor["spec"]["podMetricsEndpoints"]
    ports = collector_ports(cr)
    assert endpoint["port"] in ports
    assert ports[endpoint["port"]] == int(cr["spec"]["config"]["exporters"]["prometheus"]["endpoint"].rsplit(":")[1])
    # The Collector's own metrics (for the export-failure alert) on the port the operator derives, under the job
    # prometheus-operator gives a PodMonitor's targets (<namespace>/<name>): the one the SLO rules select.
    from telemetry.slo import SLO

    assert ports[own["port"]] == 8888 and not own.get("honorLabels")
    assert SLO().collector_job == f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"
    assert (monitor["spec"]["labelLimit"], monitor["spec"]["labelNameLengthLimit"],
            monitor["spec"]["labelValueLengthLimit"]) == (63, 511, 1023)
    # The honorLabels decision is written where the dashboard work reads it.
    assert endpoint["honorLabels"] is True
    assert "honorLabels: true" in (ROOT / "docs" / "telemetry.md").read_text()


def test_the_evaluation_job_runs_eval_with_the_services_identity_model_and_collector() -> None:
    from evals.cli import parser

    job = one("deploy/eval-job.yaml", "Job")
    service = one("deployment.yaml", "Deployment")["spec"]["template"]
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == service["spec"]["serviceAccountName"]
    assert template["spec"]["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    (ctr,) = template["spec"]["containers"]
    (svc_ctr,) = service["spec"]["containers"]
    assert ctr["image"] == svc_ctr["image"] and ctr["securityContext"] == svc_ctr["securityContext"]
    assert template["spec"]["securityContext"] == service["spec"]["securityContext"]
    args = parser().parse_args(ctr["args"][1:])  # `question-app eval …` (the image's entrypoint is question-app)
    assert ctr["args"][0] == "eval" and args.min_accuracy is not None and args.print_report
    ours = {e["name"]: e for e in ctr["env"]}
    theirs = {e["name"]: e for e in svc_ctr["env"]}
    same = ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT_NAME", "AZURE_OPENAI_API_VERSION", "LLM_TIMEOUT_S",
            "LLM_MAX_RETRIES", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_SEMCONV_STABILITY_OPT_IN", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"]
    assert all(ours[name] == theirs[name] for name in same)
    assert set(ours) <= set(theirs)  # nothing the service does not read


# --- the scaled mode: deploy/scaled ------------------------------------------------------------------------
SCALED = ROOT / "deploy" / "scaled"
# The prometheus scaler's trigger metadata (KEDA docs, scalers/prometheus.md): a misspelt key is ignored by
# KEDA, so it is checked here. No authModes: KEDA allows none beside Azure workload identity.
PROMETHEUS_SCALER_KEYS = {"serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
                          "ignoreNullValues", "queryParameters", "unsafeSsl", "timeout"}


def kustomized(folder: Path) -> list[dict]:
    """The objects ``kubectl kustomize --load-restrictor LoadRestrictionsNone <folder>`` prints, for the subset
    of kustomize the folder may use: ``resources`` (files), then ``patches`` (JSON 6902, by kind and name)."""
    import jsonpatch

    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "patches"}, "a kustomize feature this test lacks"
    objects = [d for name in kustomization["resources"]
               for d in yaml.safe_load_all((folder / name).resolve().read_text()) if d]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        (i,) = [i for i, d in enumerate(objects) if d["kind"] == target["kind"]
                and d["metadata"]["name"] == target["name"]
                and d["apiVersion"] == "/".join(p for p in (target.get("group"), target["version"]) if p)]
        objects[i] = jsonpatch.apply_patch(objects[i], yaml.safe_load(patch["patch"]))
    return objects


def scaled(kind: str) -> dict:
    (found,) = [d for d in kustomized(SCALED) if d["kind"] == kind]
    return found


def trigger() -> dict:
    (found,) = scaled("ScaledObject")["spec"]["triggers"]
    return found


def test_the_scaled_mode_is_deployment_yaml_patched_not_a_copy() -> None:
    kustomization = yaml.safe_load((SCALED / "kustomization.yaml").read_text())
    assert "../../deployment.yaml" in kustomization["resources"]
    copies = [p.name for p in SCALED.glob("*.yaml") if p.name != "kustomization.yaml"
              for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "Deployment"]
    assert copies == []
    assert {d["kind"] for d in kustomized(SCALED)} == {"Deployment", "Service", "PodDisruptionBudget", "ScaledObject",
                                                      "TriggerAuthentication"}  # no HPA: KEDA makes its own


@pytest.mark.parametrize("kind", ["Deployment", "Service", "PodDisruptionBudget"])
def test_the_scaled_modes_core_objects_validate_strictly(kind: str) -> None:
    obj = scaled(kind)
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert obj["metadata"]["namespace"] == "otel-app"


def test_keda_scales_the_deployment_from_two_pods_and_owns_their_count() -> None:
    deployment, spec = scaled("Deployment"), scaled("ScaledObject")["spec"]
    assert spec["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}  # apps/v1 Deployment by default
    assert scaled("ScaledObject")["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert 2 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert "replicas" not in deployment["spec"]  # an apply would reset KEDA's count
    assert spec["fallback"]["failureThreshold"] >= 1 and spec["minReplicaCount"] <= spec["fallback"]["replicas"] \
        <= spec["maxReplicaCount"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = scaled("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() and pdb["spec"]["maxUnavailable"] == 1


def test_the_pods_spread_over_zones_and_nodes() -> None:
    pod = scaled("Deployment")["spec"]["template"]
    spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        assert constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        # The pods tolerate the `workload` taint only: other nodes (the system pool) are not places to fill.
        assert constraint["nodeTaintsPolicy"] == "Honor" and pod["spec"]["tolerations"]
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_the_trigger_reads_rounds_in_flight_from_azure_managed_prometheus_as_a_workload_identity() -> None:
    from telemetry import contract
    from tests.promnames import prometheus_name

    t = trigger()
    assert t["type"] == "prometheus" and t["metricType"] == "AverageValue"
    metadata = t["metadata"]
    assert set(metadata) <= PROMETHEUS_SCALER_KEYS, set(metadata) - PROMETHEUS_SCALER_KEYS
    assert all(isinstance(v, str) for v in metadata.values())
    url = urlsplit(metadata["serverAddress"])
    assert url.scheme == "https" and url.hostname.endswith(".prometheus.monitor.azure.com")
    assert "REPLACE" in metadata["serverAddress"]  # an obvious placeholder: the workspace's query endpoint
    # The query names the series by their Prometheus names after the Collector, under the service's job.
    active, limit = (prometheus_name(name, "{round}", "updowncounter")
                     for name in (contract.METRIC_ROUND_ACTIVE, contract.METRIC_ROUND_LIMIT))
    attrs = dict(kv.split("=", 1) for kv in env()["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
    job = f'job="{attrs["service.namespace"]}/{env()["OTEL_SERVICE_NAME"]["value"]}"'
    assert metadata["query"] == f"sum({active}{{{job}}}) / avg({limit}{{{job}}})"
    # Each pod kept under MAX_CONCURRENT_ROUNDS: a threshold below one pod's worth scales before admission sheds.
    assert 0.5 <= float(metadata["threshold"]) <= 0.8
    assert metadata["ignoreNullValues"] == "false"  # no series: the fallback, not a scale-down
    auth = scaled("TriggerAuthentication")
    assert t["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"]["podIdentity"]["provider"] == "azure-workload"
    assert "REPLACE" in auth["spec"]["podIdentity"]["identityId"]


def test_the_max_replica_count_is_the_readmes_quota_arithmetic() -> None:
    """maxReplicaCount = ceil(min(TPM / tokens, RPM / calls) per round / rounds a pod plays per minute at the
    target), with the README's figures; the fallback HPA has the same bound, the KEDA fallback stays within it."""
    import math

    readme = page("docs/how-to/scale-out.md")
    figures = re.search(r"<!-- max-replicas: tpm=([\d,]+) rpm=([\d,]+) tokens=([\d,]+) calls=(\d+) seconds=(\d+) -->",
                        readme)
    assert figures, "docs/how-to/scale-out.md states the figures behind maxReplicaCount"
    tpm, rpm, tokens, calls, seconds = (int(g.replace(",", "")) for g in figures.groups())
    places = Settings().max_concurrent_rounds
    assert "MAX_CONCURRENT_ROUNDS" not in env()  # the default is the one in force
    target = float(trigger()["metadata"]["threshold"])
    rounds_per_minute_per_pod = target * places / seconds * 60
    spec = scaled("ScaledObject")["spec"]
    assert spec["maxReplicaCount"] == math.ceil(min(tpm / tokens, rpm / calls) / rounds_per_minute_per_pod)
    hpa = one("deploy/hpa.yaml", "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (spec["minReplicaCount"], spec["maxReplicaCount"])


def test_the_scaled_mode_shares_sessions_on_postgres_signed_in_with_the_pods_identity() -> None:
    """Replicas need one session store: the scaled Deployment's settings, as the service reads them, are
    Postgres with Entra ID sign-in — a URL with the identity as its user and no password, and no Secret."""
    from app.settings import Settings

    deployment = scaled("Deployment")
    pod = deployment["spec"]["template"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    url, entra = env["CHECKPOINTER_URL"]["value"], env["POSTGRES_ENTRA_AUTH"]["value"]
    settings = Settings(checkpointer_url=url, postgres_entra_auth=entra)  # valid as the service would load it
    assert settings.postgres_entra_auth and url.startswith("postgresql://REPLACE-identity-name@")
    assert "sslmode=require" in url and ":" not in url.split("://", 1)[1].split("@", 1)[0]  # no password
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"  # the token comes from the pod
