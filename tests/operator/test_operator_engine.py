"""Engine unit tests: YAML-preserving edits, pointer and checkpoint refusals, gates, verify and rollback.

Storage is real (local folders); the target here is an in-memory Serve config with a health value the
test sets, standing in for KubeRay/Serve so that every branch of the state machine can be driven.
The real targets are tested against the Kubernetes emulator and a real Ray Serve elsewhere.
"""

from __future__ import annotations

import os

import pytest
import yaml
from rlops_operator import checks, serveconfig
from rlops_operator.engine import Engine
from rlops_operator.patching import merge_diff
from rlops_operator.spec import RolloutSpec, SpecError, TargetSpec
from rlops_operator.targets import Metadata

from rlops_core import checkpoints, storage
from tests.operator.conftest import SERVE_CONFIG, make_checkpoint
from tests.operator.doubles import Clock, ConfigTarget


def spec_for(root: str, **kw: object) -> RolloutSpec:
    return RolloutSpec(
        pointer=checkpoints.pointer_uri(root, "corridor"),
        target=TargetSpec(dashboard_url="http://127.0.0.1:1", endpoint_url=kw.pop("endpoint_url", None)),  # type: ignore[arg-type]
        name="test",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def live(ckpt_root: str) -> str:
    return make_checkpoint(ckpt_root, "exp", "trial_a", 5.0)


# ------------------------------------------------------------------ serveConfigV2 editing
def test_with_checkpoint_changes_only_the_uri() -> None:
    text = SERVE_CONFIG.format(uri="s3://b/old")
    new = serveconfig.with_checkpoint(text, "corridor", "PolicyServer", "s3://b/new")
    before, after = yaml.safe_load(text), yaml.safe_load(new)
    assert after["applications"][0]["deployments"][0]["user_config"]["checkpoint_uri"] == "s3://b/new"
    after["applications"][0]["deployments"][0]["user_config"]["checkpoint_uri"] = "s3://b/old"
    assert after == before
    assert list(yaml.safe_load(new)) == ["proxy_location", "http_options", "applications"]  # order kept
    assert serveconfig.checkpoint_of(new, "corridor", "PolicyServer") == "s3://b/new"
    assert serveconfig.checkpoint_of(new, "other", "PolicyServer") is None


def test_with_checkpoint_adds_missing_deployment_and_user_config() -> None:
    text = "applications:\n- name: corridor\n  import_path: workloads.serve_app:app\n"
    new = yaml.safe_load(serveconfig.with_checkpoint(text, "corridor", "PolicyServer", "/ck"))
    assert new["applications"][0]["deployments"] == [
        {"name": "PolicyServer", "user_config": {"checkpoint_uri": "/ck"}}
    ]


@pytest.mark.parametrize(
    "text, match",
    [("applications: [", "not valid YAML"), ("- a\n", "mapping"), ("applications:\n- name: x\n", "not in")],
)
def test_bad_serve_config_is_a_clear_error(text: str, match: str) -> None:
    with pytest.raises(serveconfig.ServeConfigError, match=match):
        serveconfig.with_checkpoint(text, "corridor", "PolicyServer", "/ck")


# ------------------------------------------------------------------ spec
def test_spec_from_resource_and_validation() -> None:
    spec = RolloutSpec.from_resource(
        {
            "pointer": "s3://bucket/ch/corridor/best_checkpoint.txt",
            "target": {"rayService": "rs"},
            "minMetric": 3,
        },
        name="x",
        namespace="ns",
    )
    assert spec.target.kind == "rayservice" and spec.min_metric == 3.0 and spec.poll_interval_s == 10
    assert spec.prefixes == ["s3://bucket/ch"]
    with pytest.raises(SpecError, match="rayService or dashboardUrl"):
        RolloutSpec.from_resource({"pointer": "/p/x/best_checkpoint.txt", "target": {}})
    with pytest.raises(SpecError, match="pointer"):
        RolloutSpec.from_resource({"target": {"rayService": "rs"}})
    with pytest.raises(SpecError):
        RolloutSpec.from_resource({"pointer": "ftp://x/y", "target": {"rayService": "rs"}})


# ------------------------------------------------------------------ pointer and checkpoint refusals
@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "PointerInvalid"),
        (b"  \r\n", "PointerInvalid"),
        (b"\xff\xfe", "PointerInvalid"),
        (b"/a\n/b\n", "PointerInvalid"),
        (b"relative/path", "PointerInvalid"),
        (b"ftp://x/y", "PointerInvalid"),
    ],
)
def test_bad_pointer_is_refused(ckpt_root: str, live: str, content: bytes, reason: str) -> None:
    spec = spec_for(ckpt_root)
    storage.write_bytes(spec.pointer, content)
    target = ConfigTarget(live)
    result = Engine(spec, target).step({})
    assert [d.kind for d in result.decisions] == ["Refused"]
    assert result.decisions[0].reason == reason
    assert target.applied == [] and result.status["phase"] == "Idle"
    assert result.status["conditions"][0]["type"] == "Refused"
    # the same bad pointer is not reported again
    assert Engine(spec, target).step(result.status).decisions == []


