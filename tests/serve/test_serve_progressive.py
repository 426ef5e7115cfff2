"""Progressive delivery on real Ray Serve (issue 11): the challenger slot, routing by episode, shadow mode,
``POST /feedback`` and the decision log read back with ``rlops_core.decision_log``.

One app with two replicas is deployed once (dashboard REST API, the KubeRay way) and reconfigured through
``user_config`` between tests. Checkpoints: the two trained corridor checkpoints (``final`` is the champion,
``early`` the challenger). The decision log goes to a local directory (the same storage code as S3).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlops_core.decision_log import DecisionRecord, EpisodeStream, FeedbackRecord, LogCursor
from tests.helpers.serve_apps import Checkpoints, ServeApps
from tests.waiting import wait_for
from workloads.serving.routing import ChallengerSettings, route

pytestmark = pytest.mark.slow

APP = "progressive"
REPLICAS = 2


class ProgressiveApp:
    """The module's app: deploys a ``user_config`` and waits until every replica serves it."""

    def __init__(self, apps: ServeApps, ck: Checkpoints, log_root: Path) -> None:
        self.apps, self.ck, self.log_root = apps, ck, str(log_root)
        self.url = apps.url(APP)

    def config(self, challenger: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        user_config: dict[str, Any] = {
            "checkpoint_uri": self.ck.final,
            "challenger": challenger,
            "decision_log": {"root": self.log_root, "flush_seconds": 0.2},
        }
        user_config.update(extra)
        return user_config

    def deploy(self, user_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        self.apps.deploy(APP, user_config, num_replicas=REPLICAS)
        wanted = user_config.get("challenger")

        def applied() -> dict[str, dict[str, Any]] | None:
            metas = self.replica_metadata()
            for meta in metas.values():
                got = meta.get("challenger")
                if meta["requested_checkpoint_uri"] != user_config["checkpoint_uri"]:
                    return None
                if (got is None) != (wanted is None):
                    return None
                if wanted is not None and (got["mode"], got["weight"]) != (wanted["mode"], wanted["weight"]):
                    return None
                if (meta.get("decision_log") or {}).get("root") != (
                    user_config.get("decision_log") or {}
                ).get("root"):
                    return None
            return metas

        return wait_for(applied, timeout=120, interval=0.5, what=f"both replicas serving {user_config}")

    def replica_metadata(self) -> dict[str, dict[str, Any]]:
        """``/metadata`` of every replica (asks until both answered)."""
        seen: dict[str, dict[str, Any]] = {}

        def both() -> bool:
            with httpx.Client(timeout=10) as client:
                for _ in range(20):
                    resp = client.get(f"{self.url}/metadata")
                    if resp.status_code == 200:
                        seen[resp.json()["replica"]] = resp.json()
            return len(seen) >= REPLICAS

        wait_for(both, timeout=60, interval=0.2, what=f"/metadata from {REPLICAS} replicas")
        return seen

    def act(self, client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
        return client.post(f"{self.url}/", json=body)

    def records(self, since: float) -> list[DecisionRecord | FeedbackRecord]:
        """Every record in the decision log written since ``since`` (read with the project's reader)."""
        stream = EpisodeStream(self.log_root, APP, LogCursor.starting_at(since), settle_seconds=0.0)
        return [r for r in stream.reader.poll(time.time()).records if r.time >= since]


@pytest.fixture(scope="module")
def prog(serve_apps: ServeApps, corridor_checkpoints: Checkpoints, tmp_path_factory: Any) -> Any:
    app = ProgressiveApp(serve_apps, corridor_checkpoints, tmp_path_factory.mktemp("decision-log"))
    app.deploy(app.config())
    yield app
    serve_apps.remove(APP)


def parallel(fn: Any, items: list[Any], workers: int = 8) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def ask_all(prog: ProgressiveApp, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST every body, eight at a time (one keep-alive client per worker thread)."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(body: dict[str, Any]) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
            clients.append(local.client)
        return prog.act(local.client, body)

    try:
        return parallel(one, bodies)
    finally:
        for client in clients:
            client.close()


def decisions_logged(prog: ProgressiveApp, since: float, prefix: str, count: int) -> list[DecisionRecord]:
    """Wait until the decision log holds ``count`` decisions of episodes named ``prefix...``; return them."""

    def enough() -> list[DecisionRecord] | None:
        found = [
            r
            for r in prog.records(since)
            if isinstance(r, DecisionRecord) and r.episode_id.startswith(prefix)
        ]
        return found if len(found) >= count else None

    return wait_for(enough, timeout=60, interval=0.5, what=f"{count} decisions of {prefix}* in the log")


# ------------------------------------------------------------------------------------------------ canary
def test_canary_split_within_five_points_and_matches_the_routing_function(prog: ProgressiveApp) -> None:
    weight = 0.3
    challenger = {"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": weight}
    metas = prog.deploy(prog.config(challenger))
    assert all(m["challenger"]["loaded"] and m["challenger"]["last_error"] is None for m in metas.values())
    ids = [f"split-{i}" for i in range(1000)]
    answers = ask_all(prog, [{"state": [1], "episode_id": e} for e in ids])
    assert [a.status_code for a in answers] == [200] * len(ids), [
        a.text for a in answers if a.status_code != 200
    ]
    slots = [a.json()["policy"] for a in answers]
    share = slots.count("challenger") / len(slots)
    assert abs(share - weight) <= 0.05, share
    settings = ChallengerSettings(**challenger)
    assert slots == [route(e, settings) for e in ids]  # every replica computes the same, stateless answer
    uris = {a.json()["policy"]: a.headers["x-rlops-checkpoint"] for a in answers}
    assert uris == {"champion": prog.ck.final, "challenger": prog.ck.early}


def test_every_request_of_an_episode_is_answered_by_one_slot_across_both_replicas(
    prog: ProgressiveApp,
) -> None:
    since = time.time()
    challenger = {"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": 0.5}
    prog.deploy(prog.config(challenger))
    episodes = [f"sticky-{i}" for i in range(60)]
    bodies = [{"state": [s], "episode_id": e, "step": s - 1} for s in range(1, 6) for e in episodes]
    answers = ask_all(prog, bodies)
    assert all(a.status_code == 200 for a in answers)
    by_episode: dict[str, set[str]] = {}
    for body, answer in zip(bodies, answers, strict=True):
        by_episode.setdefault(body["episode_id"], set()).add(answer.json()["policy"])
    assert all(len(s) == 1 for s in by_episode.values()), by_episode
    assert {next(iter(s)) for s in by_episode.values()} == {"champion", "challenger"}
    decisions = decisions_logged(prog, since, "sticky-", len(bodies))
    assert len(decisions) == len(bodies)  # each answer logged once
    assert {d.replica for d in decisions} == set(prog.replica_metadata())  # both replicas answered
    replicas_per_episode: dict[str, set[str]] = {}
    for d in decisions:
        replicas_per_episode.setdefault(d.episode_id, set()).add(d.replica)
        assert {d.slot} == by_episode[d.episode_id]
        assert d.mode == "canary" and d.weight == 0.5 and d.challenger_uri == prog.ck.early
        assert d.prob is not None and 0.0 < d.prob <= 1.0  # sampled: the probability of the action taken
    assert any(len(r) == 2 for r in replicas_per_episode.values()), "no episode spanned both replicas"


# ------------------------------------------------------------------------------------------------ shadow
def _probabilities(prog: ProgressiveApp, episode: bool) -> dict[int, list[float]]:
    out = {}
    with httpx.Client(timeout=60) as client:
        for state in range(0, 10):
            body: dict[str, Any] = {"state": [state], "return_probs": True}
            if episode:
                body["episode_id"] = f"probs-{state}"
            resp = prog.act(client, body)
            if resp.status_code == 422:  # outside the observation space
                continue
            assert resp.status_code == 200, resp.text
            out[state] = resp.json()["probabilities"]
    return out


def test_shadow_answers_are_the_champions_and_the_log_holds_the_challengers_view(
    prog: ProgressiveApp,
) -> None:
    prog.deploy(prog.config(None))
    champion_only = _probabilities(prog, episode=True)
    since = time.time()
    prog.deploy(prog.config({"checkpoint_uri": prog.ck.early, "mode": "shadow", "weight": 0.0}))
    shadow = _probabilities(prog, episode=True)
    assert shadow == champion_only and shadow  # the same distribution, to the last digit
    ids = [f"shadow-{i}" for i in range(200)]
    answers = ask_all(prog, [{"state": [1], "episode_id": e} for e in ids])
    assert {a.json()["policy"] for a in answers} == {"champion"}
    assert {a.headers["x-rlops-checkpoint"] for a in answers} == {prog.ck.final}
    assert "probabilities" not in answers[0].json()  # computed for the log, returned only when asked
    decisions = decisions_logged(prog, since, "shadow-", len(ids))
    for d in decisions:
        assert d.slot == "champion" and d.mode == "shadow" and d.checkpoint_uri == prog.ck.final
        assert d.shadow is not None and d.shadow.error is None, d.shadow
        assert d.shadow.checkpoint_uri == prog.ck.early and d.shadow.probs is not None
        assert d.shadow.prob == pytest.approx(
            d.shadow.probs[d.action]
        )  # the challenger's p of the served action
        assert d.probs is not None and d.prob == pytest.approx(d.probs[d.action])
    assert any(d.shadow.probs != d.probs for d in decisions)  # two different policies really scored


# ------------------------------------------------------------------------------------------------ feedback
def test_feedback_is_persisted_and_joined_by_episode(prog: ProgressiveApp) -> None:
    since = time.time()
    challenger = {"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": 0.5}
    prog.deploy(prog.config(challenger))
    rewards = {f"fb-{i}": [-1.0, -1.0, float(i)] for i in range(20)}
    served: dict[str, str] = {}
    with httpx.Client(timeout=60) as client:
        for episode, rs in rewards.items():
            for step, reward in enumerate(rs):
                answer = prog.act(client, {"state": [step + 1], "episode_id": episode, "step": step})
                assert answer.status_code == 200, answer.text
                served[episode] = answer.json()["policy"]
                body = {"episode_id": episode, "reward": reward, "done": step == len(rs) - 1, "step": step}
                resp = client.post(f"{prog.url}/feedback", json=body)
                assert resp.status_code == 202, resp.text
                assert resp.json()["accepted"] is True and resp.json()["logged"] is True
        orphan = client.post(
            f"{prog.url}/feedback", json={"episode_id": "fb-never-seen", "reward": 1.0, "done": True}
        )
        assert orphan.status_code == 202 and orphan.json()["known_episode"] is False
    stream = EpisodeStream(prog.log_root, APP, LogCursor.starting_at(since), settle_seconds=3.0)
    finished: dict[str, Any] = {}

    def all_joined() -> bool:
        result = stream.poll(time.time())
        finished.update({e.episode_id: e for e in result.episodes if e.episode_id.startswith("fb-")})
        return set(rewards) <= set(finished) and result.counters["orphan_feedback"] >= 1

    wait_for(
        all_joined, timeout=60, interval=0.5, what="every feedback episode joined, and the orphan counted"
    )
    for episode, rs in rewards.items():
        joined = finished[episode]
        assert joined.total_return == pytest.approx(sum(rs))
        assert joined.rewards == pytest.approx(rs)  # each reward credited to its step's decision
        assert joined.slot == served[episode]
    feedback_counts = [m["feedback"] for m in prog.replica_metadata().values()]
    assert sum(c.get("unknown", 0) for c in feedback_counts) >= 1


@pytest.mark.parametrize(
    "body",
    [
        {"reward": 1.0, "done": True},
        {"episode_id": "ep 1", "reward": 1.0, "done": True},
        {"episode_id": "e" * 129, "reward": 1.0, "done": True},
        {"episode_id": 7, "reward": 1.0, "done": True},
        {"episode_id": "ep-1", "reward": "1.0", "done": True},
        {"episode_id": "ep-1", "reward": True, "done": True},
        {"episode_id": "ep-1", "reward": 1.0, "done": "yes"},
        {"episode_id": "ep-1", "reward": 1.0, "done": 1},
        {"episode_id": "ep-1", "reward": 1.0, "done": False, "extra": 1},
        {"episode_id": "ep-1", "reward": 1.0, "step": -1},
        [],
    ],
)
def test_feedback_bad_input_gets_the_policy_routes_json_error(prog: ProgressiveApp, body: Any) -> None:
    resp = httpx.post(f"{prog.url}/feedback", json=body, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    error = resp.json()["error"]
    assert set(error) == {"kind", "message", "field"} and error["message"]


def test_feedback_nan_reward_and_invalid_json_are_rejected(prog: ProgressiveApp) -> None:
    headers = {"content-type": "application/json"}
    for raw, status in ((b'{"episode_id": "e", "reward": NaN, "done": true}', 422), (b"{not json", 400)):
        resp = httpx.post(f"{prog.url}/feedback", content=raw, headers=headers, timeout=30)
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["kind"] in ("not_finite", "invalid_json")


def test_episode_id_is_validated_on_the_policy_route(prog: ProgressiveApp) -> None:
    with httpx.Client(timeout=30) as client:
        bad = prog.act(client, {"state": [1], "episode_id": "no spaces"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "episode_id", bad.text
        assert "A-Z a-z 0-9" in bad.json()["error"]["message"]
        batch = prog.act(client, {"observations": [[1], [2]], "episode_id": "ep-1"})
        assert batch.status_code == 422 and batch.json()["error"]["field"] == "episode_id", batch.text
        step = prog.act(client, {"state": [1], "episode_id": "ep-1", "step": -2})
        assert step.status_code == 422 and step.json()["error"]["field"] == "step", step.text


# ------------------------------------------------------------------------------------------------ changes
def test_zero_failed_requests_while_weights_change_under_load(prog: ProgressiveApp) -> None:
    prog.deploy(prog.config({"checkpoint_uri": prog.ck.early, "mode": "shadow", "weight": 0.0}))
    failures: list[str] = []
    policies: Counter[str] = Counter()
    stop = threading.Event()

    def run(worker: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not stop.is_set() and i < 5000:  # bounded even if stop never came
                body: dict[str, Any] = {"state": [1 + i % 5], "episode_id": f"load-{worker}-{i // 5}"}
                if i % 7 == 0:
                    body = {"observations": [[1], [6]]}  # the seed shapes keep working alongside
                try:
                    resp = prog.act(client, body)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                else:
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code} {resp.text[:200]}")
                    else:
                        policies[resp.json().get("policy", "")] += 1
                i += 1

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for weight in (0.1, 0.5, 1.0, 0.0):
            prog.deploy(prog.config({"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": weight}))
        prog.deploy(prog.config(None))  # abort: all traffic back to the champion at once
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    assert policies["challenger"] > 0 and policies["champion"] > 0, policies


def test_promotion_at_full_weight_moves_the_loaded_challenger_without_a_reload(prog: ProgressiveApp) -> None:
    before = prog.deploy(prog.config({"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": 1.0}))
    loaded = {r: m["challenger"]["loaded_at"] for r, m in before.items()}
    after = prog.deploy({**prog.config(None), "checkpoint_uri": prog.ck.early})
    assert set(after) == set(before), "a replica restarted during the promotion"
    for replica, meta in after.items():
        assert meta["challenger"] is None and meta["checkpoint_uri"] == prog.ck.early
        assert meta["loaded_at"] == loaded[replica], "the challenger was reloaded instead of moved"
        assert meta["promotions"] == before[replica]["promotions"] + 1
        assert meta["swap_count"] == before[replica]["swap_count"] + 1
    with httpx.Client(timeout=30) as client:
        answer = prog.act(client, {"state": [1], "episode_id": "after-promotion"})
    assert answer.json()["policy"] == "champion" and answer.headers["x-rlops-checkpoint"] == prog.ck.early


def test_swapping_roles_moves_both_loaded_policies_without_a_load(prog: ProgressiveApp) -> None:
    """Undo staged as a canary: the champion becomes the challenger and back, both already loaded."""
    before = prog.deploy(prog.config({"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": 0.2}))
    swapped = {"checkpoint_uri": prog.ck.final, "mode": "canary", "weight": 0.2}
    after = prog.deploy({**prog.config(swapped), "checkpoint_uri": prog.ck.early})
    assert set(after) == set(before), "a replica restarted during the swap"
    for replica, meta in after.items():
        old = before[replica]
        assert meta["checkpoint_uri"] == prog.ck.early and meta["challenger"]["loaded"] is True
        assert meta["loaded_at"] == old["challenger"]["loaded_at"]  # moved, not reloaded
        assert meta["challenger"]["loaded_at"] == old["loaded_at"]
    prog.deploy(prog.config(None))


def test_a_challenger_that_fails_to_load_leaves_the_champion_serving(
    prog: ProgressiveApp, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-checkpoint")
    metas = prog.deploy(prog.config({"checkpoint_uri": missing, "mode": "canary", "weight": 1.0}))
    for meta in metas.values():
        assert meta["checkpoint_uri"] == prog.ck.final and meta["last_error"] is None
        challenger = meta["challenger"]
        assert challenger["checkpoint_uri"] == missing and challenger["loaded"] is False
        assert challenger["last_error"] and challenger["last_error"]["checkpoint_uri"] == missing
    answers = ask_all(prog, [{"state": [1], "episode_id": f"fail-{i}"} for i in range(50)])
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["policy"] for a in answers} == {"champion"}
    metas = prog.deploy(prog.config(None))
    assert all(m["challenger"] is None for m in metas.values())


# ------------------------------------------------------------------------------------- the log fails
def test_a_decision_log_that_cannot_be_written_drops_and_counts_and_fails_no_request(
    prog: ProgressiveApp, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = str(blocker / "logs")  # every write fails: a file stands where a folder should be
    challenger = {"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": 0.5}
    config = prog.config(challenger)
    config["decision_log"] = {"root": root, "flush_seconds": 0.2, "write_attempts": 1}
    prog.deploy(config)
    answers = ask_all(prog, [{"state": [1], "episode_id": f"nolog-{i}"} for i in range(40)])
    assert {a.status_code for a in answers} == {200}
    with httpx.Client(timeout=30) as client:
        resp = client.post(
            f"{prog.url}/feedback", json={"episode_id": "nolog-1", "reward": 1.0, "done": True}
        )
    assert resp.status_code == 202, resp.text

    def dropped() -> dict[str, dict[str, Any]] | None:
        metas = prog.replica_metadata()
        logs = [m["decision_log"] for m in metas.values()]
        return metas if sum(s["dropped"] for s in logs) >= 41 and any(s["last_error"] for s in logs) else None

    metas = wait_for(dropped, timeout=60, interval=0.5, what="the failed writes counted as dropped")
    assert all(m["decision_log"]["current_writer"]["written"] == 0 for m in metas.values())  # this root
    prog.deploy(prog.config(None))


def test_a_malformed_decision_log_root_is_refused_and_the_replica_keeps_serving(prog: ProgressiveApp) -> None:
    prog.deploy(prog.config(None))
    bad = {**prog.config(None), "decision_log": {"root": "s3://"}}
    prog.apps.deploy(APP, bad, num_replicas=REPLICAS, wait=False)

    def refused() -> dict[str, dict[str, Any]] | None:
        metas = prog.replica_metadata()
        return metas if all(m["last_error"] for m in metas.values()) else None

    metas = wait_for(refused, timeout=120, interval=0.5, what="both replicas reporting the bad user_config")
    for meta in metas.values():
        assert "invalid user_config" in meta["last_error"]["error"], meta["last_error"]
        assert meta["decision_log"]["root"] == prog.log_root  # the last good writer is kept
    with httpx.Client(timeout=30) as client:
        assert prog.act(client, {"state": [1], "episode_id": "still-serving"}).status_code == 200
    metas = prog.deploy(prog.config(None))
    assert all(m["last_error"] is None for m in metas.values())


# ------------------------------------------------------------------------------------------------ metrics
def _metrics_text() -> str:
    import ray

    texts = []
    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            texts.append(httpx.get(url, timeout=30).text)
    return "\n".join(texts)


def _series(name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric of this module's app, from Ray's Prometheus endpoints."""
    pattern = re.compile(rf"^{name}\{{([^}}]*)\}} (\S+)$", re.MULTILINE)
    return {
        labels: float(v) for labels, v in pattern.findall(_metrics_text()) if f'application="{APP}"' in labels
    }


def test_per_slot_metrics_are_exported(prog: ProgressiveApp) -> None:
    prog.deploy(prog.config({"checkpoint_uri": prog.ck.early, "mode": "canary", "weight": 0.5}))
    answers = ask_all(prog, [{"state": [1], "episode_id": f"metrics-{i}"} for i in range(40)])
    assert {a.json()["policy"] for a in answers} == {"champion", "challenger"}
    httpx.post(
        f"{prog.url}/feedback", json={"episode_id": "metrics-0", "reward": 1.0, "done": True}, timeout=30
    )

    def exported() -> bool:
        requests = _series("ray_rlops_serve_slot_requests_total")
        weights = _series("ray_rlops_serve_challenger_weight")
        return (
            any('slot="challenger"' in k for k in requests)
            and any('slot="champion"' in k for k in requests)
            and any('mode="canary"' in k and v == 0.5 for k, v in weights.items())
            and bool(_series("ray_rlops_serve_slot_latency_ms_bucket"))
            and bool(_series("ray_rlops_serve_feedback_total"))
            and any('outcome="written"' in k for k in _series("ray_rlops_serve_decision_log_records_total"))
        )

    wait_for(exported, timeout=90, interval=2.0, what="per-slot metrics on Ray's Prometheus endpoint")
    prog.deploy(prog.config(None))
