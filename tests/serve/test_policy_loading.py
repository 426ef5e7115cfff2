"""Policy loading and observation checks without Serve: verify, load with the saved connectors, act."""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlops_core import checkpoints
from workloads.serving.api import RequestError, parse_observation
from workloads.serving.capture import CaptureSettings, CaptureWriter
from workloads.serving.policy import PolicyLoadError, load_policy

pytestmark = pytest.mark.slow


def test_load_and_act_with_extras(corridor_checkpoints) -> None:
    policy = load_policy(corridor_checkpoints.final)
    assert policy.manifest.env_id == "corridor" and policy.load_seconds > 0
    obs = [np.array([s], np.float32) for s in (1, 3, 6)]
    greedy = policy.act(obs, explore=False, extras=True)
    assert [r.action for r in greedy][::2] == [1, 0]
    for r in greedy:
        assert abs(sum(r.probabilities) - 1) < 1e-5 and r.value is not None and r.log_prob <= 0
    sampled = [r.action for r in policy.act([obs[1]] * 400, explore=True)]
    assert 0 < sum(sampled) < 400, "state 3 is aliased: a trained policy must keep both actions possible"


def test_allowed_prefixes_and_tampering(corridor_checkpoints, tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="outside the allowed prefixes"):
        load_policy(corridor_checkpoints.final, allowed_prefixes=[str(tmp_path)])
    copy = tmp_path / "copy"
    shutil.copytree(corridor_checkpoints.final, copy)
    with pytest.raises(PolicyLoadError, match="verify: manifest names"):
        load_policy(str(copy))  # a manifest copied from elsewhere does not describe this directory
    (copy / checkpoints.MANIFEST_NAME).unlink()
    checkpoints.write_manifest(
        checkpoints.build_manifest(str(copy), metric_name="m", metric_value=1, env_id="corridor")
    )
    (copy / "env_runner" / "extra.bin").write_bytes(b"x")
    with pytest.raises(PolicyLoadError, match="not in its manifest"):
        load_policy(str(copy))


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ([7.0], "range"),
        ([1.0, 2.0], "shape"),
        ([[1.0]], "shape"),
        ([float("nan")], "not_finite"),
        ("a", "shape"),
    ],
)
def test_box_observation_errors(value, kind) -> None:
    with pytest.raises(RequestError) as err:
        parse_observation(value, gym.spaces.Box(0.0, 6.0, (1,), np.float32), "state")
    assert err.value.kind == kind and err.value.status == 422 and "state" in err.value.message


def test_discrete_observations() -> None:
    space = gym.spaces.Discrete(25)
    assert parse_observation([12], space, "state") == 12 and parse_observation(3.0, space, "state") == 3
    for bad in ([25], [-1], [1.5], [True], [[1]]):
        with pytest.raises(RequestError):
            parse_observation(bad, space, "state")


def test_capture_writer_batches_by_hour(tmp_path: Path) -> None:
    settings = CaptureSettings(enabled=True, root=str(tmp_path), flush_seconds=0.1, flush_records=3)
    writer = CaptureWriter(settings, "corridor", "r1")
    for i in range(7):
        writer.offer({"input": {"state": [i]}, "output": {"action": 1}})
    writer.close()
    files = sorted((tmp_path / "capture" / "corridor").rglob("*.jsonl"))
    assert writer.written == 7 and len(files) >= 3
    assert all(len(f.relative_to(tmp_path / "capture" / "corridor").parts) == 5 for f in files)


def test_capture_sampling_and_bounded_queue(tmp_path: Path) -> None:
    off = CaptureWriter(CaptureSettings(enabled=True, root=str(tmp_path), sample_rate=0.0), "a", "r")
    off.offer({"x": 1})
    off.close()
    assert off.written == 0 and not (tmp_path / "capture").exists()
