"""The demo's progressive-delivery pieces without Ray: strategy, load over real HTTP, summary, report.

- The strategy is validated by the operator's own ``ProgressiveSpec`` (the model the engine will use).
- The load generator runs against a small local HTTP endpoint (``http.server`` in a thread, an
  emulation of the Serve app's progressive contract: ``episode_id`` checked with the serving code's own
  validator, ``policy`` in answers, ``POST /feedback``), and against one without a challenger slot.
- The ``rollouts`` entries are built from states made with the real ``ProgressiveState`` model
  (``to_status()``: the camelCase shape the engine writes), and the report draws them.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rlops_operator.progressive import (
    OffPolicyEvidence,
    ProgressiveSpec,
    ProgressiveState,
    StageSummary,
)

from rlops_demo.__main__ import story_problems
from rlops_demo.load import EpisodeRecord, LoadGenerator, LoadStats, SlotState
from rlops_demo.report import RoundSummary, plot_progressive, plot_timeline, write_html
from rlops_demo.rollouts import progressive_entry, progressive_estimates, progressive_events, replace_entry
from rlops_demo.strategy import DEMO_STRATEGY, engine_args, read_progressive, write_strategy
from tests.test_report_render import image_sources
from tests.waiting import wait_for
from workloads.serving.decision_writer import DecisionLogSettings
from workloads.serving.routing import EpisodeIdError, validate_episode_id

WALL0 = 1_700_000_000.0  # the load generator's clock 0 in wall-clock seconds


# -------------------------------------------------------------------------------------------- strategy
def test_demo_strategy_is_a_valid_progressive_spec_sized_for_the_demo(tmp_path: Path) -> None:
    spec = ProgressiveSpec.from_resource(DEMO_STRATEGY)
    assert spec.progressive and spec.shadow.enabled and spec.off_policy_gate.enabled
    assert [s.weight for s in spec.steps][-1] == 1.0  # ends in the Full stage
    flush = DecisionLogSettings(root="/x").flush_seconds
    assert flush + 1 <= spec.settle_seconds <= flush + 10  # a few seconds above the writer's flush
    assert sum(s.hold_seconds for s in spec.steps) < 60  # short holds: the demo stays under 8 minutes
    # The file the CLI gets is the same strategy, and the arguments name it.
    path = write_strategy(tmp_path / "strategy.yaml")
    assert ProgressiveSpec.from_resource(__import__("yaml").safe_load(path.read_text())) == spec
    args = engine_args(path, tmp_path / "status.json", log_root="/s")
    assert args == [
        "--strategy-file",
        str(path),
        "--status-file",
        str(tmp_path / "status.json"),
        "--log-root",
        "/s",
    ]


def test_read_progressive_tolerates_missing_and_half_written_status(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    assert read_progressive(status) is None
    status.write_text('{"progressive": {"stage": "Sha')  # the engine is rewriting it
    assert read_progressive(status) is None
    status.write_text(json.dumps({"phase": "Idle"}))
    assert read_progressive(status) is None
    status.write_text(json.dumps({"progressive": {"stage": "Shadow"}}))
    assert read_progressive(status) == {"stage": "Shadow"}


# ------------------------------------------------------------------------------- load generator, HTTP
class _Endpoint:
    """A local HTTP endpoint speaking the Serve app's request shapes (emulated, for the client side)."""

    def __init__(self, progressive: bool, weight: float = 0.5) -> None:
        self.progressive = progressive
        self.weight = weight
        self.acts: list[dict[str, Any]] = []
        self.feedback: list[dict[str, Any]] = []
        self.bad: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                meta: dict[str, Any] = {"checkpoint_uri": "/s/champion"}
                if endpoint.progressive:
                    meta["challenger"] = {"checkpoint_uri": "/s/challenger", "mode": "canary", "weight": 0.5}
                self._send(200, meta)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/feedback":
                    try:
                        validate_episode_id(body["episode_id"])
                    except (EpisodeIdError, KeyError) as exc:
                        endpoint.bad.append(str(exc))
                        return self._send(400, {"error": {"kind": "invalid", "message": str(exc)}})
                    endpoint.feedback.append(body)
                    return self._send(200, {"accepted": True})
                endpoint.acts.append(body)
                answer: dict[str, Any] = {"action": 0 if body["state"][0] > 4 else 1}
                if endpoint.progressive and "episode_id" in body:
                    point = int.from_bytes(hashlib.blake2b(body["episode_id"].encode()).digest()[:8]) / 2**64
                    answer["policy"] = "challenger" if point < endpoint.weight else "champion"
                self._send(200, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _play(endpoint: _Endpoint, count: int, **kwargs: Any) -> LoadStats:
    load = LoadGenerator(endpoint.url, workers=2, max_seconds=60, **kwargs).start()
    try:
        wait_for(lambda: len(load.stats.episodes) >= count, 30, what=f"{count} episodes played")
    finally:
        stats = load.stop()
    return stats


def test_load_sends_episode_ids_and_feedback_when_the_endpoint_has_a_challenger_slot() -> None:
    endpoint = _Endpoint(progressive=True)
    try:
        stats = _play(endpoint, 20, episodes=None)  # detected from /metadata
    finally:
        endpoint.close()
    assert stats.progressive and stats.failed == 0 and endpoint.bad == []
    ids = {a["episode_id"] for a in endpoint.acts}
    assert all(validate_episode_id(i) == i for i in ids)
    # Every step's reward is fed back, in order, and exactly the last step of an episode says done.
    by_episode: dict[str, list[dict[str, Any]]] = {}
    for f in endpoint.feedback:
        by_episode.setdefault(f["episode_id"], []).append(f)
    finished = [fs for fs in by_episode.values() if fs[-1]["done"]]
    assert len(finished) >= 20
    asked: dict[str, list[int]] = {}
    for a in endpoint.acts:
        asked.setdefault(a["episode_id"], []).append(a["step"])
    for fs in finished:
        assert [f["step"] for f in fs] == list(range(len(fs)))
        assert asked[fs[0]["episode_id"]] == list(range(len(fs)))  # one request per step, same step index
        assert [f["done"] for f in fs] == [False] * (len(fs) - 1) + [True]
    # Which slot answered is recorded per episode, and both slots got episodes at weight 0.5.
    slots = {e.policy for e in stats.episodes}
    assert slots == {"champion", "challenger"}
    assert stats.slot_states and stats.slot_states[0].weight == 0.5 and stats.slot_states[0].mode == "canary"
    per_slot = stats.slot_returns()
    assert per_slot["champion"]["episodes"] + per_slot["challenger"]["episodes"] == len(stats.episodes)


def test_load_keeps_the_seed_request_shape_without_a_challenger_slot() -> None:
    endpoint = _Endpoint(progressive=False)
    try:
        stats = _play(endpoint, 10, episodes=None)
    finally:
        endpoint.close()
    assert not stats.progressive and stats.failed == 0
    assert endpoint.feedback == []
    assert all(set(a) == {"state"} for a in endpoint.acts)
    assert {e.policy for e in stats.episodes} == {""}


def test_load_keeps_the_seed_request_shape_by_default_even_with_a_slot() -> None:
    endpoint = _Endpoint(progressive=True)
    try:
        stats = _play(endpoint, 10)
    finally:
        endpoint.close()
    assert not stats.progressive and stats.failed == 0
    assert endpoint.feedback == []
    assert all(set(a) == {"state"} for a in endpoint.acts)
    assert {e.policy for e in stats.episodes} == {""}


def test_failed_feedback_counts_as_a_failed_request() -> None:
    endpoint = _Endpoint(progressive=True)
    endpoint.server.RequestHandlerClass.do_POST_orig = endpoint.server.RequestHandlerClass.do_POST  # type: ignore[attr-defined]

    def refuse_feedback(handler: Any) -> None:
        if handler.path == "/feedback":
            handler.rfile.read(int(handler.headers["Content-Length"]))
            return handler._send(503, {"error": {"kind": "unavailable", "message": "down"}})
        return handler.do_POST_orig()

    endpoint.server.RequestHandlerClass.do_POST = refuse_feedback  # type: ignore[method-assign]
    try:
        stats = _play(endpoint, 3, episodes=True)
    finally:
        endpoint.close()
    failed = [r for r in stats.requests if not r.ok]
    assert failed and all(r.kind == "feedback" and r.error == "HTTP 503" for r in failed)
    assert stats.failed == len(failed)


# ------------------------------------------------------------------------------------ summary, report
def _stage(name: str, stage: str, weight: float, start: float, end: float | None, **kw: Any) -> StageSummary:
    return StageSummary(
        name=name,
        stage=stage,
        weight=weight,
        started_at=WALL0 + start,
        ended_at=None if end is None else WALL0 + end,
        **kw,
    )


def _estimate(value: float, champion: float, trustworthy: bool = True) -> OffPolicyEvidence:
    return OffPolicyEvidence(
        method="PDWIS",
        estimate=value,
        interval=[value - 1, value + 1],
        champion_mean=champion,
        difference=value - champion,
        difference_interval=[value - champion - 1.2, value - champion + 1.2],
        episodes=300,
        ess=40.0,
        trustworthy=trustworthy,
    )


def _promoted_state() -> dict[str, Any]:
    ope = _estimate(9.3, 6.9)
    stages = [
        _stage(
            "shadow",
            "Shadow",
            0.0,
            10,
            40,
            outcome="passed",
            episodes={"champion": 310, "challenger": 0},
            mean_return={"champion": 6.9, "challenger": None},
        ),
        _stage("offPolicyGate", "OffPolicyGate", 0.0, 40, 41, outcome="passed", off_policy_estimate=ope),
        _stage(
            "canary",
            "Canary(0)",
            0.1,
            41,
            55,
            outcome="passed",
            episodes={"champion": 120, "challenger": 13},
            mean_return={"champion": 7.0, "challenger": 9.4},
        ),
        _stage(
            "canary",
            "Canary(1)",
            0.5,
            55,
            65,
            outcome="passed",
            episodes={"champion": 30, "challenger": 28},
            mean_return={"champion": 6.8, "challenger": 9.5},
        ),
        _stage(
            "full",
            "Full",
            1.0,
            65,
            75,
            outcome="promoted",
            episodes={"champion": 0, "challenger": 40},
            mean_return={"champion": None, "challenger": 9.4},
        ),
    ]
    state = ProgressiveState(
        stage="Promoted",
        weight=1.0,
        mode=None,
        champion_uri="/s/round-1/ckpt",
        challenger_uri="/s/round-2/ckpt",
        started_at=WALL0 + 10,
        stage_started_at=WALL0 + 75,
        stages=stages,
        off_policy=ope,
        outcome="promoted",
    )
    return state.to_status()


def _aborted_state() -> dict[str, Any]:
    stages = [
        _stage(
            "shadow",
            "Shadow",
            0.0,
            100,
            120,
            outcome="passed",
            episodes={"champion": 300, "challenger": 0},
            mean_return={"champion": 9.4, "challenger": None},
        ),
        _stage(
            "offPolicyGate",
            "OffPolicyGate",
            0.0,
            120,
            121,
            outcome="passed",
            off_policy_estimate=_estimate(9.0, 9.4, trustworthy=False),
        ),
        _stage(
            "canary",
            "Canary(0)",
            0.1,
            121,
            135,
            outcome="aborted",
            episodes={"champion": 110, "challenger": 12},
            mean_return={"champion": 9.4, "challenger": 4.1},
        ),
    ]
    state = ProgressiveState(
        stage="Aborted",
        weight=0.0,
        mode=None,
        champion_uri="/s/round-2/ckpt",
        challenger_uri="/s/round-3/ckpt",
        started_at=WALL0 + 100,
        stage_started_at=WALL0 + 135,
        stages=stages,
        outcome="aborted",
        abort_reason="Regression: challenger 4.10 vs champion 9.40, upper bound -3.1 < -1.0",
    )
    return state.to_status()


def _stats() -> LoadStats:
    stats = LoadStats(progressive=True)
    for i in range(140):  # one episode a second; slots as the stages above route them
        t = float(i)
        slot = (
            "champion"
            if t < 41 or (100 <= t < 121) or t >= 135
            else ("challenger" if i % 3 == 0 else "champion")
        )
        if 65 <= t < 100:
            slot = "challenger" if t < 75 else "champion"  # after promotion round-2 is the champion
        ret = 4.0 if (slot == "challenger" and 121 <= t < 135) else 9.4
        stats.episodes.append(EpisodeRecord(t + 0.9, ret, ret > 5, slot, started=t))
    stats.slot_states += [
        SlotState(10, "shadow", 0.0, "/s/round-2/ckpt", "/s/round-1/ckpt"),
        SlotState(41, "canary", 0.1, "/s/round-2/ckpt", "/s/round-1/ckpt"),
        SlotState(55, "canary", 0.5, "/s/round-2/ckpt", "/s/round-1/ckpt"),
        SlotState(65, "canary", 1.0, "/s/round-2/ckpt", "/s/round-1/ckpt"),
        SlotState(75, None, 0.0, None, "/s/round-2/ckpt"),
        SlotState(100, "shadow", 0.0, "/s/round-3/ckpt", "/s/round-2/ckpt"),
        SlotState(121, "canary", 0.1, "/s/round-3/ckpt", "/s/round-2/ckpt"),
        SlotState(135, None, 0.0, None, "/s/round-2/ckpt"),
    ]
    stats.live_checkpoints += [(0.1, "/s/round-1/ckpt"), (75.0, "/s/round-2/ckpt")]
    return stats


def test_promoted_entry_has_the_issue_fields_from_the_engine_status() -> None:
    entry = progressive_entry(_promoted_state(), 9.56, _stats(), WALL0)
    assert entry["challenger"] == "/s/round-2/ckpt" and entry["challenger_training_metric"] == 9.56
    assert entry["outcome"] == "promoted" and "Canary(1)" in entry["reason"]
    assert [s["name"] for s in entry["stages"]] == ["shadow", "canary", "canary", "full"]  # no gate stage
    assert [s["weight"] for s in entry["stages"]] == [0.0, 0.1, 0.5, 1.0]
    canary = entry["stages"][1]
    assert canary["episodes"] == {"champion": 120, "challenger": 13}
    assert canary["mean_return"] == {"champion": 7.0, "challenger": 9.4}
    assert entry["off_policy_estimate"]["estimate"] == 9.3 and entry["off_policy_estimate"]["ess"] == 40.0
    # The client's own view of the same window (episodes that started in [41, 55)).
    seen = canary["load_generator"]
    assert seen["challenger"]["episodes"] == len([i for i in range(41, 55) if i % 3 == 0])
    assert seen["champion"]["episodes"] + seen["challenger"]["episodes"] == 14
    json.dumps(entry)  # summary.json must serialise it


def test_aborted_entry_keeps_the_reason_and_the_untrustworthy_estimate() -> None:
    entry = progressive_entry(_aborted_state(), 9.77, _stats(), WALL0)
    assert entry["outcome"] == "aborted" and entry["reason"].startswith("Regression")
    assert entry["stages"][-1]["outcome"] == "aborted"
    assert entry["stages"][-1]["mean_return"]["challenger"] == 4.1
    assert entry["off_policy_estimate"]["trustworthy"] is False  # taken from the gate's stage summary
    assert entry["stages"][-1]["load_generator"]["challenger"]["mean_return"] == 4.0


def test_a_rollout_still_running_says_so() -> None:
    state = _aborted_state()
    state.update(outcome=None, stage="Canary", abortReason=None)
    entry = progressive_entry(state, 9.77)
    assert entry["outcome"] == "running" and "Canary" in entry["reason"]
    assert "load_generator" not in entry["stages"][0]


def test_replace_entry_splits_episodes_at_the_swap() -> None:
    stats = _stats()
    entry = replace_entry(stats, "/s/round-1/ckpt", "/s/round-2/ckpt", 9.5, live_at=75.0)
    (full,) = entry["stages"]
    assert entry["outcome"] == "promoted" and entry["strategy"] == "Replace"
    assert full["name"] == "full" and full["weight"] == 1.0
    assert full["episodes"] == {"champion": 75, "challenger": 65}


def test_events_mark_stages_promotion_and_the_abort() -> None:
    events = progressive_events(_promoted_state(), WALL0) + progressive_events(_aborted_state(), WALL0)
    kinds = [(round(t), kind) for t, _, kind in events if kind != "info"]
    assert kinds == [(75, "promote"), (135, "abort")]
    labels = [label for _, label, _ in events]
    assert "Canary(0) 10%" in labels and "Full 100%" in labels
    assert "ABORT ckpt: Regression" in labels


def test_estimates_span_the_shadow_window_up_to_the_gate_verdict() -> None:
    assert progressive_estimates(_promoted_state(), WALL0, "round-2") == [
        (10.0, 41.0, 9.3, "round-2: off-policy estimate 9.30")
    ]
    no_gate = _aborted_state()
    no_gate["stages"] = no_gate["stages"][:1]  # aborted during shadow: no estimate was made
    assert progressive_estimates(no_gate, WALL0) == []


def test_story_problems_name_what_the_run_failed_to_show() -> None:
    promoted = progressive_entry(_promoted_state(), 9.56)
    aborted = progressive_entry(_aborted_state(), 9.77)
    third = RoundSummary("round-3", "/s/round-3/ckpt", 9.77, True, 30.0, None)
    good = {
        "requests_failed": 0,
        "rollouts": [promoted, aborted],
        "live_checkpoints": [(75.0, "/s/round-2/ckpt")],
    }
    assert story_problems(good, "/s/round-2/ckpt", third) == []
    bad = {**good, "requests_failed": 2, "rollouts": [promoted, {**aborted, "outcome": "promoted"}]}
    bad["live_checkpoints"] = [(75.0, "/s/round-2/ckpt"), (150.0, "/s/round-3/ckpt")]
    problems = " | ".join(story_problems(bad, "/s/round-2/ckpt", third))
    assert "2 requests failed" in problems and "was not stopped" in problems and "not round-2" in problems
    weak = RoundSummary("round-3", "/s/round-3/ckpt", 9.1, False, 30.0, None)
    assert "--third-iters" in " ".join(
        story_problems({**good, "rollouts": [promoted]}, "/s/round-2/ckpt", weak)
    )


def test_report_shows_weights_per_slot_returns_and_the_abort(tmp_path: Path) -> None:
    stats = _stats()
    rollouts = [
        progressive_entry(_promoted_state(), 9.56, stats, WALL0),
        progressive_entry(_aborted_state(), 9.77, stats, WALL0),
    ]
    events = progressive_events(_promoted_state(), WALL0) + progressive_events(_aborted_state(), WALL0)
    run = tmp_path / "run"
    estimates = progressive_estimates(_aborted_state(), WALL0, "round-3")
    png = plot_progressive(stats, events, run / "images" / "progressive.png", estimates=estimates)
    timeline = plot_timeline(stats, {"live": 75.0}, run / "images" / "rollout.png")
    rounds = [
        RoundSummary(n, f"/s/{n}/ckpt", m, True, 1.0, None) for n, m in [("round-2", 9.56), ("round-3", 9.77)]
    ]
    report = write_html(
        {"rollouts": rollouts, "requests_failed": 0}, rounds, timeline, run / "report.html", png
    )
    text = report.read_text()
    assert "images/progressive.png" in image_sources(text)
    assert (run / "images" / "progressive.png").stat().st_size > 10_000
    assert "aborted" in text and "Regression" in text and "promoted" in text
    assert "Canary(1) @ 0.50" in text


def test_report_without_a_challenger_slot_draws_the_replace_swap(tmp_path: Path) -> None:
    stats = _stats()
    stats.slot_states.clear()
    for i, e in enumerate(stats.episodes):
        stats.episodes[i] = EpisodeRecord(e.finished, e.total_return, e.reached_goal)
    png = plot_progressive(stats, [(75.0, "Replace: ckpt live", "promote")], tmp_path / "p.png")
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("seconds", [0.0])
def test_slot_returns_window_is_half_open(seconds: float) -> None:
    stats = LoadStats()
    stats.episodes += [
        EpisodeRecord(2.0, 1.0, True, "champion", started=1.0),
        EpisodeRecord(3.0, 3.0, True, "champion", started=2.0),
    ]
    assert stats.slot_returns(1.0, 2.0)["champion"] == {"episodes": 1, "mean_return": 1.0}
    assert stats.slot_returns(seconds)["champion"] == {"episodes": 2, "mean_return": 2.0}
    assert stats.slot_returns()["challenger"] == {"episodes": 0, "mean_return": None}
    time.sleep(0)


# ------------------------------------------------------------------------- waiting for the engine's verdict
def _demo(tmp_path: Path, timeout: float = 20.0) -> Any:
    from rich.console import Console

    from rlops_demo import rundir
    from rlops_demo.__main__ import Demo, DemoSettings

    settings = DemoSettings(progressive=True, progressive_timeout=timeout)
    return Demo(settings, rundir.new_run(tmp_path / "out"), out=Console(file=io.StringIO()))


def _write_status(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"phase": "Rolling", "progressive": state}))
    tmp.replace(path)


