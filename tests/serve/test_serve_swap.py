"""Hot-swap via reconfigure(): zero failed requests under load; bad checkpoints keep the old policy."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import httpx
import pytest

from rlops_core import checkpoints

pytestmark = pytest.mark.slow


def metadata(url: str) -> dict:
    return httpx.get(f"{url}/metadata", timeout=30).json()


class Load:
    """Client threads sending single and batch requests until stopped; records every non-200."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.ok = 0
        self.seen: set[str] = set()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                body = {"observations": [[1], [6]]} if i % 2 else {"state": [1]}
                try:
                    resp = client.post(f"{self.url}/", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if resp.status_code != 200:
                    self.failures.append(f"{resp.status_code} {resp.text[:200]}")
                else:
                    self.ok += 1
                    self.seen.add(resp.headers.get("x-rlops-checkpoint", ""))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)


def test_hot_swap_under_load_and_pointer(serve_apps, corridor_checkpoints, tmp_path: Path, wait) -> None:
    ck = corridor_checkpoints
    url = serve_apps.deploy("swap", {"checkpoint_uri": ck.final})
    replica = metadata(url)["replica"]
    pointer = str(tmp_path / "corridor" / "best_checkpoint.txt")
    swaps = 4
    with Load(url) as load:
        for i in range(swaps):
            target = ck.early if i % 2 == 0 else ck.final
            checkpoints.write_pointer(pointer, target)
            uri = checkpoints.read_pointer(pointer)
            serve_apps.deploy("swap", {"checkpoint_uri": uri})
            wait(lambda uri=uri: metadata(url)["checkpoint_uri"] == uri, timeout=90)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20
    assert load.seen >= {ck.early, ck.final}
    meta = metadata(url)
    assert meta["checkpoint_uri"] == checkpoints.read_pointer(pointer) == ck.final
    assert meta["swap_count"] == swaps and meta["last_error"] is None
    assert meta["replica"] == replica, (
        "a user_config change must reconfigure the live replica, not replace it"
    )
    assert meta["metric"]["value"] > 8.0


def _corrupt_copy(src: str, dest: Path) -> str:
    """A manifested copy of a checkpoint whose module weights are then altered after the manifest."""
    shutil.copytree(src, dest)
    (dest / checkpoints.MANIFEST_NAME).unlink()
    manifest = checkpoints.build_manifest(str(dest), metric_name="m", metric_value=9.9, env_id="corridor")
    checkpoints.write_manifest(manifest)
    weights = dest / "learner_group/learner/rl_module/default_policy/module_state.pkl"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return str(dest)


def test_bad_checkpoints_keep_the_old_policy(serve_apps, corridor_checkpoints, tmp_path: Path, wait) -> None:
    ck = corridor_checkpoints
    url = serve_apps.deploy("swapbad", {"checkpoint_uri": ck.final})
    corrupt = _corrupt_copy(ck.final, tmp_path / "corrupt")
    unpicklable = tmp_path / "garbage"
    shutil.copytree(ck.final, unpicklable)
    (unpicklable / checkpoints.MANIFEST_NAME).unlink()
    (unpicklable / "learner_group/learner/rl_module/default_policy/module_state.pkl").write_bytes(
        b"not a pickle"
    )
    checkpoints.write_manifest(
        checkpoints.build_manifest(str(unpicklable), metric_name="m", metric_value=1.0, env_id="corridor")
    )
    cases = {
        corrupt: "sha256",
        str(tmp_path / "missing"): "rlops.json",
        str(unpicklable): "load:",
    }
    with Load(url, threads=2) as load:
        for bad, expected in cases.items():
            serve_apps.deploy("swapbad", {"checkpoint_uri": bad})
            meta = wait(
                lambda bad=bad: (
                    (m := metadata(url))["last_error"] and m["last_error"]["checkpoint_uri"] == bad and m
                )
            )
            assert meta["checkpoint_uri"] == ck.final
            assert expected in meta["last_error"]["error"]
            assert serve_apps.status("swapbad")["status"] == "RUNNING"
    assert load.failures == [] and load.ok > 0
    assert load.seen == {ck.final}
    # A controller rolls back: the good URI clears the error without reloading.
    serve_apps.deploy("swapbad", {"checkpoint_uri": ck.final})
    meta = wait(lambda: (m := metadata(url))["last_error"] is None and m)
    assert meta["checkpoint_uri"] == ck.final and meta["swap_count"] == 0
    serve_apps.remove("swapbad")


def test_cold_start_with_a_bad_checkpoint_fails_visibly(serve_apps, tmp_path: Path) -> None:
    bad = str(tmp_path / "never-written")
    serve_apps.deploy("coldbad", {"checkpoint_uri": bad}, wait=False)
    status = serve_apps.wait_status("coldbad", {"DEPLOY_FAILED", "UNHEALTHY"}, timeout=180)
    assert bad in status.get("message", "") or bad in str(status.get("deployments", {})), status
    serve_apps.remove("coldbad")