def test_missing_pointer_is_refused_once(ckpt_root: str, live: str) -> None:
    spec = spec_for(ckpt_root)
    target = ConfigTarget(live)
    first = Engine(spec, target).step({})
    assert first.decisions[0].reason == "PointerMissing" and "no pointer" in first.status["message"]
    assert Engine(spec, target).step(first.status).decisions == []


def test_checkpoint_outside_prefix_is_refused(ckpt_root: str, live: str, tmp_path: os.PathLike) -> None:
    elsewhere = make_checkpoint(str(tmp_path / "elsewhere"), "exp", "t", 9.0)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, elsewhere)
    target = ConfigTarget(live)
    result = Engine(spec, target).step({})
    assert result.decisions[0].reason == "OutsideAllowedPrefixes"
    assert target.applied == []


@pytest.mark.parametrize("damage", ["tamper", "delete", "extra", "no_manifest", "bad_manifest"])
def test_broken_checkpoint_is_refused(ckpt_root: str, live: str, damage: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    path = storage.parse_uri(new).path
    if damage == "tamper":
        (path / "algorithm_state.pkl").write_bytes(os.urandom(2048))
    elif damage == "delete":
        (path / "env_runner/connector.pkl").unlink()
    elif damage == "extra":
        (path / "stray.bin").write_bytes(b"x")
    elif damage == "no_manifest":
        (path / checkpoints.MANIFEST_NAME).unlink()
    else:
        (path / checkpoints.MANIFEST_NAME).write_text("{not json")
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = ConfigTarget(live)
    result = Engine(spec, target).step({})
    assert [d.kind for d in result.decisions] == ["Refused"]
    assert result.decisions[0].reason == "CheckpointInvalid"
    assert target.applied == [] and target.current_checkpoint() == live


def test_missing_checkpoint_is_refused(ckpt_root: str, live: str) -> None:
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, storage.join_uri(ckpt_root, "exp", "ghost"))
    result = Engine(spec, ConfigTarget(live)).step({})
    assert result.decisions[0].reason == "CheckpointInvalid" and "rlops.json" in result.decisions[0].message


def test_large_files_are_size_checked_only(ckpt_root: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 9.0)
    (storage.parse_uri(new).path / "algorithm_state.pkl").write_bytes(
        os.urandom(2048)
    )  # same size, new bytes
    spec = spec_for(ckpt_root, max_hash_bytes=1024)
    assert checks.check_candidate(spec, new).checkpoint_uri == new
    with pytest.raises(checks.Refusal):
        checks.check_candidate(spec_for(ckpt_root), new)


# ------------------------------------------------------------------ gates
def test_min_metric_gate(ckpt_root: str, live: str) -> None:
    low = make_checkpoint(ckpt_root, "exp", "trial_low", 2.0)
    spec = spec_for(ckpt_root, min_metric=4.0)
    checkpoints.write_pointer(spec.pointer, low)
    target = ConfigTarget(live)
    result = Engine(spec, target).step({})
    assert result.decisions[0].reason == "BelowMinMetric" and target.applied == []


def test_require_improvement_gate(ckpt_root: str, live: str) -> None:
    worse = make_checkpoint(ckpt_root, "exp", "trial_worse", 4.0)
    better = make_checkpoint(ckpt_root, "exp", "trial_better", 6.0)
    spec = spec_for(ckpt_root, require_improvement=True)
    target = ConfigTarget(live)
    checkpoints.write_pointer(spec.pointer, worse)
    result = Engine(spec, target).step({})
    assert result.decisions[0].reason == "NoImprovement" and target.applied == []
    assert result.status["live"]["metric"]["value"] == 5.0  # learned from the live checkpoint's manifest
    checkpoints.write_pointer(spec.pointer, better)
    result = Engine(spec, target).step(result.status)
    assert [d.kind for d in result.decisions] == ["Applied"] and target.applied == [better]


