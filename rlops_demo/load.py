"""A load generator that plays corridor episodes against the policy endpoint and records every request.

Each worker thread plays whole episodes: it keeps the environment locally, sends the shown state
(``{"state": [x]}``, the tutorial's request) and steps with the returned action. A second thread
polls ``/metadata`` so the timeline shows which checkpoint was live when.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from workloads.envs.corridor import CorridorEnv


@dataclass(frozen=True)
class RequestRecord:
    """One request: when it started (monotonic seconds), how long it took, and how it ended."""

    started: float
    latency: float
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class EpisodeRecord:
    """One corridor episode played through the endpoint."""

    finished: float
    total_return: float
    reached_goal: bool


@dataclass
class LoadStats:
    """Everything the load generator saw; lists are appended under a lock."""

    requests: list[RequestRecord] = field(default_factory=list)
    episodes: list[EpisodeRecord] = field(default_factory=list)
    live_checkpoints: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.requests if not r.ok)

    def latency_quantile(self, q: float) -> float:
        lat = sorted(r.latency for r in self.requests if r.ok)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")


class LoadGenerator:
    """Plays corridor episodes from ``workers`` threads until ``stop()``; bounded by ``max_seconds``."""

    def __init__(self, endpoint: str, workers: int = 4, max_seconds: float = 900.0, retries: int = 0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.workers = workers
        self.max_seconds = max_seconds
        self.retries = retries
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = time.monotonic()

    def start(self) -> LoadGenerator:
        self.t0 = time.monotonic()
        for i in range(self.workers):
            self._threads.append(
                threading.Thread(target=self._play, args=(i,), daemon=True, name=f"load-{i}")
            )
        self._threads.append(threading.Thread(target=self._watch_metadata, daemon=True, name="load-metadata"))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.stats

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() - self.t0 < self.max_seconds

    def _ask(self, client: httpx.Client, state: float) -> int | None:
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            try:
                resp = client.post(f"{self.endpoint}/", json={"state": [state]})
                ok = resp.status_code == 200
                error = "" if ok else f"HTTP {resp.status_code}"
                action = int(resp.json()["action"]) if ok else None
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                ok, error, action = False, type(exc).__name__, None
            last = attempt == self.retries
            if ok or last:
                with self.stats.lock:
                    self.stats.requests.append(
                        RequestRecord(started - self.t0, time.monotonic() - started, ok, error)
                    )
                return action
            time.sleep(0.05)
        return None

    def _play(self, seed: int) -> None:
        env = CorridorEnv()
        episode = 0
        with httpx.Client(timeout=10.0) as client:
            while self._running():
                obs, _ = env.reset(seed=seed * 100_003 + episode)
                episode += 1
                total, done, terminated = 0.0, False, False
                while not done and self._running():
                    action = self._ask(client, float(obs[0]))
                    if action is None:
                        break
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += reward
                    done = terminated or truncated
                if done:
                    with self.stats.lock:
                        self.stats.episodes.append(
                            EpisodeRecord(time.monotonic() - self.t0, total, terminated)
                        )

    def _watch_metadata(self) -> None:
        last = None
        with httpx.Client(timeout=5.0) as client:
            while self._running():
                try:
                    uri = client.get(f"{self.endpoint}/metadata").json().get("checkpoint_uri")
                except (httpx.HTTPError, ValueError):
                    uri = None
                if uri and uri != last:
                    with self.stats.lock:
                        self.stats.live_checkpoints.append((time.monotonic() - self.t0, uri))
                    last = uri
                self._stop.wait(0.2)
