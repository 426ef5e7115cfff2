"""A load generator that plays corridor episodes against the policy endpoint and records every request.

Each worker thread plays whole episodes of *production* (the real aliased corridor): it keeps the
environment locally, sends the shown state (``{"state": [x]}``, the tutorial's request) and steps with
the returned action. A second thread polls ``/metadata`` so the timeline shows which checkpoint was
live when, and (progressive delivery) the challenger slot's mode and weight.

Progressive delivery (docs/progressive.md): with ``episodes=True`` (or ``episodes=None`` and an endpoint
whose ``/metadata`` has a ``challenger`` key), every request also carries the episode's
``episode_id``, every step's reward goes to ``POST /feedback`` (``done`` on the last one), and each
episode records which ``policy`` answered it (``champion``, ``challenger``, or ``mixed`` when a weight
change moved it mid-episode). Against an older endpoint the requests stay exactly the seed shape.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from workloads.envs.corridor import CorridorEnv

SLOTS = ("champion", "challenger")


@dataclass(frozen=True)
class RequestRecord:
    """One request: when it started (monotonic seconds), how long it took, and how it ended."""

    started: float
    latency: float
    ok: bool
    error: str = ""
    kind: str = "act"  # act (a policy request) | feedback (POST /feedback)


@dataclass(frozen=True)
class EpisodeRecord:
    """One corridor episode played through the endpoint (``policy``: who answered it, "" if unknown)."""

    finished: float
    total_return: float
    reached_goal: bool
    policy: str = ""
    checkpoint_uri: str = ""
    started: float = 0.0


@dataclass(frozen=True)
class SlotState:
    """The challenger slot as ``/metadata`` showed it at time ``t`` (mode None: no challenger)."""

    t: float
    mode: str | None
    weight: float
    challenger_uri: str | None
    champion_uri: str | None


@dataclass
class LoadStats:
    """Everything the load generator saw; lists are appended under a lock."""

    requests: list[RequestRecord] = field(default_factory=list)
    episodes: list[EpisodeRecord] = field(default_factory=list)
    live_checkpoints: list[tuple[float, str]] = field(default_factory=list)
    slot_states: list[SlotState] = field(default_factory=list)
    progressive: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.requests if not r.ok)

    def latency_quantile(self, q: float) -> float:
        lat = sorted(r.latency for r in self.requests if r.ok and r.kind == "act")
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    def slot_returns(self, start: float = 0.0, end: float = float("inf")) -> dict[str, dict[str, Any]]:
        """Episodes and mean return per slot among episodes that started in [start, end)."""
        out: dict[str, dict[str, Any]] = {}
        for slot in (*SLOTS, "mixed"):
            returns = [e.total_return for e in self.episodes if e.policy == slot and start <= e.started < end]
            out[slot] = {
                "episodes": len(returns),
                "mean_return": round(sum(returns) / len(returns), 3) if returns else None,
            }
        return out


def _slot_of(policies: set[str]) -> str:
    if len(policies) > 1:
        return "mixed"
    return next(iter(policies), "")


class LoadGenerator:
    """Plays corridor episodes from ``workers`` threads until ``stop()``; bounded by ``max_seconds``.

    ``episodes``: send ``episode_id`` and ``POST /feedback`` (True), never (False, the default: the
    seed request shape), or when the endpoint's ``/metadata`` has a ``challenger`` key at start (None).
    """

    def __init__(
        self,
        endpoint: str,
        workers: int = 4,
        max_seconds: float = 900.0,
        retries: int = 0,
        episodes: bool | None = False,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.workers = workers
        self.max_seconds = max_seconds
        self.retries = retries
        self.episodes = episodes
        self.stats = LoadStats()
        self.run_tag = secrets.token_hex(4)  # episode ids stay unique across load generators
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = time.monotonic()

    def start(self) -> LoadGenerator:
        self.t0 = time.monotonic()
        self.stats.progressive = self.episodes if self.episodes is not None else self._endpoint_has_slots()
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

    def now(self) -> float:
        """Seconds since the load started (the clock of every record)."""
        return time.monotonic() - self.t0

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() - self.t0 < self.max_seconds

    def _endpoint_has_slots(self) -> bool:
        try:
            meta = httpx.get(f"{self.endpoint}/metadata", timeout=10.0).json()
        except (httpx.HTTPError, ValueError):
            return False
        return isinstance(meta, dict) and "challenger" in meta

    def _record(self, started: float, ok: bool, error: str, kind: str) -> None:
        with self.stats.lock:
            self.stats.requests.append(
                RequestRecord(started - self.t0, time.monotonic() - started, ok, error, kind)
            )

    def _post(
        self, client: httpx.Client, path: str, body: dict[str, Any], kind: str
    ) -> dict[str, Any] | None:
        """POST with ``retries`` retries; the answer's JSON on a 2xx, else None (recorded as failed)."""
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            try:
                resp = client.post(f"{self.endpoint}{path}", json=body)
                ok = 200 <= resp.status_code < 300
                error = "" if ok else f"HTTP {resp.status_code}"
                answer = resp.json() if ok else None
                if ok and not isinstance(answer, dict):
                    ok, error, answer = False, "not a JSON object", None
            except (httpx.HTTPError, ValueError) as exc:
                ok, error, answer = False, type(exc).__name__, None
            if ok or attempt == self.retries:
                self._record(started, ok, error, kind)
                return answer
            time.sleep(0.05)
        return None

    def _ask(
        self, client: httpx.Client, state: float, episode_id: str | None, step: int = 0
    ) -> tuple[int, str] | None:
        body: dict[str, Any] = {"state": [state]}
        if episode_id is not None:  # the step index lets the analysis credit each reward exactly
            body.update(episode_id=episode_id, step=step)
        answer = self._post(client, "/", body, "act")
        if answer is None or "action" not in answer:
            return None
        return int(answer["action"]), str(answer.get("policy", ""))

    def _feedback(self, client: httpx.Client, episode_id: str, step: int, reward: float, done: bool) -> None:
        body = {"episode_id": episode_id, "reward": float(reward), "done": bool(done), "step": step}
        self._post(client, "/feedback", body, "feedback")

    def _play(self, worker: int) -> None:
        env = CorridorEnv()
        episode = 0
        with httpx.Client(timeout=10.0) as client:
            while self._running():
                obs, _ = env.reset(seed=worker * 100_003 + episode)
                episode_id = f"{self.run_tag}.w{worker}.e{episode}" if self.stats.progressive else None
                episode += 1
                started = self.now()
                total, done, terminated, step = 0.0, False, False, 0
                policies: set[str] = set()
                while not done and self._running():
                    answer = self._ask(client, float(obs[0]), episode_id, step)
                    if answer is None:
                        break
                    action, policy = answer
                    if policy:
                        policies.add(policy)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += reward
                    done = terminated or truncated
                    if episode_id is not None:
                        self._feedback(client, episode_id, step, reward, done)
                    step += 1
                if done:
                    with self.stats.lock:
                        live = self.stats.live_checkpoints[-1][1] if self.stats.live_checkpoints else ""
                        self.stats.episodes.append(
                            EpisodeRecord(self.now(), total, terminated, _slot_of(policies), live, started)
                        )

    def _watch_metadata(self) -> None:
        last_uri: str | None = None
        last_slot: tuple[Any, ...] | None = None
        with httpx.Client(timeout=5.0) as client:
            while self._running():
                try:
                    meta = client.get(f"{self.endpoint}/metadata").json()
                except (httpx.HTTPError, ValueError):
                    meta = None
                if isinstance(meta, dict):
                    uri = meta.get("checkpoint_uri")
                    challenger = meta.get("challenger") if isinstance(meta.get("challenger"), dict) else None
                    slot = (
                        (
                            challenger.get("mode"),
                            float(challenger.get("weight") or 0.0),
                            challenger.get("checkpoint_uri"),
                        )
                        if challenger
                        else (None, 0.0, None)
                    )
                    with self.stats.lock:
                        if "challenger" in meta and (slot, uri) != last_slot:
                            self.stats.slot_states.append(SlotState(self.now(), *slot, uri))
                            last_slot = (slot, uri)
                        if uri and uri != last_uri:
                            self.stats.live_checkpoints.append((self.now(), uri))
                            last_uri = uri
                self._stop.wait(0.2)
