"""Output for people: one line per trial iteration, a final table, and a PNG of training curves."""

from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from workloads.training.settings import METRIC

ENTROPY = "learners/default_policy/entropy"
POLICY_LOSS = "learners/default_policy/policy_loss"
STEPS = "num_env_steps_sampled_lifetime"


def _get(result: dict[str, Any], key: str) -> Any:
    """A value from a nested result by its ``a/b/c`` name, or from an already flat one."""
    if key in result:
        return result[key]
    node: Any = result
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


class ConciseProgress(Callback):
    """A Tune callback printing one short line per trial result (Tune's own table is turned off)."""

    def __init__(self, max_iters: int | None = None) -> None:
        self.max_iters = max_iters
        self._start = time.monotonic()
        self.events: dict[str, float] = {}  # first/last trial start, result and end (time.monotonic())

    def _note(self, event: str) -> None:
        now = time.monotonic()
        self.events.setdefault(f"first_{event}", now)
        self.events[f"last_{event}"] = now

    def _say(self, text: str) -> None:
        elapsed = time.monotonic() - self._start
        print(f"[{elapsed:6.1f}s] {text}", file=sys.stdout, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note("trial_start")
        self._say(f"trial {trial.trial_id} started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._note("result")
        it = result.get("training_iteration")
        of = f"/{self.max_iters}" if self.max_iters else ""
        self._say(
            f"trial {trial.trial_id} iter {it}{of}"
            f"  return {_fmt(_get(result, METRIC))}"
            f"  entropy {_fmt(_get(result, ENTROPY), '.3f')}"
            f"  policy_loss {_fmt(_get(result, POLICY_LOSS), '.3f')}"
            f"  steps {_fmt(_get(result, STEPS), '.0f')}"
            f"  ({_fmt(result.get('time_this_iter_s'), '.1f')}s)"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note("trial_end")
        self._say(f"trial {trial.trial_id} finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note("trial_end")
        self._say(f"trial {trial.trial_id} FAILED (error file in {trial.path})")


@dataclass
class TrialRow:
    """One trial's summary for the final table."""

    trial_id: str
    status: str
    iters: int
    last_return: float | None
    best_return: float | None
    steps: int
    params: str


def trial_rows(result_grid: Any, searched: list[str]) -> list[TrialRow]:
    """Summaries of every trial, best first (trials without a return last)."""
    rows = []
    for result in result_grid:
        metrics = result.metrics or {}
        best = None
        for _, ck_metrics in result.best_checkpoints or []:
            value = _get(ck_metrics, METRIC)
            if value is not None and not math.isnan(float(value)) and (best is None or value > best):
                best = float(value)
        last = _get(metrics, METRIC)
        config = result.config or {}
        params = ", ".join(f"{k}={config.get(k)}" for k in searched) or "-"
        status = "ERROR" if result.error else "DONE"
        rows.append(
            TrialRow(
                trial_id=str(metrics.get("trial_id") or result.path.rsplit("/", 1)[-1]),
                status=status,
                iters=int(metrics.get("training_iteration") or 0),
                last_return=None if last is None else float(last),
                best_return=best,
                steps=int(_get(metrics, STEPS) or 0),
                params=params,
            )
        )
    rows.sort(key=lambda r: (r.best_return is None, -(r.best_return or 0.0)))
    return rows


def print_table(rows: list[TrialRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("trial", "status", "params", "iters", "steps", "last return", "best ckpt return"):
        table.add_column(col, justify="right" if col not in ("trial", "status", "params") else "left")
    for row in rows:
        table.add_row(
            row.trial_id,
            row.status,
            row.params,
            str(row.iters),
            str(row.steps),
            _fmt(row.last_return),
            _fmt(row.best_return),
        )
    Console(width=140).print(table)


def curves_png(result_grid: Any) -> bytes | None:
    """A PNG with episode return, policy entropy and policy loss per trial over iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(METRIC, "episode return (mean)"), (ENTROPY, "policy entropy"), (POLICY_LOSS, "policy loss")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    drew = False
    for result in result_grid:
        try:
            frame = result.metrics_dataframe
        except Exception:
            frame = None
        if frame is None or frame.empty or "training_iteration" not in frame:
            continue
        frame = frame.drop_duplicates("training_iteration", keep="last").sort_values("training_iteration")
        label = str(frame["trial_id"].iloc[-1]) if "trial_id" in frame else result.path.rsplit("/", 1)[-1]
        for ax, (column, _) in zip(axes, panels, strict=True):
            if column in frame:
                ax.plot(frame["training_iteration"], frame[column], marker=".", label=label)
                drew = True
    if not drew:
        plt.close(fig)
        return None
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("training iteration")
        ax.grid(alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    if handles and len(handles) <= 12:
        axes[0].legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
