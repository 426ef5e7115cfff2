"""The engine drives a progressive rollout: shadow, off-policy gate, canary steps, Full, promotion or abort.

Real parts: local storage (pointer, checkpoints with manifests), real decision logs written by the Serve
side's own writer (``workloads.serving.decision_writer``), the real state machine, evidence collector and
YAML editing. Stand-in: the target is an in-memory Serve config (``tests.operator.doubles.ConfigTarget``)
instead of KubeRay/Serve. Between polls the status goes through JSON and, where the test says so, into a new
Engine with a new driver: an operator restart.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import yaml
from rlops_operator import serveconfig
from rlops_operator.engine import Engine, StepResult
from rlops_operator.progressive import COMMAND_ANNOTATION, PAUSED_ANNOTATION, ProgressiveSpec
from rlops_operator.spec import RolloutSpec, SpecError, TargetSpec

from rlops_core import checkpoints, storage
from tests.operator.conftest import make_checkpoint
from tests.operator.doubles import Clock, ConfigTarget

T0 = 1_795_000_000.0
BEHAVIOUR = np.array([0.5, 0.3, 0.2])  # the champion samples arms with these probabilities
ARM_MEANS = np.array([0.2, 0.5, 0.8])
GOOD = np.array([0.1, 0.2, 0.7])  # the challenger's arm probabilities: true value 0.68 vs 0.41

STRATEGY: dict[str, Any] = {
    "type": "Progressive",
    "settleSeconds": 0,
    "shadow": {"minEpisodes": 100, "maxDurationSeconds": 600},
    "offPolicyGate": {"minEpisodes": 100, "minEss": 30, "tolerance": 0.02, "bootstrapSamples": 300},
    "steps": [
        {"weight": 0.5, "holdSeconds": 10, "minEpisodes": 30},
        {"weight": 1.0, "holdSeconds": 10, "minEpisodes": 30},
    ],
    "analysis": {"minEpisodes": 30, "minRequests": 20, "maxErrorRate": 0.05, "tolerance": 0.05},
}


class Logs:
    """Serve-side decision logs for the app ``corridor``, written with the replicas' own writer."""

    def __init__(self, root: str, clock: Clock) -> None:
        from workloads.serving.decision_writer import DecisionLogSettings, DecisionWriter

        self.clock = clock
        self.rng = np.random.default_rng(7)
        self.writers = [
            DecisionWriter(DecisionLogSettings(root=root), "corridor", f"replica-{i}", clock=lambda: clock.t)
            for i in range(2)
        ]
        self.n = 0
        self.prefix = f"ep{int(clock.t * 1000)}"  # episode ids unique across Logs instances

    def shadow(self, champion: str, challenger: str, episodes: int) -> None:
        for _ in range(episodes):
            self.n += 1
            a = int(self.rng.choice(3, p=BEHAVIOUR))
            ep = f"{self.prefix}-{self.n}"
            self.writers[self.n % 2].decision(
                episode_id=ep,
                step=0,
                slot="champion",
                checkpoint_uri=champion,
                mode="shadow",
                weight=0.0,
                challenger_uri=challenger,
                action=a,
                prob=float(BEHAVIOUR[a]),
                observation=[0],
                probs=BEHAVIOUR.tolist(),
                latency_ms=2.0,
                shadow={"checkpoint_uri": challenger, "prob": float(GOOD[a]), "probs": GOOD.tolist()},
            )
            self.writers[(self.n + 1) % 2].feedback(ep, float(self.rng.random() < ARM_MEANS[a]), True, step=0)
            self.clock.t += 0.01

    def canary(
        self, champion: str, challenger: str, weight: float, per_slot: int, means: tuple[float, float]
    ) -> None:
        """``per_slot`` finished episodes for each slot that answers at ``weight``; Bernoulli returns."""
        slots = (
            [("challenger", means[1])]
            if weight >= 1.0
            else [("champion", means[0]), ("challenger", means[1])]
        )
        for _ in range(per_slot):
            for slot, mean in slots:
                self.n += 1
                ep = f"{self.prefix}-{self.n}"
                self.writers[self.n % 2].decision(
                    episode_id=ep,
                    step=0,
                    slot=slot,
                    checkpoint_uri=challenger if slot == "challenger" else champion,
                    mode="canary",
                    weight=weight,
                    challenger_uri=challenger,
                    action=0,
                    prob=1.0,
                    latency_ms=2.0,
                )
                self.writers[(self.n + 1) % 2].feedback(ep, float(self.rng.random() < mean), True, step=0)
                self.clock.t += 0.01

    def close(self) -> None:
        for w in self.writers:
            w.close()
            assert w.dropped == 0


