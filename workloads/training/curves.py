"""The training-curves PNG, drawn off the critical path.

matplotlib is imported in a background thread while Tune trains (the driver idles then). When the
last trial ends, the curves are drawn and written in another background thread from the points the
progress callback kept, while Tune shuts its actors down; the driver only waits for that thread after
the commit. A resumed experiment (whose earlier iterations are only in storage) is drawn from the
stored results after ``fit()`` instead. A plotting or storage failure is logged, never fatal.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rlops_core import storage
from workloads.training import reporting

log = logging.getLogger("rlops.train")
CURVES_NAME = "training_curves.png"


def preload() -> threading.Thread:
    """Import matplotlib's Agg backend in a daemon thread, so drawing later pays no import."""

    def load() -> None:
        try:
            from matplotlib import figure  # noqa: F401
            from matplotlib.backends import backend_agg  # noqa: F401
        except Exception as exc:  # the drawing step reports its own failure later
            log.debug("matplotlib preload failed: %s", exc)

    thread = threading.Thread(target=load, name="rlops-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def write(series: list[reporting.Series], experiment_uri: str) -> str | None:
    """Draw ``series`` and write the PNG beside the results; its URI, or None (nothing drawn, or failed)."""
    try:
        png = reporting.curves_png(series)
        if png is None:
            return None
        uri = storage.join_uri(experiment_uri, CURVES_NAME)
        storage.write_bytes(uri, png)
        return uri
    except Exception as exc:
        log.warning("could not write the training curves: %s", exc)
        return None


class CurvesJob:
    """Draws the curves once: early from the callback's points when they are complete, else at the end."""

    def __init__(self, experiment_uri: str, progress: reporting.ConciseProgress, *, resumed: bool) -> None:
        self.experiment_uri = experiment_uri
        self.progress = progress
        self.resumed = resumed
        self._thread: threading.Thread | None = None
        self._uri: str | None = None

    def start_early(self) -> None:
        """Called when the last trial ends: draw from the kept points in a background thread."""
        history = self.progress.history
        if self.resumed or self._thread is not None or not reporting.history_is_complete(history):
            return
        series = reporting.series_from_history(history)

        def run() -> None:
            self._uri = write(series, self.experiment_uri)

        self._thread = threading.Thread(target=run, name="rlops-training-curves", daemon=True)
        self._thread.start()

    def finish(self, result_grid: Any) -> str | None:
        """The PNG's URI: wait for the early drawing, or draw now from the stored results."""
        if self._thread is not None:
            self._thread.join()
            if self._uri is not None:
                return self._uri
        return write(reporting.series_from_results(result_grid), self.experiment_uri)
