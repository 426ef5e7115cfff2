"""docs/serving.md's local path runs as written: ``ray start --head``, ``RAY_AUTH_MODE=token``, a training
round, ``serve deploy``, requests, ``ray stop``.

The block between ``<!-- local-serve:begin -->`` and ``<!-- local-serve:end -->`` is read from the doc
and every command runs through bash, in order, from a scratch folder that links ``workloads/`` (so
``results/`` lands there). What the test changes, and only so that it can share this machine:

- ``ray start --head`` gets free ports, a private ``--temp-dir`` and ``--block`` (run in its own
  process group); ``HOME`` is a temporary folder, so the doc's ``ray get-auth-token --generate``
  writes a private ``~/.ray/auth_token`` (the machine's own token is never touched). The CLIs find
  the cluster through ``RAY_ADDRESS`` / ``RAY_DASHBOARD_ADDRESS``.
- The Serve config written by the doc's ``sed`` gets a free port on 127.0.0.1 instead of 0.0.0.0:8000
  (and ``8000`` in the curl lines becomes that port).
- ``ray stop`` (which ends every Ray process of the machine) becomes stopping this cluster's process
  group.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from rlops_demo.cluster import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "serving.md"
BIN = Path(sys.executable).parent


def documented_commands() -> list[str]:
    text = DOC.read_text()
    block = re.search(r"<!-- local-serve:begin -->\n```bash\n(.*?)```\n<!-- local-serve:end -->", text, re.S)
    assert block, "docs/serving.md lost its local-serve block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


class DocCluster:
    """``ray start --head`` as the doc says, on free ports, in its own process group."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.gcs_port, self.dashboard_port, self.serve_port = free_port(), free_port(), free_port()
        self.temp_dir = Path(f"/tmp/rlops-doc-{uuid.uuid4().hex[:6]}")  # short: AF_UNIX path limit
        self.home = home
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, command: str, log: Path) -> None:
        extra = (
            f" --block --port={self.gcs_port} --dashboard-host=127.0.0.1"
            f" --dashboard-port={self.dashboard_port} --temp-dir={self.temp_dir} --num-cpus=4"
            " --disable-usage-stats"
        )
        self.process = subprocess.Popen(
            ["bash", "-c", command + extra],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        token_file = self.home / ".ray" / "auth_token"  # written by the doc's `ray get-auth-token --generate`

        def dashboard_answers() -> bool:
            assert self.process is not None and self.process.poll() is None, log.read_text()[-2000:]
            headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            try:
                url = f"http://127.0.0.1:{self.dashboard_port}/api/version"
                return httpx.get(url, headers=headers, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(dashboard_answers, timeout=180, interval=0.5, what="the Ray dashboard of ray start --head")

    def stop(self) -> None:
        if self.process is not None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            self.process = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _local_serve_config(path: Path, port: int) -> None:
    config = yaml.safe_load(path.read_text())
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.slow
def test_documented_local_serve_path_works_as_written(tmp_path: Path) -> None:
    commands = documented_commands()
    assert commands[-1] == "ray stop"
    assert commands.index("export RAY_AUTH_MODE=token") < commands.index("ray start --head")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "workloads").symlink_to(ROOT / "workloads")
    drop = {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    cluster = DocCluster(home, env)
    env["RAY_ADDRESS"] = f"127.0.0.1:{cluster.gcs_port}"
    env["RAY_DASHBOARD_ADDRESS"] = f"http://127.0.0.1:{cluster.dashboard_port}"
    outputs: dict[str, str] = {}
    try:
        for command in commands:
            if command == "ray start --head":
                cluster.start(command, tmp_path / "ray-head.log")
                continue
            if command == "ray stop":
                cluster.stop()
                continue
            if command.startswith("export "):
                key, _, value = command.removeprefix("export ").partition("=")
                env[key] = value
                continue
            run = command.replace("127.0.0.1:8000", f"127.0.0.1:{cluster.serve_port}")
            if command.startswith("serve deploy"):
                # What the doc warns about: without RAY_AUTH_MODE=token the CLI sends no token.
                no_mode = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
                refused = subprocess.run(
                    ["bash", "-c", run], cwd=work, env=no_mode, capture_output=True, text=True, timeout=300
                )
                outputs["without RAY_AUTH_MODE"] = (
                    f"rc={refused.returncode}\n{refused.stdout}{refused.stderr}"
                )
            result = subprocess.run(
                ["bash", "-c", run], cwd=work, env=env, capture_output=True, text=True, timeout=900
            )
            assert result.returncode == 0, (
                f"{command!r} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
            outputs[command] = result.stdout
            if command.startswith("sed "):
                _local_serve_config(work / "results" / "serving" / "serve_config.yaml", cluster.serve_port)
    finally:
        cluster.stop()

    pointer = (work / "results" / "serving" / "corridor" / "best_checkpoint.txt").read_text().strip()
    answer = json.loads(next(v for k, v in outputs.items() if "state" in k))
    assert answer["action"] in (0, 1)
    metadata = json.loads(next(v for k, v in outputs.items() if k.endswith("/metadata")))
    assert metadata["checkpoint_uri"] == pointer
    refused = outputs["without RAY_AUTH_MODE"]
    assert not refused.startswith("rc=0") and "no authentication token was found" in refused, refused
