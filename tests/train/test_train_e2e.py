"""Train the corridor end to end through the CLI into a local folder and into an S3 bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.train.conftest import FAST_CORRIDOR, CliRun, run_cli, sha256_file
from workloads import checkpoints, storage
from workloads.training.settings import METRIC

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliRun]:
    """One real run: the tutorial preset (one remote env runner), 2 iterations, promoted to its channel."""
    root = tmp_path_factory.mktemp("train-local")
    run = run_cli(
        "--preset",
        "tutorial",
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
    new best does not beat it: the channel pointer stays. ``--force`` moves it.
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

    args = ("--preset", "tutorial", "--storage", str(root), "--name", "demo", "--stop-iters", "2")
    again = train_cli(*args, "--promote", "--channel", "rival")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming experiment demo" in again.stdout
    assert " iter " not in again.stdout  # the finished trial is kept, not retrained
    assert again.line_after("best checkpoint:") == best
    assert "NOT promoted" in again.stdout and "does not beat" in again.stdout
    assert checkpoints.read_pointer(str(channel_pointer)) == str(rival_dir)

    forced = train_cli(*args, "--promote", "--channel", "rival", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "(promoted: forced)" in forced.stdout
    assert checkpoints.read_pointer(str(channel_pointer)) == best


def test_s3_run_writes_checkpoint_manifest_and_pointer_to_the_bucket(
    ray_cluster, s3_bucket, train_cli
) -> None:
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
