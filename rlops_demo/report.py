"""The demo's report: a rollout timeline PNG and a self-contained HTML page (images copied beside it)."""

from __future__ import annotations

import html
import json
import re
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


IMAGES = "images"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "image"


def copy_image(source: str | Path, report_dir: Path, name: str) -> str | None:
    """Copy an image (a path or a storage URI) into ``report_dir/images/`` and return its relative link.

    Returns None when the source cannot be read; the report then says so instead of showing a
    broken image.
    """
    from rlops_core import storage

    try:
        data = Path(source).read_bytes() if isinstance(source, Path) else storage.read_bytes(source)
    except (OSError, storage.StorageError, ValueError):
        return None
    target = report_dir / IMAGES / f"{_slug(name)}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)  # read whole first, so copying a file onto itself is harmless
    return f"{IMAGES}/{target.name}"


def _figure(title: str, link: str | None, width: int, missing: str) -> str:
    if link is None:
        return f"<h3>{html.escape(title)}</h3><p><em>{html.escape(missing)}</em></p>"
    return (
        f"<h3>{html.escape(title)}</h3>"
        f'<img src="{html.escape(link)}" alt="{html.escape(title)}" width="{width}">'
    )


def write_html(summary: dict[str, Any], rounds: list[RoundSummary], timeline_png: Path, path: Path) -> Path:
    """A self-contained report folder: ``path`` plus ``images/`` beside it, linked relatively.

    The training curves (wherever training wrote them, local or S3) and the rollout timeline are
    copied into ``images/``, so the folder can be copied, archived or served as it is.
    """
    report_dir = path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.metric:.3f}</td><td>{'yes' if r.promoted else 'no'}</td>"
        f"<td>{r.seconds:.1f}</td><td><code>{html.escape(r.checkpoint_uri)}</code></td></tr>"
        for r in rounds
    )
    timeline = _figure(
        "Requests, latency and the live checkpoint",
        copy_image(timeline_png, report_dir, "rollout"),
        900,
        f"the rollout timeline could not be read from {timeline_png}",
    )
    curves = "".join(
        _figure(
            r.name,
            copy_image(r.curves_png, report_dir, f"{r.name}-training-curves") if r.curves_png else None,
            800,
            f"no training curves for {r.name}"
            + (f" (could not read {r.curves_png})" if r.curves_png else " (training wrote none)"),
        )
        for r in rounds
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>rlops demo report</title>
<style>body {{ font-family: sans-serif; max-width: 1000px }} td:first-child {{ white-space: nowrap }}
pre {{ white-space: pre-wrap; overflow-wrap: anywhere }} img {{ max-width: 100% }}</style></head>
<body>
<h1>rlops: train → promote → serve, on one machine</h1>
<h2>Training rounds</h2>
<table border="1" cellpadding="4"><tr><th>round</th><th>best mean return</th><th>promoted</th>
<th>seconds</th><th>checkpoint</th></tr>{rows}</table>
<h2>Rollout</h2>{timeline}
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
<h2>Training curves</h2>{curves}
</body></html>"""
    path.write_text(body)
    return path
