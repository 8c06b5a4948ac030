"""Render the dashboard's Prometheus panels to one PNG with matplotlib, from a Prometheus that scraped the
service (used by tests/test_dashboard.py when DASHBOARD_PNG is set; the README shows the result)."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def render(prometheus_url: str, dashboard: dict, substitute, path: Path, seconds: int = 40) -> None:
    panels = [p for p in dashboard["panels"]
              if p["type"] in ("timeseries", "barchart", "piechart") and p["datasource"]["type"] == "prometheus"]
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 3.2 * rows))
    end = time.time()
    for ax, panel in zip(axes.flat, panels, strict=False):  # the grid may have more cells than panels
        for target in panel["targets"]:
            expr = substitute(target["expr"]).replace("[1m]", "[10s]").replace("[5m]", "[40s]")
            r = httpx.get(f"{prometheus_url}/api/v1/query_range", timeout=10,
                          params={"query": expr, "start": end - seconds, "end": end, "step": "1s"}).json()
            for series in r["data"]["result"]:
                xs = [float(t) - end for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]))
        ax.set_title(panel["title"], fontsize=10)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f"seconds ({panel['fieldConfig']['defaults'].get('unit', '')})", fontsize=7)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.suptitle(f"{dashboard['title']} — Prometheus panels, real data from tests/test_dashboard.py "
                    "(rate windows shortened to the test's 40 s)", fontsize=12)
    figure.tight_layout(rect=(0, 0, 1, 0.975))
    figure.savefig(path, dpi=70)
    plt.close(figure)