@pytest.fixture
def world(ckpt_root: str) -> dict[str, Any]:
    champion = make_checkpoint(ckpt_root, "exp", "trial_a", 5.0)
    challenger = make_checkpoint(ckpt_root, "exp", "trial_b", 6.0)
    pointer = checkpoints.pointer_uri(ckpt_root, "corridor")
    storage.write_text(pointer, champion + "\n")
    clock = Clock()
    clock.t = T0
    return {
        "root": ckpt_root,
        "champion": champion,
        "challenger": challenger,
        "pointer": pointer,
        "clock": clock,
        "target": ConfigTarget(champion),
    }


def rollout_spec(w: dict[str, Any], **strategy: Any) -> RolloutSpec:
    raw = {
        "pointer": w["pointer"],
        "target": {"dashboardUrl": "http://127.0.0.1:1"},
        "strategy": {**STRATEGY, **strategy},
    }
    return RolloutSpec.from_resource(raw, name="test")


def step(
    w: dict[str, Any], status: dict[str, Any], spec: RolloutSpec | None = None, notes: dict | None = None
) -> StepResult:
    """A restarted operator each time: a new Engine and driver, the status as stored JSON."""
    engine = Engine(spec or rollout_spec(w), w["target"], clock=w["clock"], metadata_probe=lambda _u: None)
    result = engine.step(json.loads(json.dumps(status)), annotations=notes)
    json.dumps(result.status, allow_nan=False)  # what the API server would store
    return result


def user_config(target: ConfigTarget) -> dict[str, Any]:
    return yaml.safe_load(target.text)["applications"][0]["deployments"][0]["user_config"]


def started(w: dict[str, Any]) -> dict[str, Any]:
    """Champion live, then the pointer names the challenger: the progressive rollout begins (shadow)."""
    first = step(w, {})
    assert first.state.live is not None and first.state.live.checkpoint_uri == w["champion"]
    storage.write_text(w["pointer"], w["challenger"] + "\n")
    w["clock"].t += 1
    begun = step(w, first.status)
    prog = begun.status["progressive"]
    assert prog["stage"] == "Shadow" and begun.state.rollout is None
    assert [d.transition for d in begun.decisions] == ["Started"]
    uc = user_config(w["target"])
    assert uc["checkpoint_uri"] == w["champion"]
    assert uc["challenger"] == {"checkpoint_uri": w["challenger"], "mode": "shadow", "weight": 0.0}
    assert uc["decision_log"] == {"root": w["root"]}  # logRoot defaults to the storage root
    assert begun.status["challenger"]["metric"]["value"] == 6.0
    return begun.status


