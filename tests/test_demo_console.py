"""The demo's console output keeps every URI whole on one line at 80 columns (a newcomer copies them)."""

from __future__ import annotations

import io

from rich.console import Console

from rlops_demo.console import print_summary, relay_line, say
from rlops_demo.report import RoundSummary

STORAGE = "/home/someone/projects/rlops/results/demo/runs/20261122T031500Z/storage"
URIS = [
    f"{STORAGE}/round-1/PPO_corridor_2d76f_00000_0_2026-11-22_02-55-30/checkpoint_000000",
    "s3://a-rather-long-bucket-name/experiments/round-2/PPO_corridor_9f0e1_00000_0_2026-11-22_03-00-00/checkpoint_000009",
]


def _console() -> Console:
    return Console(width=80, record=True, file=io.StringIO(), color_system=None)


def _summary() -> dict:
    return {
        "pointer_to_live_seconds": 1.27,
        "requests_served": 4000,
        "requests_failed": 0,
        "latency_p50_ms": 2.1,
        "latency_p99_ms": 30.5,
        "episodes": 300,
        "goal_rate_after_rollout": 1.0,
    }


def _assert_whole(text: str, uri: str) -> None:
    lines = text.splitlines()
    assert any(uri in line for line in lines), f"{uri} is not whole on any line of:\n{text}"


def test_summary_prints_every_uri_whole_on_one_line() -> None:
    console = _console()
    rounds = [RoundSummary(f"round-{i + 1}", uri, 5.0 + i, True, 10.0, None) for i, uri in enumerate(URIS)]
    report = f"{STORAGE}/../report.html"
    print_summary(console, _summary(), rounds, STORAGE, report)  # type: ignore[arg-type]
    text = console.export_text()
    for uri in [*URIS, STORAGE, report]:
        _assert_whole(text, uri)
    assert "4000" in text and "1.27 s" in text  # the numbers are still in the table


def test_engine_lines_and_messages_keep_uris_whole() -> None:
    console = _console()
    relay_line(console, "[engine]", f"03:01:02 pointer -> {URIS[1]}\n")
    say(console, f"round-1 checkpoint: {URIS[0]}")
    text = console.export_text()
    for uri in URIS:
        _assert_whole(text, uri)


def test_plain_rich_output_would_break_them() -> None:
    """The check above can fail: rich's default printing at 80 columns breaks these URIs."""
    console = _console()
    console.print(f"round-1 checkpoint: {URIS[0]}")
    text = console.export_text()
    assert not any(URIS[0] in line for line in text.splitlines())
