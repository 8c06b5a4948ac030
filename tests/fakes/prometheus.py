"""A real Prometheus server (Debian's ``prometheus`` package) on 127.0.0.1, scraping given targets."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import yaml

from tests.fakes import free_port


class PrometheusServer:
    def __init__(self, targets: list[str], scrape_interval: str = "1s", rule_files: Sequence[Path] = ()) -> None:
        """``rule_files``: Prometheus rules files to load, each group evaluated every ``scrape_interval`` (the
        files' own intervals are for production)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: apt-get install prometheus (.ci/run does)")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="qa-prom-"))
        self.port = free_port()
        loaded: list[str] = []
        for i, path in enumerate(rule_files):
            document = yaml.safe_load(path.read_text())
            for group in document["groups"]:
                group["interval"] = scrape_interval
            (self.root / f"rules-{i}.yaml").write_text(yaml.safe_dump(document))
            loaded.append(f"rules-{i}.yaml")
        # honor_labels: true, as the PodMonitor in otel-collector.yaml: keep the exporter's job/instance.
        (self.root / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
            + (f"rule_files: {loaded!r}\n" if loaded else "")
            + "scrape_configs:\n  - job_name: otel-collector\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: {targets!r}\n".replace("'", '"'))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.root / 'prometheus.yml'}", f"--storage.tsdb.path={self.root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(self.root / "log").open("w"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"prometheus did not start: {(self.root / 'log').read_text()[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_for_scrape(self, timeout_s: float = 30.0) -> None:
        """Block until every target was scraped successfully once (the first scrape waits for target
        discovery, which Prometheus throttles to every 5 s)."""
        deadline = time.monotonic() + timeout_s
        while not (up := self.query("up")) or any(s["value"][1] != "1" for s in up):
            assert time.monotonic() < deadline, f"no successful scrape in {timeout_s} s: {up}"
            time.sleep(0.2)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """``/api/v1/query`` now, or at unix time ``at`` (several queries at one instant agree)."""
        params: dict[str, str | float] = {"query": expr} if at is None else {"query": expr, "time": at}
        r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        r = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10)
        return r.json()["data"]


    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict]:
        """``/api/v1/query_range``: what a Grafana panel draws (``values``: ``[[unix time, "value"], …]``)."""
        r = httpx.get(f"{self.url}/api/v1/query_range",
                      params={"query": expr, "start": start, "end": end, "step": step_s}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]