# ------------------------------------------------------------------ promotion, idempotence, rollback
def test_promote_verify_and_never_twice(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 7.5)
    spec = spec_for(ckpt_root)
    checkpoints.write_pointer(spec.pointer, new)
    target = ConfigTarget(live)
    engine = Engine(spec, target)
    st = engine.step({}).status
    assert st["phase"] == "Verifying" and target.applied == [new]
    result = engine.step(st)
    assert [d.kind for d in result.decisions] == ["Promoted"]
    st = result.status
    assert (
        st["phase"] == "Live"
        and st["live"]["checkpointUri"] == new
        and st["previous"]["checkpointUri"] == live
    )
    assert st["live"]["metric"] == {"name": "env_runners/episode_return_mean", "value": 7.5}
    assert [h["decision"] for h in st["history"]] == ["Applied", "Promoted"]
    for _ in range(3):  # unchanged pointer: nothing happens
        result = engine.step(st)
        assert result.decisions == [] and result.status == st
    checkpoints.write_pointer(spec.pointer, new)  # rewritten with the same URI
    result = engine.step(st)
    assert [d.kind for d in result.decisions] == ["AlreadyLive"] and target.applied == [new]


@pytest.mark.parametrize("failure", ["failed", "timeout", "swap_error"])
def test_rollback(ckpt_root: str, live: str, failure: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 7.5)
    spec = spec_for(ckpt_root, rollout_timeout_s=30, endpoint_url="http://serve")
    checkpoints.write_pointer(spec.pointer, new)
    target = ConfigTarget(live)
    clock = Clock()
    meta = Metadata(live, None, None)

    def probe(url: str) -> Metadata:
        return meta

    engine = Engine(spec, target, clock=clock, metadata_probe=probe)
    st = engine.step({"live": {"checkpointUri": live}}).status
    if failure == "failed":
        target.state = "failed"
    elif failure == "swap_error":
        meta = Metadata(live, new, "cannot load")
    else:
        assert engine.step(st).decisions == []  # healthy app, but /metadata still names the old one
        clock.t += 31
    result = engine.step(st)
    assert [d.kind for d in result.decisions] == ["RolledBack"]
    reason = {"failed": "ApplicationFailed", "timeout": "Timeout", "swap_error": "SwapFailed"}[failure]
    assert result.decisions[0].reason == reason
    assert target.applied == [new, live] and target.current_checkpoint() == live
    st = result.status
    assert st["phase"] == "RolledBack" and st["live"]["checkpointUri"] == live and "rollout" not in st
    target.state = "healthy"
    assert engine.step(st).decisions == [] and target.applied == [new, live]  # never re-applied


def test_paused_does_nothing(ckpt_root: str, live: str) -> None:
    new = make_checkpoint(ckpt_root, "exp", "trial_b", 7.5)
    spec = spec_for(ckpt_root, paused=True)
    checkpoints.write_pointer(spec.pointer, new)
    target = ConfigTarget(live)
    result = Engine(spec, target).step({})
    assert result.status["phase"] == "Paused" and target.applied == []


def test_merge_diff_deletes_and_replaces() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1], "gone": 1}
    new = {"a": 1, "b": {"x": 2}, "c": [1, 2]}
    assert merge_diff(old, new) == {"gone": None, "b": {"x": 2, "y": None}, "c": [1, 2]}
    assert merge_diff(new, new) == {}


def test_operator_settings_from_env() -> None:
    from rlops_operator.settings import OperatorSettings

    s = OperatorSettings.from_env({"RLOPS_NAMESPACES": " a, b ,", "RLOPS_POSTING_LEVEL": "warning"})
    assert s.namespaces == ("a", "b") and not s.clusterwide and s.posting_level == 30
    assert s.health_port == 8080 and s.metrics_port == 9090 and s.peering == ""
    assert OperatorSettings.from_env({}).clusterwide
    with pytest.raises(ValueError, match="RLOPS_POSTING_LEVEL"):
        OperatorSettings.from_env({"RLOPS_POSTING_LEVEL": "LOUD"})
    with pytest.raises(ValueError, match="bad operator setting"):
        OperatorSettings.from_env({"RLOPS_HEALTH_PORT": "eighty"})


def test_package_imports_neither_ray_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rlops_operator.handlers, rlops_operator.cli, rlops_operator.__main__; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
