"""Train the corridor end to end through the CLI into a local folder and into an S3 bucket."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rlops_core import checkpoints, storage
from tests.train.conftest import FAST_CORRIDOR, CliRun, run_cli, sha256_file
from workloads.training.finalize import BestCheckpoint, commit
from workloads.training.settings import METRIC, validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliRun]:
    """One real run: the tutorial preset (sampling in the trial actor), 2 iterations, promoted."""
    root = tmp_path_factory.mktemp("train-local")
    run = run_cli(
        *FAST_CORRIDOR,
        "--storage",
        str(root),
        "--name",
        "demo",
        "--stop-iters",
        "2",
        "--promote",
        ray_address=ray_cluster.address,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return root, run


def test_local_run_prints_best_uri_and_writes_the_run_pointer(local_run) -> None:
    root, run = local_run
    best = run.line_after("best checkpoint:")
    pointer = root / "demo" / "best_checkpoint.txt"
    assert run.line_after("run pointer:") == str(pointer)
    assert pointer.read_text() == best + "\n"
    assert Path(best).is_dir() and Path(best).parent.parent == root / "demo"
    assert Path(best).name.startswith("checkpoint_")


def test_local_manifest_lists_exactly_the_checkpoint_files(local_run) -> None:
    _, run = local_run
    best = Path(run.line_after("best checkpoint:"))
    manifest = json.loads((best / "rlops.json").read_text())
    on_disk = {
        p.relative_to(best).as_posix(): p for p in best.rglob("*") if p.is_file() and p.name != "rlops.json"
    }
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(on_disk)
    for rel, path in on_disk.items():
        assert listed[rel]["size"] == path.stat().st_size
        assert listed[rel]["sha256"] == sha256_file(path)
    # RLlib's Algorithm checkpoint layout (the serving side loads the RLModule from it).
    assert any(rel.startswith("learner_group/learner/rl_module/default_policy/") for rel in on_disk)
    assert any(rel.startswith("env_runner/") for rel in on_disk)
    assert manifest["metric"]["name"] == METRIC
    assert manifest["env"] == {"id": "corridor", "config": {}}
    assert manifest["experiment"] == "demo"
    assert manifest["trial_id"] and manifest["trial_id"] in run.stdout
    checkpoints.verify_checkpoint(str(best))


def test_manifest_metric_is_the_checkpointed_result(local_run) -> None:
    _, run = local_run
    best = Path(run.line_after("best checkpoint:"))
    manifest = checkpoints.read_manifest(str(best))
    results = [json.loads(line) for line in (best.parent / "result.json").read_text().splitlines()]
    returns = [r["env_runners"]["episode_return_mean"] for r in results]
    assert manifest.metric_value == pytest.approx(max(returns))
    assert len(results) == 2


def test_local_run_keeps_results_curves_and_prints_progress(local_run) -> None:
    root, run = local_run
    trial_dir = Path(run.line_after("best checkpoint:")).parent
    assert (trial_dir / "progress.csv").is_file()
    assert (trial_dir / "result.json").is_file()
    assert list(trial_dir.glob("events.out.tfevents.*"))
    png = root / "demo" / "training_curves.png"
    assert run.line_after("training curves:") == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    iteration_lines = [line for line in run.stdout.splitlines() if " iter " in line]
    assert len(iteration_lines) == 2 and all("return" in line for line in iteration_lines)
    assert "trials by return" in run.stdout
    assert "Trial status" not in run.stdout  # Tune's own big table stays off


def test_local_run_promoted_to_an_empty_channel(local_run) -> None:
    root, run = local_run
    best = run.line_after("best checkpoint:")
    assert checkpoints.read_pointer(str(root / "corridor" / "best_checkpoint.txt")) == best
    assert "promoted: the channel has no pointer yet" in run.stdout


def test_rerun_of_a_finished_experiment_keeps_it_and_respects_the_gate(local_run, train_cli) -> None:
    """The same name again restores the finished experiment (nothing retrained) and commits again.

    The channel ``rival`` serves a checkpoint whose manifest claims a metric no run reaches, so the
    new best does not beat it: the channel pointer stays.
    """
    root, first = local_run
    best = first.line_after("best checkpoint:")
    rival_dir = root / "rival-ckpt"
    rival_dir.mkdir()
    (rival_dir / "weights.bin").write_bytes(b"rival")
    rival = checkpoints.build_manifest(
        str(rival_dir), metric_name=METRIC, metric_value=1e6, env_id="corridor"
    )
    checkpoints.write_manifest(rival)
    channel_pointer = root / "rival" / "best_checkpoint.txt"
    checkpoints.write_pointer(str(channel_pointer), str(rival_dir))

    args = (*FAST_CORRIDOR, "--storage", str(root), "--name", "demo", "--stop-iters", "2")
    again = train_cli(*args, "--promote", "--channel", "rival")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming experiment demo" in again.stdout
    assert " iter " not in again.stdout  # the finished trial is kept, not retrained
    assert again.line_after("best checkpoint:") == best
    assert "NOT promoted" in again.stdout and "does not beat" in again.stdout
    assert checkpoints.read_pointer(str(channel_pointer)) == str(rival_dir)


def _rival(root: Path, channel: str, value: float) -> Path:
    """A channel pointer naming a small checkpoint whose manifest records ``value``."""
    ckpt = root / f"{channel}-ckpt"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(b"rival")
    checkpoints.write_manifest(
        checkpoints.build_manifest(str(ckpt), metric_name=METRIC, metric_value=value, env_id="corridor")
    )
    checkpoints.write_pointer(str(root / channel / "best_checkpoint.txt"), str(ckpt))
    return ckpt


def _commit_to(root: Path, best_uri: str, channel: str, *, force: bool = False):
    manifest = checkpoints.read_manifest(best_uri)
    settings = validate(
        {
            "env": "corridor",
            "storage": str(root),
            "name": "demo",
            "stop": {"iters": 2},
            "promote": True,
            "channel": channel,
            "force": force,
        }
    )
    best = BestCheckpoint(best_uri, manifest.metric_value, manifest.trial_id, {"env_config": {}})
    return commit(settings, best)


@pytest.mark.parametrize(
    ("live_value", "force", "promoted", "reason"),
    [
        (-100.0, False, True, "beats the live -100.0000"),
        (1e6, False, False, "does not beat the live"),
        (1e6, True, True, "forced"),
    ],
)
def test_promotion_gate(local_run, live_value: float, force: bool, promoted: bool, reason: str) -> None:
    root, run = local_run
    best = run.line_after("best checkpoint:")
    channel = f"gate-{int(force)}-{int(live_value)}".replace("--", "-m")
    rival = _rival(root, channel, live_value)
    outcome = _commit_to(root, best, channel, force=force)
    assert outcome.promoted is promoted
    assert reason in outcome.promotion_reason
    live = checkpoints.read_pointer(str(root / channel / "best_checkpoint.txt"))
    assert live == (best if promoted else str(rival))
    assert checkpoints.read_pointer(str(root / "demo" / "best_checkpoint.txt")) == best


def test_unreadable_channel_target_counts_as_nothing_to_beat(local_run, caplog) -> None:
    root, run = local_run
    best = run.line_after("best checkpoint:")
    broken = root / "broken-ckpt"
    broken.mkdir()
    (broken / "rlops.json").write_text("{not json")
    checkpoints.write_pointer(str(root / "broken" / "best_checkpoint.txt"), str(broken))
    with caplog.at_level(logging.WARNING, logger="rlops.train"):
        outcome = _commit_to(root, best, "broken")
    assert outcome.promoted
    assert "no readable manifest" in outcome.promotion_reason
    assert any("nothing to beat" in r.getMessage() for r in caplog.records)
    assert checkpoints.read_pointer(str(root / "broken" / "best_checkpoint.txt")) == best


def test_s3_run_writes_checkpoint_manifest_and_pointer_to_the_bucket(fresh_s3, train_cli) -> None:
    s3_bucket = fresh_s3.bucket_uri
    root = f"{s3_bucket}/runs"
    run = train_cli(*FAST_CORRIDOR, "--storage", root, "--name", "s3demo", "--stop-iters", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    best = run.line_after("best checkpoint:")
    assert best.startswith(f"{s3_bucket}/runs/s3demo/PPO_corridor_")
    pointer = f"{root}/s3demo/best_checkpoint.txt"
    assert run.line_after("run pointer:") == pointer
    assert checkpoints.read_pointer(pointer) == best
    manifest = checkpoints.verify_checkpoint(best)
    listed = {f.path: f.size for f in manifest.files}
    assert listed == {k: v for k, v in storage.list_files(best).items() if k != "rlops.json"}
    experiment = storage.list_files(f"{root}/s3demo")
    assert "training_curves.png" in experiment
    assert any(k.endswith("/progress.csv") for k in experiment)
    assert any(k.startswith("experiment_state-") for k in experiment)
