"""A canary challenger that fails at request time: the champion answers, the failure is counted and logged.

Real Ray Serve, one replica, deployed through the dashboard's Serve REST API (the KubeRay way). The champion
is the trained corridor checkpoint (``corridor_checkpoints.final``). The failing challenger is a real,
manifested RLlib checkpoint that *loads* fine (so the replica keeps it in the challenger slot) but whose
forward pass raises on every corridor request: its RLModule was built for CartPole (4 inputs) and the
corridor sends one. Nothing is mocked: the failure is torch's own shape error inside ``Policy.act``.

Contract under test (docs/serving.md "Challenger slot"): in canary mode a routed episode whose challenger
raises gets ``200`` from the champion (``"policy": "champion"``, ``x-rlops-checkpoint`` naming the
champion), ``rlops_serve_slot_errors{slot="challenger"}`` counts it, and the decision log records
``slot: challenger, error: policy_error``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rlops_core.decision_log import DecisionLogReader, DecisionRecord, LogCursor
from tests.helpers.serve_apps import Checkpoints, ServeApps
from tests.waiting import wait_for
from workloads.serving.routing import ChallengerSettings, route

pytestmark = pytest.mark.slow

APP = "canary-fallback"
STATES = (1, 2, 3, 5, 6)


def build_incompatible_checkpoint(root: Path) -> str:
    """A manifested, untrained CartPole PPO checkpoint: it loads, and raises on a corridor observation."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from rlops_core import checkpoints

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .framework("torch")
        .env_runners(num_env_runners=0)
        .rl_module(model_config={"fcnet_hiddens": [8]})
    )
    algo = config.build_algo()
    path = root / "cartpole-challenger"
    try:
        algo.save_to_path(str(path))
    finally:
        algo.stop()
    manifest = checkpoints.build_manifest(
        str(path), metric_name="env_runners/episode_return_mean", metric_value=500.0, env_id="CartPole-v1"
    )
    checkpoints.write_manifest(manifest)
    return manifest.checkpoint_uri