def test_wait_progressive_skips_the_previous_rollout_and_returns_the_verdict(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    _write_status(demo.status_file, _promoted_state())  # round 2's finished rollout is still in the file
    running = {**_aborted_state(), "outcome": None, "stage": "Shadow", "abortReason": None}

    def engine() -> None:
        time.sleep(1.0)
        _write_status(demo.status_file, running)
        time.sleep(1.0)
        _write_status(demo.status_file, _aborted_state())

    threading.Thread(target=engine, daemon=True).start()
    state = demo.wait_progressive("/s/round-3/ckpt")
    assert state["outcome"] == "aborted" and state["challengerUri"] == "/s/round-3/ckpt"
    assert demo.progressive_states["/s/round-3/ckpt"] is state


def test_wait_progressive_fails_clearly_when_the_engine_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    from rlops_demo.__main__ import DemoFailed

    demo = _demo(tmp_path)
    demo.engine = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"], text=True)
    demo.engine.wait(timeout=30)
    with pytest.raises(DemoFailed, match=r"engine exited \(code 2\).*/s/round-3/ckpt"):
        demo.wait_progressive("/s/round-3/ckpt")


def test_wait_progressive_times_out_saying_where_it_stood(tmp_path: Path) -> None:
    from rlops_demo.__main__ import DemoFailed

    demo = _demo(tmp_path, timeout=1.5)
    with pytest.raises(
        DemoFailed, match=r"no progressive status in .*engine-status.json.*--progressive-timeout"
    ):
        demo.wait_progressive("/s/round-3/ckpt")
    _write_status(demo.status_file, {**_aborted_state(), "outcome": None, "stage": "Canary"})
    with pytest.raises(DemoFailed, match=r"did not finish within 2 s \(stage Canary\)"):
        demo.wait_progressive("/s/round-3/ckpt")
