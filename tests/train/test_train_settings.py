"""Settings: presets, YAML merging, flags, and the validation that runs before any Ray work."""

from __future__ import annotations

from pathlib import Path

import pytest

from workloads.train_job import parse_args, settings_from_args
from workloads.training.settings import (
    METRIC,
    SettingsError,
    build_settings,
    check_before_ray,
    list_presets,
    load_preset,
)


def settings_for(*argv: str):
    return settings_from_args(parse_args(list(argv)))


def test_tutorial_preset_is_the_reference_setup() -> None:
    s = build_settings(preset="tutorial")
    assert s.env == "corridor"
    assert s.ppo.lr == 0.01
    assert s.model.fcnet_hiddens == [20, 20]
    assert s.model.vf_share_layers is True
    assert s.resources.rollout_fragment_length == 10
    assert s.resources.num_env_runners == 1
    assert s.stop.iters == 10
    assert s.num_samples == 1
    assert s.channel == "corridor" and s.name == "tutorial"


def test_cluster_preset_runs_ten_samples_of_the_tutorial() -> None:
    s = build_settings(preset="tutorial-cluster")
    assert s.num_samples == 10
    assert s.ppo.lr == 0.01 and s.stop.iters == 10


def test_shipped_presets_all_validate() -> None:
    assert {"tutorial", "tutorial-cluster", "cartpole"} <= set(list_presets())
    for name in list_presets():
        build_settings(preset=name)


