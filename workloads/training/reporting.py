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
CURVE_COLUMNS = (METRIC, ENTROPY, POLICY_LOSS)
_ENDED_STATUSES = ("TERMINATED", "ERROR")


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


@dataclass
class TrialClock:
    """One trial's timing as the driver saw it: start, end, and the time its iterations reported."""

    started: float | None = None
    ended: float | None = None
    iterations: int = 0
    iteration_s: float = 0.0  # the sum of ``time_this_iter_s`` (the algorithm's own train() steps)

    def overhead_per_iteration(self) -> float | None:
        """Wall time per iteration spent outside ``train()``: checkpoint saves, result reporting, Tune."""
        if self.started is None or self.ended is None or self.iterations == 0:
            return None
        return max(self.ended - self.started - self.iteration_s, 0.0) / self.iterations


class ConciseProgress(Callback):
    """A Tune callback printing one short line per trial result (Tune's own table is turned off).

    It also keeps, per trial, its timing (:class:`TrialClock`) and the curve points of this session
    (:data:`CURVE_COLUMNS` per iteration), so the curves PNG needs no re-read of the results from
    storage, and calls ``on_all_done`` once when the last running trial ends (before Tune's shutdown).
    """

    def __init__(self, max_iters: int | None = None, on_all_done: Any = None) -> None:
        self.max_iters = max_iters
        self.on_all_done = on_all_done
        self._start = time.monotonic()
        self.events: dict[str, float] = {}  # first/last trial start, result and end (time.monotonic())
        self.clocks: dict[str, TrialClock] = {}
        self.history: dict[str, list[dict[str, float]]] = {}
        self._all_done_called = False

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles callbacks into ``tuner.pkl``: store the settings, not this session's state."""
        state = dict(self.__dict__)
        state.update(on_all_done=None, events={}, clocks={}, history={}, _all_done_called=False)
        return state

    def _note(self, event: str) -> None:
        now = time.monotonic()
        self.events.setdefault(f"first_{event}", now)
        self.events[f"last_{event}"] = now

    def _say(self, text: str) -> None:
        elapsed = time.monotonic() - self._start
        print(f"[{elapsed:6.1f}s] {text}", file=sys.stdout, flush=True)

    def _clock(self, trial: Any) -> TrialClock:
        return self.clocks.setdefault(str(trial.trial_id), TrialClock())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note("trial_start")
        self._clock(trial).started = time.monotonic()
        self._say(f"trial {trial.trial_id} started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._note("result")
        clock = self._clock(trial)
        clock.iterations += 1
        clock.iteration_s += float(result.get("time_this_iter_s") or 0.0)
        it = result.get("training_iteration")
        point = {"training_iteration": it, **{c: _get(result, c) for c in CURVE_COLUMNS}}
        self.history.setdefault(str(trial.trial_id), []).append(point)
        of = f"/{self.max_iters}" if self.max_iters else ""
        self._say(
            f"trial {trial.trial_id} iter {it}{of}"
            f"  return {_fmt(_get(result, METRIC))}"
            f"  entropy {_fmt(_get(result, ENTROPY), '.3f')}"
            f"  policy_loss {_fmt(_get(result, POLICY_LOSS), '.3f')}"
            f"  steps {_fmt(_get(result, STEPS), '.0f')}"
            f"  ({_fmt(result.get('time_this_iter_s'), '.1f')}s)"
        )

    def _ended(self, trials: list, trial: Any) -> None:
        self._note("trial_end")
        self._clock(trial).ended = time.monotonic()
        if self.on_all_done is None or self._all_done_called:
            return
        if all(getattr(t, "status", None) in _ENDED_STATUSES or t is trial for t in trials):
            self._all_done_called = True
            self.on_all_done()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"trial {trial.trial_id} finished")
        self._ended(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"trial {trial.trial_id} FAILED (error file in {trial.path})")
        self._ended(trials, trial)

    def overhead_per_iteration(self) -> float | None:
        """The mean over trials of :meth:`TrialClock.overhead_per_iteration` (None before any ended)."""
        values = [v for c in self.clocks.values() if (v := c.overhead_per_iteration()) is not None]
        return sum(values) / len(values) if values else None


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


Series = tuple[str, dict[str, list[Any]]]  # (trial label, column -> values by training iteration)


def series_from_history(history: dict[str, list[dict[str, Any]]]) -> list[Series]:
    """Curve series from the points :class:`ConciseProgress` collected (last report per iteration wins)."""
    out: list[Series] = []
    for trial_id, points in history.items():
        by_iter = {p["training_iteration"]: p for p in points if p.get("training_iteration") is not None}
        if not by_iter:
            continue
        rows = [by_iter[k] for k in sorted(by_iter)]
        columns = {"training_iteration": [r["training_iteration"] for r in rows]}
        for column in CURVE_COLUMNS:
            if any(r.get(column) is not None for r in rows):
                columns[column] = [math.nan if r.get(column) is None else float(r[column]) for r in rows]
        out.append((trial_id, columns))
    return out


def history_is_complete(history: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether every trial's points start at iteration 1 (false after a resume: read storage instead)."""
    firsts = [min(p.get("training_iteration") or 0 for p in pts) for pts in history.values() if pts]
    return bool(firsts) and all(first == 1 for first in firsts)


def series_from_results(result_grid: Any) -> list[Series]:
    """Curve series from each trial's stored results (``progress.csv``, read from storage)."""
    out: list[Series] = []
    for result in result_grid:
        try:
            frame = result.metrics_dataframe
        except Exception:
            frame = None
        if frame is None or frame.empty or "training_iteration" not in frame:
            continue
        frame = frame.drop_duplicates("training_iteration", keep="last").sort_values("training_iteration")
        label = str(frame["trial_id"].iloc[-1]) if "trial_id" in frame else result.path.rsplit("/", 1)[-1]
        columns = {"training_iteration": list(frame["training_iteration"])}
        for column in CURVE_COLUMNS:
            if column in frame:
                columns[column] = list(frame[column])
        out.append((label, columns))
    return out


def curves_png(series: list[Series]) -> bytes | None:
    """A PNG with episode return, policy entropy and policy loss per trial over iterations.

    Uses matplotlib's object API (no pyplot state), so it may run in a background thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(METRIC, "episode return (mean)"), (ENTROPY, "policy entropy"), (POLICY_LOSS, "policy loss")]
    fig = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    drew = False
    for label, columns in series:
        for ax, (column, _) in zip(axes, panels, strict=True):
            if column in columns:
                ax.plot(columns["training_iteration"], columns[column], marker=".", label=label)
                drew = True
    if not drew:
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
    return buf.getvalue()
