"""The progress callback's timing and curve points, and the curves PNG drawn from them (no Ray cluster).

The callback is driven with Tune-shaped arguments (trial objects with ``trial_id`` and ``status``),
the PNG is drawn by real matplotlib and checked by its PNG signature and size.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass

import pytest

from workloads.training import curves, reporting
from workloads.training.settings import METRIC


@dataclass
class FakeTrial:
    """The two attributes of a Tune ``Trial`` the callback reads."""

    trial_id: str
    status: str = "RUNNING"
    path: str = "/tmp/x"


def _result(it: int, ret: float | None, secs: float = 1.0) -> dict:
    env_runners = {} if ret is None else {"episode_return_mean": ret}
    return {
        "training_iteration": it,
        "time_this_iter_s": secs,
        "env_runners": env_runners,
        "learners": {"default_policy": {"entropy": 0.5, "policy_loss": 0.1}},
        "num_env_steps_sampled_lifetime": 400 * it,
    }


def _drive(progress: reporting.ConciseProgress, trials: list[FakeTrial], iters: int) -> None:
    for t in trials:
        progress.on_trial_start(0, trials, t)
    for it in range(1, iters + 1):
        for t in trials:
            progress.on_trial_result(0, trials, t, _result(it, 5.0 + it))


def test_all_done_fires_once_when_the_last_running_trial_ends() -> None:
    calls: list[int] = []
    trials = [FakeTrial("a"), FakeTrial("b")]
    progress = reporting.ConciseProgress(3, on_all_done=lambda: calls.append(1))
    _drive(progress, trials, 2)
    progress.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    assert calls == []  # trial b still runs
    progress.on_trial_error(0, trials, trials[1])  # the last one fails: still the end of training
    trials[1].status = "ERROR"
    assert calls == [1]
    progress.on_trial_complete(0, trials, trials[1])  # a late duplicate event does not draw twice
    assert calls == [1]


def test_all_done_waits_for_pending_trials() -> None:
    calls: list[int] = []
    trials = [FakeTrial("a"), FakeTrial("b", status="PENDING")]
    progress = reporting.ConciseProgress(on_all_done=lambda: calls.append(1))
    _drive(progress, trials[:1], 1)
    progress.on_trial_complete(0, trials, trials[0])
    assert calls == []


def test_overhead_per_iteration_is_wall_time_outside_train(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: now[0])
    trials = [FakeTrial("a")]
    progress = reporting.ConciseProgress()
    progress.on_trial_start(0, trials, trials[0])
    for it in range(1, 5):
        now[0] += 1.25  # 1.0 s in train() plus 0.25 s of checkpoint and reporting per iteration
        progress.on_trial_result(0, trials, trials[0], _result(it, 1.0, secs=1.0))
    assert progress.overhead_per_iteration() is None  # the trial has not ended yet
    progress.on_trial_complete(0, trials, trials[0])
    assert progress.overhead_per_iteration() == pytest.approx(0.25)


def test_history_becomes_series_with_the_last_report_per_iteration() -> None:
    trials = [FakeTrial("a")]
    progress = reporting.ConciseProgress()
    _drive(progress, trials, 3)
    progress.on_trial_result(0, trials, trials[0], _result(3, 42.0))  # a retried trial re-reports 3
    progress.on_trial_result(0, trials, trials[0], _result(4, None))  # no episode finished yet
    assert reporting.history_is_complete(progress.history)
    [(label, columns)] = reporting.series_from_history(progress.history)
    assert label == "a"
    assert columns["training_iteration"] == [1, 2, 3, 4]
    assert columns[METRIC][:3] == [6.0, 7.0, 42.0]
    assert columns[METRIC][3] != columns[METRIC][3]  # NaN: nothing to plot at iteration 4


def test_history_from_a_resumed_session_is_not_complete() -> None:
    progress = reporting.ConciseProgress()
    trials = [FakeTrial("a")]
    progress.on_trial_result(0, trials, trials[0], _result(4, 8.0))
    assert not reporting.history_is_complete(progress.history)
    assert not reporting.history_is_complete({})


def test_curves_png_from_series_is_a_png_and_none_without_points() -> None:
    progress = reporting.ConciseProgress()
    _drive(progress, [FakeTrial("a"), FakeTrial("b")], 3)
    png = reporting.curves_png(reporting.series_from_history(progress.history))
    assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert reporting.curves_png([]) is None


def test_pickled_callback_keeps_no_session_state_or_hook() -> None:
    """Tune stores callbacks in tuner.pkl: a restore must not bring back old points or the draw hook."""
    progress = reporting.ConciseProgress(7, on_all_done=threading.Event().set)
    _drive(progress, [FakeTrial("a")], 2)
    restored = pickle.loads(pickle.dumps(progress))
    assert restored.max_iters == 7
    assert restored.on_all_done is None and restored.history == {} and restored.clocks == {}
    assert progress.history  # the live object keeps its points


def test_curves_job_draws_early_in_the_background_and_writes_once(tmp_path) -> None:
    progress = reporting.ConciseProgress()
    _drive(progress, [FakeTrial("a")], 3)
    job = curves.CurvesJob(str(tmp_path / "exp"), progress, resumed=False)
    job.start_early()
    uri = job.finish(result_grid=[])  # an empty grid: the PNG can only come from the early drawing
    assert uri is not None and uri.endswith(curves.CURVES_NAME)
    assert (tmp_path / "exp" / curves.CURVES_NAME).read_bytes().startswith(b"\x89PNG")


def test_curves_job_of_a_resumed_experiment_draws_from_storage_only(tmp_path) -> None:
    progress = reporting.ConciseProgress()
    _drive(progress, [FakeTrial("a")], 3)  # complete-looking points, but the run was resumed
    job = curves.CurvesJob(str(tmp_path / "exp"), progress, resumed=True)
    job.start_early()
    assert job.finish(result_grid=[]) is None  # no stored results in an empty grid: nothing drawn
    assert not (tmp_path / "exp" / curves.CURVES_NAME).exists()


def test_curves_failure_is_logged_not_raised(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    progress = reporting.ConciseProgress()
    _drive(progress, [FakeTrial("a")], 2)
    job = curves.CurvesJob(str(blocker / "exp"), progress, resumed=False)
    job.start_early()
    assert job.finish(result_grid=[]) is None
    assert "could not write the training curves" in caplog.text


@dataclass
class StoredResult:
    """The two attributes of a Tune ``Result`` the storage path reads (its frame comes from progress.csv)."""

    metrics_dataframe: object
    path: str


def test_curves_job_of_a_resumed_experiment_draws_every_stored_iteration(tmp_path) -> None:
    """After a resume the session saw only iterations 4-5; the PNG comes from the stored results."""
    import pandas as pd

    stored = pd.DataFrame(
        {
            "training_iteration": [1, 2, 3, 3, 4, 5],  # iteration 3 reported twice (a retried trial)
            "trial_id": ["t1"] * 6,
            METRIC: [5.0, 6.0, 6.5, 7.0, 8.0, 9.0],
        }
    )
    [(label, columns)] = reporting.series_from_results([StoredResult(stored, "/x/PPO_t1")])
    assert label == "t1" and columns["training_iteration"] == [1, 2, 3, 4, 5]
    assert columns[METRIC] == [5.0, 6.0, 7.0, 8.0, 9.0]

    progress = reporting.ConciseProgress()
    trials = [FakeTrial("t1")]
    for it in (4, 5):
        progress.on_trial_result(0, trials, trials[0], _result(it, 8.0))
    job = curves.CurvesJob(str(tmp_path / "exp"), progress, resumed=True)
    job.start_early()
    uri = job.finish(result_grid=[StoredResult(stored, "/x/PPO_t1")])
    assert uri is not None
    assert (tmp_path / "exp" / curves.CURVES_NAME).read_bytes().startswith(b"\x89PNG")
