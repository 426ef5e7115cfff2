"""``runner.phase_timings``: where a training run's wall time went (pure arithmetic, no Ray)."""

from __future__ import annotations

from workloads.training.runner import phase_timings


def test_phases_split_the_wall_time_without_gaps() -> None:
    marks = {
        "setup_end": 100.5,
        "fit_start": 100.5,
        "fit_end": 120.0,
        "commit_end": 120.25,
        "curves_end": 121.0,
    }
    events = {"first_trial_start": 110.0, "last_trial_end": 119.5}
    phases = phase_timings(100.0, marks, events)
    assert phases == {
        "setup_s": 0.5,
        "trial_start_s": 9.5,
        "training_s": 9.5,
        "tune_shutdown_s": 0.5,
        "commit_s": 0.25,
        "curves_s": 0.75,
        "total_s": 21.0,
    }
    parts = sum(v for k, v in phases.items() if k != "total_s")
    assert abs(parts - phases["total_s"]) < 1e-9


def test_a_run_whose_trials_never_started_counts_fit_as_trial_start() -> None:
    """A resumed, already finished experiment starts no trial: no event, no negative phase."""
    marks = {"setup_end": 1.0, "fit_start": 1.0, "fit_end": 3.0, "commit_end": 3.5, "curves_end": 4.0}
    phases = phase_timings(0.0, marks, {})
    assert phases["trial_start_s"] == 0.0 and phases["training_s"] == 0.0
    assert phases["tune_shutdown_s"] == 2.0
    assert all(v >= 0 for v in phases.values())