def test_flags_override_file_which_overrides_preset(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("extends: tutorial\nppo: {gamma: 0.9}\nstop: {iters: 5}\n")
    s = settings_for("--config", str(cfg), "--stop-iters", "2", "--lr", "0.02", "--storage", str(tmp_path))
    assert s.stop.iters == 2
    assert s.ppo.gamma == 0.9 and s.ppo.lr == 0.02
    assert s.model.fcnet_hiddens == [20, 20]  # still from the preset
    assert s.storage == str(tmp_path)


def test_lr_list_becomes_a_grid_search() -> None:
    s = settings_for("--preset", "tutorial", "--lr", "0.01,0.001")
    assert s.search_space == {"lr": {"grid_search": [0.01, 0.001]}}


def test_stop_dict_uses_tune_result_keys() -> None:
    s = settings_for(
        "--env", "cartpole", "--stop-iters", "3", "--stop-timesteps", "1000", "--stop-return", "450"
    )
    assert s.stop.tune_dict() == {
        "training_iteration": 3,
        "num_env_steps_sampled_lifetime": 1000,
        METRIC: 450.0,
    }
    assert s.name == "cartpole-ppo" and s.channel == "cartpole"


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("env: corridor\nstop: {iters: 1}\nbogus: 1\n", "bogus: unknown key"),
        ("env: corridor\nstop: {iters: 1}\nppo: {lrate: 0.1}\n", "ppo.lrate: unknown key"),
        ("env: corridor\nstop: {iters: 0}\n", "stop.iters"),
        ("env: corridor\nstop: {iters: 1}\nresources: {num_env_runners: -1}\n", "resources.num_env_runners"),
        ("env: corridor\nstop: {iters: 1}\nnum_samples: 0\n", "num_samples"),
        ("env: corridor\nstop: {iters: 1}\nresources: {num_gpus_per_learner: 1.5}\n", "whole number"),
        ("env: corridor\nstop: {iters: 1}\ncheckpoint: {num_to_keep: 0}\n", "checkpoint.num_to_keep"),
        ("env: corridor\n", "no stop criterion"),
        ("env: pong\nstop: {iters: 1}\n", "unknown env 'pong'"),
        ("env: corridor\nstop: {iters: 1}\nstorage: 's3://x'\n", "malformed S3 bucket"),
        ("env: corridor\nstop: {iters: 1}\nstorage: 'gs://bucket/p'\n", "unsupported storage scheme"),
        (
            "env: corridor\nstop: {iters: 1}\nsearch_space: {fcnet: {grid_search: [1]}}\n",
            "cannot search over",
        ),
        ("env: corridor\nstop: {iters: 1}\nsearch_space: {lr: {uniform: [0.1, 0.01]}}\n", "low < high"),
        ("env: corridor\nstop: {iters: 1}\nname: corridor\n", "must differ from the experiment name"),
        ("env: corridor\nstop: {iters: 1}\nname: 'a/b'\n", "letters, digits"),
        ("env: corridor\nstop: {iters: 1}\nscheduler: {type: asha}\n", "ASHA needs more than one trial"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_settings_fail_with_one_line(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(SettingsError) as info:
        build_settings(config_file=str(cfg))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(SettingsError, match="unknown preset 'nope'; choose one of"):
        load_preset("nope")


def test_extends_an_unknown_preset_fails(tmp_path: Path) -> None:
    cfg = tmp_path / "child.yaml"
    cfg.write_text("extends: no-such-preset\n")
    with pytest.raises(SettingsError, match="unknown preset 'no-such-preset'"):
        build_settings(config_file=str(cfg))


def test_env_config_the_env_rejects_is_caught_before_ray(tmp_path: Path) -> None:
    s = build_settings(overrides={"env": "corridor", "stop": {"iters": 1}, "env_config": {"max_steps": 0}})
    with pytest.raises(SettingsError, match="rejects env_config"):
        check_before_ray(s)


def test_unwritable_local_storage_is_caught_before_ray(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = build_settings(overrides={"env": "corridor", "stop": {"iters": 1}, "storage": str(blocker / "sub")})
    with pytest.raises(SettingsError, match="is not usable"):
        check_before_ray(s)


def test_unreachable_bucket_is_caught_before_ray(s3_server) -> None:
    s = build_settings(
        overrides={"env": "corridor", "stop": {"iters": 1}, "storage": "s3://no-such-bucket-x/p"}
    )
    with pytest.raises(SettingsError, match="no-such-bucket-x"):
        check_before_ray(s)


def test_algo_config_carries_the_tutorial_settings() -> None:
    from workloads.training.tune_setup import build_algo_config, build_param_space

    s = settings_for("--preset", "tutorial", "--lr", "0.01,0.001", "--num-gpus-per-learner", "0")
    config = build_algo_config(s)
    assert config.lr == 0.01
    assert config.rollout_fragment_length == 10
    assert config.num_env_runners == 1
    assert config.train_batch_size_per_learner == 400
    assert config.model_config["fcnet_hiddens"] == [20, 20]
    assert config.model_config["vf_share_layers"] is True
    assert config.enable_rl_module_and_learner and config.enable_env_runner_and_connector_v2
    space = build_param_space(s)
    assert space["lr"] == {"grid_search": [0.01, 0.001]}
    assert space["env"] == "corridor"


def test_asha_scheduler_uses_the_iteration_budget() -> None:
    from ray.tune.schedulers import ASHAScheduler

    from workloads.training.tune_setup import build_run_config, build_tune_config

    s = settings_for("--preset", "tutorial", "--num-samples", "4", "--scheduler", "asha", "--stop-iters", "8")
    tune_config = build_tune_config(s)
    assert isinstance(tune_config.scheduler, ASHAScheduler)
    assert tune_config.scheduler._max_t == 8
    assert tune_config.metric == METRIC and tune_config.mode == "max" and tune_config.num_samples == 4
    run_config = build_run_config(s, "/tmp/x", None, [])
    assert run_config.stop == {"training_iteration": 8}
    assert run_config.checkpoint_config.checkpoint_score_attribute == METRIC
    assert run_config.checkpoint_config.num_to_keep == 3


def test_switches_absent_keep_the_config_file_values(tmp_path: Path) -> None:
    """--promote/--force/--autoscaler/--verbose only switch on; absent, the YAML file decides."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("extends: tutorial\npromote: true\nautoscaler: true\nchannel: live\n")
    s = settings_for("--config", str(cfg))
    assert s.promote is True and s.autoscaler is True and s.force is False and s.verbose is False
    s = settings_for("--preset", "tutorial", "--promote", "--force", "--autoscaler", "--verbose")
    assert (s.promote, s.force, s.autoscaler, s.verbose) == (True, True, True, True)


def test_every_documented_flag_parses_to_its_setting(tmp_path: Path) -> None:
    """The flags of docs/training.md (and the chart's RayJob entrypoint) keep their names."""
    s = settings_for(
        "--env", "corridor", "--storage", str(tmp_path), "--name", "run-1", "--num-samples", "2",
        "--lr", "0.02", "--stop-iters", "3", "--stop-timesteps", "900", "--stop-return", "9.5",
        "--num-env-runners", "0", "--num-learners", "0", "--num-gpus-per-learner", "0",
        "--num-to-keep", "2", "--max-concurrent-trials", "1", "--scheduler", "none", "--seed", "7",
        "--channel", "corridor-live",
    )  # fmt: skip
    assert (s.env, s.name, s.num_samples, s.ppo.lr, s.seed) == ("corridor", "run-1", 2, 0.02, 7)
    assert (s.stop.iters, s.stop.timesteps, s.stop.return_) == (3, 900, 9.5)
    assert (s.resources.num_env_runners, s.resources.num_learners) == (0, 0)
    assert s.resources.num_gpus_per_learner == 0
    assert (s.checkpoint.num_to_keep, s.max_concurrent_trials, s.scheduler.type) == (2, 1, "none")
    assert s.channel == "corridor-live"


def test_help_exits_0_and_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from workloads.train_job import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--preset", "--stop-iters", "--num-gpus-per-learner", "--promote", "--outcome-json"):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--bogus"], "No such option: --bogus"),
        (["--env", "corridor", "stray"], "unexpected extra argument"),
        (["--env", "corridor", "--num-samples", "2.5"], "--num-samples"),
        (["--env", "corridor", "--promote=yes"], "--promote"),
    ],
)
def test_flags_that_do_not_parse_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    from workloads.train_job import main

    assert main([*argv, "--storage", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not (tmp_path / "out").exists()