def test_full_progressive_rollout_with_a_restart_every_poll(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    logs = Logs(w["root"], w["clock"])
    logs.shadow(w["champion"], w["challenger"], 150)
    logs.close()
    w["clock"].t += 5
    gate = step(w, status)
    assert gate.status["progressive"]["stage"] == "Canary", [d.message for d in gate.decisions]
    assert [d.reason for d in gate.decisions] == ["ShadowComplete", "OffPolicyGatePassed"]
    assert gate.status["progressive"]["offPolicy"]["trustworthy"] is True
    assert user_config(w["target"])["challenger"] == {
        "checkpoint_uri": w["challenger"],
        "mode": "canary",
        "weight": 0.5,
    }
    applied = len(w["target"].servings)
    w["clock"].t += 1
    held = step(w, gate.status)  # hold not over, no episodes: nothing changes, nothing re-applied
    assert held.decisions == [] and len(w["target"].servings) == applied

    logs = Logs(w["root"], w["clock"])
    logs.canary(w["champion"], w["challenger"], 0.5, 40, means=(0.4, 0.7))
    logs.close()
    w["clock"].t += 15
    canary = step(w, held.status)
    assert canary.status["progressive"]["stage"] == "Full", [d.message for d in canary.decisions]
    assert user_config(w["target"])["challenger"]["weight"] == 1.0

    logs = Logs(w["root"], w["clock"])
    logs.canary(w["champion"], w["challenger"], 1.0, 40, means=(0.4, 0.7))
    logs.close()
    w["clock"].t += 15
    full = step(w, canary.status)
    prog = full.status["progressive"]
    assert prog["stage"] == "Promoted" and prog["outcome"] == "promoted"
    assert [d.transition for d in full.decisions] == ["Promoted"]
    assert full.decisions[0].kind == "Promoted"
    uc = user_config(w["target"])
    assert uc["checkpoint_uri"] == w["challenger"] and uc["challenger"] is None
    assert full.state.live.checkpoint_uri == w["challenger"] and full.state.live.metric.value == 6.0
    assert full.state.previous.checkpoint_uri == w["champion"]
    assert full.status["phase"] == "Live"
    stages = [(s["name"], s["weight"], s["outcome"]) for s in prog["stages"]]
    assert stages == [("shadow", 0.0, "passed"), ("canary", 0.5, "passed"), ("full", 1.0, "passed")]
    assert prog["stages"][1]["episodes"] == {"champion": 40, "challenger": 40}
    history = [h["decision"] for h in full.status["history"]]
    assert history.count("Progressed") == 4 and history[-1] == "Promoted"

    w["clock"].t += 30
    idle = step(w, full.status)  # afterwards: the same pointer version is already live, nothing happens
    assert user_config(w["target"])["checkpoint_uri"] == w["challenger"]
    assert all(d.kind != "Progressed" for d in idle.decisions)


def test_abort_on_online_evidence_returns_all_traffic_at_once(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    logs = Logs(w["root"], w["clock"])
    logs.shadow(w["champion"], w["challenger"], 150)
    logs.close()
    w["clock"].t += 5
    canary = step(w, status)
    assert canary.status["progressive"]["stage"] == "Canary"
    logs = Logs(w["root"], w["clock"])
    logs.canary(w["champion"], w["challenger"], 0.5, 60, means=(0.9, 0.1))  # far worse online
    logs.close()
    w["clock"].t += 2  # before the hold ends: the regression rule does not wait
    before = len(w["target"].servings)
    aborted = step(w, canary.status)
    prog = aborted.status["progressive"]
    assert prog["stage"] == "Aborted" and prog["abortReason"].startswith("Regression")
    assert len(w["target"].servings) == before + 1  # one update
    uc = user_config(w["target"])
    assert uc["checkpoint_uri"] == w["champion"] and uc["challenger"] is None
    assert aborted.status["phase"] == "RolledBack" and aborted.state.live.checkpoint_uri == w["champion"]
    assert [d.kind for d in aborted.decisions] == ["RolledBack"] and aborted.decisions[0].warning
    for _ in range(3):  # the same pointer version is never tried again
        w["clock"].t += 60
        aborted = step(w, aborted.status)
        assert aborted.status["progressive"]["stage"] == "Aborted"
    assert len(w["target"].servings) == before + 1
    assert user_config(w["target"])["checkpoint_uri"] == w["champion"]


def test_manual_controls_by_annotation(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    paused = step(w, status, notes={PAUSED_ANNOTATION: "true"})
    assert paused.status["progressive"]["paused"] is True
    assert [d.transition for d in paused.decisions] == ["Paused"]
    bad = step(w, paused.status, notes={COMMAND_ANNOTATION: "{not json", PAUSED_ANNOTATION: "true"})
    assert [d.reason for d in bad.decisions] == ["BadControl"] and "expected JSON" in bad.decisions[0].message
    again = step(w, bad.status, notes={COMMAND_ANNOTATION: "{not json", PAUSED_ANNOTATION: "true"})
    assert again.decisions == []  # reported once
    promote = json.dumps({"id": "p1", "action": "promote", "skipAnalysis": True, "by": "alice"})
    forced = step(w, again.status, notes={COMMAND_ANNOTATION: promote})
    prog = forced.status["progressive"]
    assert prog["stage"] == "Promoted" and prog["overrides"][0]["by"] == "alice"
    assert "Override" in [d.transition for d in forced.decisions]
    assert user_config(w["target"])["checkpoint_uri"] == w["challenger"]
    assert forced.state.live.checkpoint_uri == w["challenger"]
    same = step(w, forced.status, notes={COMMAND_ANNOTATION: promote})  # applied once per id
    assert same.decisions == []
    undo = json.dumps({"id": "u1", "action": "undo", "by": "bob"})
    undone = step(w, same.status, notes={COMMAND_ANNOTATION: undo})
    assert undone.status["progressive"]["stage"] == "RolledBack"
    uc = user_config(w["target"])
    assert uc["checkpoint_uri"] == w["champion"] and uc["challenger"] is None
    assert undone.state.live.checkpoint_uri == w["champion"]
    assert undone.state.previous.checkpoint_uri == w["challenger"]
    assert undone.status["phase"] == "RolledBack"


def test_abort_by_annotation_during_shadow(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    cmd = json.dumps({"id": "a1", "action": "abort", "by": "kubectl"})
    out = step(w, status, notes={COMMAND_ANNOTATION: cmd})
    assert out.status["progressive"]["abortReason"].startswith("ManualAbort")
    assert user_config(w["target"])["challenger"] is None


def test_target_failure_keeps_the_state_and_retries(world: dict[str, Any]) -> None:
    """An abort that cannot be applied is not recorded as done: the next poll applies it."""
    from rlops_operator.targets import TargetError

    w = world
    status = started(w)
    target = w["target"]
    original = target.apply_serving

    def refuse(serving: Any, lineage: Any) -> None:
        raise TargetError("HTTP500", "dashboard answered 500")

    target.apply_serving = refuse
    cmd = json.dumps({"id": "a1", "action": "abort"})
    failed = step(w, status, notes={COMMAND_ANNOTATION: cmd})
    assert (
        failed.status["progressive"]["stage"] == "Shadow"
        and failed.status["lastError"]["reason"] == "HTTP500"
    )
    target.apply_serving = original
    w["clock"].t += 60  # past the backoff
    done = step(w, failed.status, notes={COMMAND_ANNOTATION: cmd})
    assert done.status["progressive"]["stage"] == "Aborted"
    assert user_config(target)["challenger"] is None and "lastError" not in done.status


def test_hand_edit_of_the_slot_is_put_back(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    target = w["target"]
    target.text = serveconfig.with_checkpoint(
        target.text, "corridor", "PolicyServer", w["champion"], serveconfig.Serving(w["champion"], None)
    )
    out = step(w, status)
    assert user_config(target)["challenger"]["mode"] == "shadow"
    assert out.status["progressive"]["stage"] == "Shadow"


def test_without_a_live_champion_progressive_replaces(world: dict[str, Any]) -> None:
    w = world
    w["target"] = ConfigTarget("")  # the deployment names no checkpoint yet
    storage.write_text(w["pointer"], w["challenger"] + "\n")
    out = step(w, {})
    assert out.state.rollout is not None and "progressive" not in out.status
    assert "nothing was live to compare with" in out.decisions[0].message


def test_replace_is_the_default_and_unchanged(world: dict[str, Any]) -> None:
    w = world
    spec = RolloutSpec.from_resource({"pointer": w["pointer"], "target": {"dashboardUrl": "http://h:1"}})
    assert not spec.progressive and spec.strategy == ProgressiveSpec()
    first = step(w, {}, spec)
    storage.write_text(w["pointer"], w["challenger"] + "\n")
    out = step(w, first.status, spec)
    assert out.state.rollout is not None and "progressive" not in out.status


@pytest.mark.parametrize(
    "strategy, match",
    [
        ({"type": "Canary"}, "spec.strategy.type"),
        ({"type": "Progressive", "steps": [{"weight": 0.5}, {"weight": 0.2}]}, "increase strictly"),
        ({"type": "Progressive", "shadow": {"minEpisodes": 0}}, "strategy.shadow.minEpisodes"),
        ({"type": "Progressive", "bogus": 1}, "strategy.bogus"),
    ],
)
def test_invalid_strategy_is_a_spec_error(strategy: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        RolloutSpec.from_resource(
            {"pointer": "/p/c/best_checkpoint.txt", "target": {"rayService": "r"}, "strategy": strategy}
        )


def test_log_root_spec() -> None:
    spec = RolloutSpec.from_resource(
        {"pointer": "/p/c/best_checkpoint.txt", "target": {"rayService": "r"}, "logRoot": "s3://logs/x"}
    )
    assert spec.log_root == "s3://logs/x"
    assert (
        RolloutSpec.from_resource(
            {"pointer": "/p/c/best_checkpoint.txt", "target": {"rayService": "r"}}
        ).log_root
        == "/p"
    )
    with pytest.raises(SpecError, match="logRoot"):
        RolloutSpec.from_resource(
            {"pointer": "/p/c/best_checkpoint.txt", "target": {"rayService": "r"}, "logRoot": 3}
        )
    with pytest.raises(SpecError, match="logRoot"):
        RolloutSpec(
            pointer="/p/c/best_checkpoint.txt", target=TargetSpec(ray_service="r"), log_root_uri="gs://x"
        )


def test_crd_takes_the_strategy_and_shows_stage_and_weight() -> None:
    """The CRD's spec.strategy is the generated schema; printer columns show the stage and the weight."""
    import jsonschema
    from rlops_operator.crdschema import CRD_PATH, render_spec_fields
    from rlops_operator.progressive import crd_schema

    crd = yaml.safe_load(CRD_PATH.read_text())
    version = crd["spec"]["versions"][0]
    assert render_spec_fields() in CRD_PATH.read_text()  # fix: python -m rlops_operator.crdschema --write
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec_schema["properties"]["strategy"] == crd_schema()
    good = {"pointer": "s3://bucket/c/best_checkpoint.txt", "target": {"rayService": "rs"}}
    jsonschema.Draft4Validator(spec_schema).validate({**good, "strategy": STRATEGY, "logRoot": "s3://logs/x"})
    bad = {**good, "strategy": {**STRATEGY, "steps": [{"weight": 2}]}}
    assert list(jsonschema.Draft4Validator(spec_schema).iter_errors(bad))
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Stage"] == ".status.progressive.stage"
    assert columns["Weight"] == ".status.progressive.weight"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["progressive"]["x-kubernetes-preserve-unknown-fields"] is True


def test_strategy_changed_to_replace_mid_rollout_aborts(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    replace = RolloutSpec.from_resource(
        {"pointer": w["pointer"], "target": {"dashboardUrl": "http://127.0.0.1:1"}}
    )
    out = step(w, status, replace)
    prog = out.status["progressive"]
    assert prog["stage"] == "Aborted" and "no longer Progressive" in prog["abortReason"]
    assert user_config(w["target"])["challenger"] is None
    again = step(w, out.status, replace)  # finished: Replace goes on as usual, nothing re-applied
    assert again.status["progressive"]["stage"] == "Aborted" and again.state.rollout is None


def test_target_change_mid_rollout_empties_the_old_slot(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    old = w["target"]
    new = ConfigTarget(w["champion"])
    w["clock"].t += 5
    spec = RolloutSpec.from_resource(
        {"pointer": w["pointer"], "target": {"dashboardUrl": "http://127.0.0.2:1"}, "strategy": STRATEGY},
        name="test",
    )
    engine = Engine(
        spec, new, clock=w["clock"], metadata_probe=lambda _u: None, target_factory=lambda _t: old
    )
    out = engine.step(json.loads(json.dumps(status)))
    assert user_config(old)["challenger"] is None and user_config(old)["checkpoint_uri"] == w["champion"]
    # the new target starts fresh: the pointer still names the challenger, so a new rollout begins there
    assert out.status["progressive"]["startedAt"] == w["clock"].t != status["progressive"]["startedAt"]
    assert user_config(new)["challenger"]["mode"] == "shadow"
    assert "aborted there" in out.decisions[0].message


def test_transitions_count_in_metrics(world: dict[str, Any]) -> None:
    """Each transition the engine reports is counted by kind and reason; the weight gauge follows it."""
    from prometheus_client import REGISTRY
    from rlops_operator import metrics

    w = world
    status = started(w)
    cmd = json.dumps({"id": "a1", "action": "abort"})
    out = step(w, status, notes={COMMAND_ANNOTATION: cmd})
    labels = {"rollout": "ns/metrics-test", "kind": "Aborted", "reason": "ManualAbort"}
    before = REGISTRY.get_sample_value("rlops_progressive_transitions_total", labels) or 0.0
    for decision in out.decisions:
        metrics.record("ns/metrics-test", decision)
    assert REGISTRY.get_sample_value("rlops_progressive_transitions_total", labels) == before + 1
    gauge = REGISTRY.get_sample_value("rlops_progressive_challenger_weight", {"rollout": "ns/metrics-test"})
    assert gauge == 0.0
    rolled = REGISTRY.get_sample_value(
        "rlops_rollbacks_total", {"rollout": "ns/metrics-test", "reason": "ManualAbort"}
    )
    assert rolled is not None and rolled >= 1


def test_unreadable_progressive_status_gives_all_traffic_to_the_champion(world: dict[str, Any]) -> None:
    w = world
    status = started(w)
    status["progressive"]["stage"] = "Sideways"  # a hand edit the state machine cannot read
    out = step(w, status)
    assert "progressive" not in out.status and out.status["phase"] == "RolledBack"
    assert user_config(w["target"])["challenger"] is None
    assert user_config(w["target"])["checkpoint_uri"] == w["champion"]
    assert out.decisions[0].warning and "unreadable" in out.decisions[0].message
