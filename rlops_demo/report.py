"""The demo's report: a rollout timeline PNG and a self-contained HTML page (images copied beside it)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlops_demo.load import SLOTS, LoadStats

SLOT_COLORS = {"champion": "tab:blue", "challenger": "tab:orange", "mixed": "tab:gray"}
EVENT_COLORS = {"abort": "tab:red", "promote": "tab:green"}


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


def _short(uri: str) -> str:
    """A checkpoint URI's experiment (``.../round-2/<trial>/checkpoint_000007`` -> ``round-2``)."""
    parts = [p for p in uri.rstrip("/").split("/") if p]
    return parts[-3] if len(parts) >= 3 else (parts[-1] if parts else uri)


def _binned_means(points: list[tuple[float, float]], width: float) -> tuple[list[float], list[float]]:
    """Mean of the values per ``width``-second bin (bins without points left out), at the bin centres."""
    bins: dict[int, list[float]] = {}
    for t, value in points:
        bins.setdefault(int(t // width), []).append(value)
    xs: list[float] = []
    ys: list[float] = []
    for k in sorted(bins):
        if xs and k - 1 not in bins:  # a gap (the slot had no episodes): break the line there
            xs.append(float("nan"))
            ys.append(float("nan"))
        xs.append((k + 0.5) * width)
        ys.append(sum(bins[k]) / len(bins[k]))
    return xs, ys


def plot_progressive(
    stats: LoadStats,
    events: list[tuple[float, str, str]],
    path: Path,
    bin_seconds: float = 5.0,
    estimates: list[tuple[float, float, float, str]] | None = None,
) -> Path:
    """The challenger's weight and each slot's online return over time, with promotions and aborts marked.

    ``events``: ``(t, label, kind)`` on the load's clock; ``kind`` ``abort`` is drawn red, ``promote``
    green, anything else gray. ``estimates``: ``(start, end, value, label)`` off-policy estimates of a
    challenger, drawn as a dashed level over its shadow window. Without a challenger slot (the
    ``Replace`` strategy) the weight panel shows the swaps of the live checkpoint, and every episode
    counts as the champion's of its time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_w, ax_r) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[1, 2])
    states = sorted(stats.slot_states, key=lambda s: s.t)
    end = max([e.finished for e in stats.episodes] + [s.t for s in states] + [1.0])
    if states:
        times = [s.t for s in states] + [end]
        weights = [s.weight if s.mode == "canary" else 0.0 for s in states]
        ax_w.step(times, [*weights, weights[-1]], where="post", color="tab:orange", label="challenger weight")
        for s, nxt in zip(states, times[1:], strict=False):
            if s.mode == "shadow":
                ax_w.axvspan(s.t, nxt, color="tab:purple", alpha=0.15, lw=0)
        ax_w.plot([], [], color="tab:purple", alpha=0.3, lw=6, label="shadow (logged, never returned)")
    else:  # Replace: all traffic moves at each swap of the live checkpoint
        for t, uri in stats.live_checkpoints[1:]:
            ax_w.step([0.0, t, end], [0.0, 1.0, 1.0], where="post", color="tab:orange")
            ax_w.annotate(f"Replace: 100% to {_short(uri)}", (t, 0.5), fontsize=7, rotation=90, va="center")
    ax_w.set_ylim(-0.05, 1.1)
    ax_w.set_ylabel("challenger share")
    if states:
        ax_w.legend(loc="upper left", fontsize=8)

    by_slot: dict[str, list[tuple[float, float]]] = {}
    for e in stats.episodes:
        # Without slots (Replace), each episode belongs to the checkpoint that was live when it ended.
        key = e.policy or (f"champion {_short(e.checkpoint_uri)}" if e.checkpoint_uri else "champion")
        by_slot.setdefault(key, []).append((e.finished, e.total_return))
    palette = iter(["tab:blue", "tab:green", "tab:purple", "tab:brown"])
    order = [k for k in SLOT_COLORS if k in by_slot] + sorted(k for k in by_slot if k not in SLOT_COLORS)
    for slot in order:
        points = by_slot[slot]
        color = SLOT_COLORS.get(slot) or next(palette, "tab:gray")
        ax_r.scatter([t for t, _ in points], [r for _, r in points], s=4, alpha=0.15, color=color)
        xs, ys = _binned_means(points, bin_seconds)
        ax_r.plot(xs, ys, color=color, marker="o", ms=3, label=f"{slot}: mean return per {bin_seconds:g} s")
    for start, end, value, label in estimates or []:
        ax_r.hlines(value, start, end, colors="tab:orange", linestyles="dashed", lw=2)
        ax_r.annotate(
            label, (start, value), textcoords="offset points", xytext=(2, 4), fontsize=7, color="tab:orange"
        )
    ax_r.set_ylabel("episode return (production)")
    ax_r.set_xlabel("seconds since load started")
    ax_r.legend(loc="lower left", fontsize=8)
    for t, label, kind in events:
        color = EVENT_COLORS.get(kind, "gray")
        for ax in (ax_w, ax_r):
            ax.axvline(t, linestyle="--", color=color, lw=1.5 if kind in EVENT_COLORS else 1)
        ax_r.annotate(
            label,
            (t, 0.98),
            xycoords=ax_r.get_xaxis_transform(),
            rotation=90,
            fontsize=7,
            va="top",
            color=color,
        )
    fig.suptitle("Progressive delivery: challenger weight and online return per slot")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _slot_cell(stage: dict[str, Any], slot: str, fmt: Any) -> str:
    episodes = (stage.get("episodes") or {}).get(slot)
    mean = (stage.get("mean_return") or {}).get(slot)
    return f"{slot} {fmt(episodes)} ep, mean {fmt(mean)}"


def rollouts_table(rollouts: list[dict[str, Any]]) -> str:
    """An HTML table of the rollouts: outcome, reason, and per stage the weight and per-slot returns."""
    if not rollouts:
        return "<p><em>no rollouts</em></p>"

    def fmt(value: Any) -> str:
        return (
            "-" if value is None else f"{value:.2f}" if isinstance(value, float) else html.escape(str(value))
        )

    rows = []
    for r in rollouts:
        stages = "<br>".join(
            f"{html.escape(str(s.get('stage') or s['name']))} @ {fmt(s.get('weight'))}: "
            + ", ".join(_slot_cell(s, slot, fmt) for slot in SLOTS)
            for s in r.get("stages", [])
        )
        ope = r.get("off_policy_estimate") or {}
        champion_mean = ope.get("championMean", ope.get("champion_mean"))
        ope_text = (
            f"{fmt(ope.get('estimate'))} vs champion {fmt(champion_mean)}, "
            f"ESS {fmt(ope.get('ess'))}, trustworthy: {fmt(ope.get('trustworthy'))}"
            if ope
            else "-"
        )
        style = ' style="color:#b00"' if r.get("outcome") == "aborted" else ""
        rows.append(
            f"<tr><td><code>{html.escape(str(r.get('challenger')))}</code></td>"
            f"<td>{fmt(r.get('challenger_training_metric'))}</td><td{style}><b>{fmt(r.get('outcome'))}</b></td>"
            f"<td>{fmt(r.get('reason'))}</td><td>{stages}</td><td>{ope_text}</td></tr>"
        )
    return (
        '<table border="1" cellpadding="4"><tr><th>challenger</th><th>training metric</th><th>outcome</th>'
        "<th>reason</th><th>stages (weight: episodes and mean online return per slot)</th>"
        "<th>off-policy estimate</th></tr>" + "".join(rows) + "</table>"
    )


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


def write_html(
    summary: dict[str, Any],
    rounds: list[RoundSummary],
    timeline_png: Path,
    path: Path,
    progressive_png: Path | None = None,
) -> Path:
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
    progressive = (
        _figure(
            "Challenger weight and online return per slot",
            copy_image(progressive_png, report_dir, "progressive"),
            900,
            f"the progressive-delivery plot could not be read from {progressive_png}",
        )
        if progressive_png is not None
        else ""
    )
    rollouts = rollouts_table(summary.get("rollouts") or [])
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
<h2>Rollouts: stages, weights and online return per slot</h2>{rollouts}{progressive}
<h2>Rollout</h2>{timeline}
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
<h2>Training curves</h2>{curves}
</body></html>"""
    path.write_text(body)
    return path
