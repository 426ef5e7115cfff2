"""The demo's console output. URIs are never wrapped: a newcomer must be able to copy them whole.

rich wraps long words to the console width (``overflow="fold"`` too, mid-word), so anything that can
hold a URI or a path is printed with ``soft_wrap=True`` (no wrapping by rich; the terminal may wrap
the line visually, but copying gives the URI whole) and kept out of table cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def say(console: Console, message: str | Text, style: str | None = None) -> None:
    """Print one line that may contain URIs or paths: never wrapped by rich, no markup, no highlighting."""
    text = message if isinstance(message, Text) else Text(message)
    console.print(text, style=style, soft_wrap=True, highlight=False)


def relay_line(console: Console, prefix: str, line: str) -> None:
    """A line of a child process (the engine), prefixed, unwrapped."""
    say(console, Text(prefix, style="dim") + Text(f" {line.rstrip()}"))


def summary_table(summary: dict[str, Any], rounds: list[Any]) -> Table:
    """The numbers of a run (short values only; the URIs follow the table on their own lines)."""
    table = Table(title="rlops demo summary")
    table.add_column("what")
    table.add_column("value")
    for r in rounds:
        table.add_row(f"{r.name} best return", f"{r.metric:.3f}")
    table.add_row("pointer → live", f"{summary['pointer_to_live_seconds']:.2f} s")
    table.add_row("requests served", str(summary["requests_served"]))
    table.add_row("failed requests", str(summary["requests_failed"]))
    table.add_row("latency p50 / p99", f"{summary['latency_p50_ms']} / {summary['latency_p99_ms']} ms")
    table.add_row(
        "episodes (goal rate after rollout)", f"{summary['episodes']} ({summary['goal_rate_after_rollout']})"
    )
    for i, rollout in enumerate(summary.get("rollouts") or [], 1):
        stages = " -> ".join(
            f"{s.get('stage') or s['name']}" + (f" {100 * s['weight']:g}%" if s["name"] != "shadow" else "")
            for s in rollout.get("stages", [])
        )
        table.add_row(f"rollout {i} ({rollout.get('strategy', '')})", f"{rollout['outcome']}: {stages}")
    return table


def print_summary(
    console: Console, summary: dict[str, Any], rounds: list[Any], storage_root: str, report: Path
) -> None:
    """The summary table, then every URI whole on its own line."""
    console.print(summary_table(summary, rounds))
    say(console, f"storage root: {storage_root}")
    for r in rounds:
        say(console, f"{r.name} checkpoint: {r.checkpoint_uri}")
    for i, rollout in enumerate(summary.get("rollouts") or [], 1):
        say(console, f"rollout {i} of {rollout['challenger']}: {rollout['outcome']} ({rollout['reason']})")
    say(console, f"report: {report}")
