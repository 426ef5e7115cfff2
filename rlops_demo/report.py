"""The demo's report: a rollout timeline PNG and an HTML page that links the training curves."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlops_demo.load import LoadStats


@dataclass
class RoundSummary:
    """One training round as the report shows it."""

    name: str
    checkpoint_uri: str
    metric: float
    promoted: bool
    seconds: float
    curves_png: str | None


def plot_timeline(stats: LoadStats, marks: dict[str, float], path: Path) -> Path:
    """Requests per second, latency and the live checkpoint over time, with the rollout's moments marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reqs = sorted(stats.requests, key=lambda r: r.started)
    fig, (ax_rate, ax_lat) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    if reqs:
        horizon = int(reqs[-1].started) + 1
        ok = [0] * horizon
        bad = [0] * horizon
        for r in reqs:
            (ok if r.ok else bad)[int(r.started)] += 1
        ax_rate.plot(range(horizon), ok, label="answered / s", color="tab:green")
        ax_rate.plot(range(horizon), bad, label="failed / s", color="tab:red")
        ax_lat.scatter(
            [r.started for r in reqs if r.ok], [1000 * r.latency for r in reqs if r.ok], s=2, alpha=0.3
        )
    for label, t in marks.items():
        for ax in (ax_rate, ax_lat):
            ax.axvline(t, linestyle="--", color="gray")
        ax_rate.annotate(label, (t, ax_rate.get_ylim()[1] * 0.9), rotation=90, fontsize=8, va="top")
    for t, uri in stats.live_checkpoints:
        label = f"live: {Path(uri).name}"
        ax_lat.annotate(label, (t, 0.02), xycoords=ax_lat.get_xaxis_transform(), fontsize=7, rotation=90)
    ax_rate.set_ylabel("requests / s")
    ax_rate.legend(loc="upper left")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds since load started")
    ax_lat.set_yscale("log")
    fig.suptitle("Rollout under load: pointer written → endpoint serves the new checkpoint")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(summary: dict[str, Any], rounds: list[RoundSummary], timeline_png: Path, path: Path) -> Path:
    """A single HTML page: the summary, the training curves of each round and the rollout timeline."""
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.metric:.3f}</td><td>{'yes' if r.promoted else 'no'}</td>"
        f"<td>{r.seconds:.1f}</td><td><code>{html.escape(r.checkpoint_uri)}</code></td></tr>"
        for r in rounds
    )
    curves = "".join(
        f"<h3>{html.escape(r.name)}</h3><img src='{html.escape(r.curves_png)}' width='800'>"
        for r in rounds
        if r.curves_png
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>rlops demo report</title></head>
<body style="font-family: sans-serif; max-width: 1000px">
<h1>rlops: train → promote → serve, on one machine</h1>
<h2>Training rounds</h2>
<table border="1" cellpadding="4"><tr><th>round</th><th>best mean return</th><th>promoted</th>
<th>seconds</th><th>checkpoint</th></tr>{rows}</table>
<h2>Rollout</h2><img src="{html.escape(timeline_png.name)}" width="900">
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
<h2>Training curves</h2>{curves}
</body></html>"""
    path.write_text(body)
    return path