class FallbackApp:
    """The module's one-replica app, reconfigured between tests through ``user_config``."""

    def __init__(self, apps: ServeApps, ck: Checkpoints, broken: str, log_root: Path) -> None:
        self.apps, self.ck, self.broken, self.log_root = apps, ck, broken, str(log_root)
        self.url = apps.url(APP)

    def deploy(self, challenger: dict[str, Any] | None) -> dict[str, Any]:
        user_config = {
            "checkpoint_uri": self.ck.final,
            "challenger": challenger,
            "decision_log": {"root": self.log_root, "flush_seconds": 0.2},
        }
        self.apps.deploy(APP, user_config)

        def applied() -> dict[str, Any] | None:
            resp = httpx.get(f"{self.url}/metadata", timeout=10)
            if resp.status_code != 200:
                return None
            meta = resp.json()
            got = meta.get("challenger")
            if challenger is None:
                return meta if got is None else None
            if got is None or (got["mode"], got["weight"]) != (challenger["mode"], challenger["weight"]):
                return None
            return meta if got.get("loaded") else None

        return wait_for(applied, timeout=180, interval=0.5, what=f"{APP} serving challenger {challenger}")

    def ask(self, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
        with httpx.Client(timeout=60) as client:
            return [client.post(f"{self.url}/", json=body) for body in bodies]

    def decisions(self, since: float, ids: set[str]) -> list[DecisionRecord]:
        """The decision records of these episodes, waiting until every one of them was written."""
        reader = DecisionLogReader(self.log_root, APP, LogCursor.starting_at(since - 3600))
        found: dict[tuple[str, int | None], DecisionRecord] = {}

        def all_written() -> bool:
            for record in reader.poll(time.time()).records:
                if isinstance(record, DecisionRecord) and record.episode_id in ids:
                    found[(record.episode_id, record.step)] = record
            return {eid for eid, _ in found} == ids

        wait_for(all_written, timeout=60, interval=0.3, what=f"decision records of {len(ids)} episodes")
        return list(found.values())


@pytest.fixture(scope="module")
def fallback(
    serve_apps: ServeApps, corridor_checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    broken = build_incompatible_checkpoint(tmp_path_factory.mktemp("broken-challenger"))
    app = FallbackApp(serve_apps, corridor_checkpoints, broken, tmp_path_factory.mktemp("fallback-log"))
    app.deploy(None)
    yield app
    serve_apps.remove(APP)


@pytest.fixture(scope="module")
def champion_actions(fallback: FallbackApp) -> dict[int, int]:
    """The champion's greedy action per corridor state, asked before any challenger is configured."""
    fallback.deploy(None)
    answers = fallback.ask([{"state": [s], "deterministic": True} for s in STATES])
    assert {a.status_code for a in answers} == {200}
    return {s: a.json()["action"] for s, a in zip(STATES, answers, strict=True)}


def _metrics_text() -> str:
    import ray

    texts = []
    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            texts.append(httpx.get(url, timeout=30).text)
    return "\n".join(texts)


def challenger_errors() -> float:
    """``rlops_serve_slot_errors{slot="challenger"}`` of this module's app, summed over replicas."""
    pattern = re.compile(r"^ray_rlops_serve_slot_errors_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    return sum(
        float(v)
        for labels, v in pattern.findall(_metrics_text())
        if f'application="{APP}"' in labels and 'slot="challenger"' in labels
    )


def test_the_broken_challenger_loads_and_raises_only_when_asked(fallback: FallbackApp) -> None:
    """Precondition: the failure under test is at request time, not at load time."""
    meta = fallback.deploy({"checkpoint_uri": fallback.broken, "mode": "canary", "weight": 1.0})
    assert meta["challenger"]["loaded"] is True and meta["challenger"]["last_error"] is None
    assert meta["checkpoint_uri"] == fallback.ck.final
    from workloads.serving.policy import load_policy

    policy = load_policy(fallback.broken)
    with pytest.raises(Exception, match=r"(?i)shape|size|mat"):
        policy.act([np.array([1.0], dtype=np.float32)], explore=False)


def test_canary_challenger_that_raises_falls_back_to_the_champion(
    fallback: FallbackApp, champion_actions: dict[int, int]
) -> None:
    fallback.deploy({"checkpoint_uri": fallback.broken, "mode": "canary", "weight": 1.0})
    before = challenger_errors()
    tag = f"fb{int(time.time() * 1000)}"
    bodies = [
        {"state": [s], "episode_id": f"{tag}-{i}", "step": 0, "deterministic": True}
        for i, s in enumerate(STATES * 6)
    ]
    answers = fallback.ask(bodies)
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers[:3]]
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.json()["policy"] == "champion"
        assert answer.headers["x-rlops-checkpoint"] == fallback.ck.final
        assert answer.json()["action"] == champion_actions[body["state"][0]]  # the champion's own answer
    wait_for(
        lambda: challenger_errors() - before >= len(bodies),
        timeout=120,
        interval=2.0,
        what=f'rlops_serve_slot_errors{{slot="challenger"}} up by {len(bodies)} on Ray\'s metrics endpoint',
    )


def test_the_fallback_is_logged_as_a_challenger_error(fallback: FallbackApp) -> None:
    fallback.deploy({"checkpoint_uri": fallback.broken, "mode": "canary", "weight": 1.0})
    since = time.time()
    tag = f"log{int(since * 1000)}"
    ids = {f"{tag}-{i}" for i in range(10)}
    answers = fallback.ask([{"state": [1], "episode_id": eid, "step": 0} for eid in sorted(ids)])
    assert {a.status_code for a in answers} == {200}
    feedback = httpx.post(
        f"{fallback.url}/feedback", json={"episode_id": f"{tag}-0", "reward": 1.0, "done": True}, timeout=30
    )
    assert feedback.status_code == 202 and feedback.json()["known_episode"] is True
    records = fallback.decisions(since, ids)
    assert len(records) == len(ids)
    for record in records:
        assert record.slot == "challenger" and record.error == "policy_error"
        assert record.mode == "canary" and record.challenger_uri == fallback.broken
        assert record.action in (0, 1)  # the champion's corridor action, not a CartPole one


def test_the_fallback_record_names_the_checkpoint_that_answered(fallback: FallbackApp) -> None:
    fallback.deploy({"checkpoint_uri": fallback.broken, "mode": "canary", "weight": 1.0})
    since = time.time()
    ids = {f"who{int(since * 1000)}-{i}" for i in range(5)}
    answers = fallback.ask([{"state": [2], "episode_id": eid, "step": 0} for eid in sorted(ids)])
    assert {a.headers["x-rlops-checkpoint"] for a in answers} == {fallback.ck.final}
    records = fallback.decisions(since, ids)
    assert {r.checkpoint_uri for r in records} == {fallback.ck.final}


def test_at_half_weight_only_the_challengers_episodes_fall_back(fallback: FallbackApp) -> None:
    settings = {"checkpoint_uri": fallback.broken, "mode": "canary", "weight": 0.5}
    fallback.deploy(settings)
    since = time.time()
    ids = [f"half{int(since * 1000)}-{i}" for i in range(40)]
    routed = {eid: route(eid, ChallengerSettings(**settings)) for eid in ids}
    assert set(routed.values()) == {"champion", "challenger"}  # both slots are exercised
    answers = fallback.ask([{"state": [3], "episode_id": eid, "step": 0} for eid in ids])
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["policy"] for a in answers} == {"champion"}
    records = {r.episode_id: r for r in fallback.decisions(since, set(ids))}
    for eid, slot in routed.items():
        assert records[eid].slot == slot
        assert records[eid].error == ("policy_error" if slot == "challenger" else None)


def test_shadow_mode_with_a_raising_challenger_answers_as_the_champion(
    fallback: FallbackApp, champion_actions: dict[int, int]
) -> None:
    fallback.deploy({"checkpoint_uri": fallback.broken, "mode": "shadow", "weight": 0.0})
    since = time.time()
    ids = [f"shadow{int(since * 1000)}-{i}" for i in range(10)]
    answers = fallback.ask([{"state": [5], "episode_id": eid, "deterministic": True} for eid in ids])
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["policy"] for a in answers} == {"champion"}
    assert {a.json()["action"] for a in answers} == {champion_actions[5]}
    for record in fallback.decisions(since, set(ids)):
        assert record.slot == "champion" and record.error is None
        assert record.shadow is not None and record.shadow.error
    fallback.deploy(None)
