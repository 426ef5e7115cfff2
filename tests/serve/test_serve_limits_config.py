"""The HAProxy hardening shim and the shipped limit settings, without a Ray cluster.

The config under test is rendered by Ray's own HAProxy template code (``HAProxyApi``), and the result is
checked by the real bundled HAProxy binary (``haproxy -c``): nothing here is a hand-written stand-in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workloads.serving import haproxy_hardening as hh

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "workloads" / "serving" / "haproxy-hardened"


def _ray_config(tmp_path: Path, host: str = "0.0.0.0") -> Path:
    """haproxy.cfg exactly as Ray Serve 2.60 renders it for one app backend."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    cfg = HAProxyConfig(
        http_options=HTTPOptions(host=host, port=18000, keep_alive_timeout_s=5),
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "server-state"),
        is_head=True,
    )
    backend = BackendConfig(
        name="http-corridor",
        path_prefix="/",
        app_name="corridor",
        servers=[ServerConfig(name="r1", host="127.0.0.1", port=18001)],
    )
    path = tmp_path / "haproxy.cfg"
    HAProxyApi(
        cfg=cfg, backend_configs={"b": backend}, config_file_path=str(path)
    )._generate_config_file_internal()
    return path


def _section(text: str, header: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == header)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines)
    )
    return "\n".join(lines[start:end])


def test_harden_binds_admin_listeners_to_loopback_and_adds_timeouts(tmp_path: Path) -> None:
    original = _ray_config(tmp_path).read_text()
    assert "bind *:" in _section(original, "listen stats")  # what Ray renders: every interface
    hardened = hh.harden(original, hh.Hardening(), tmp_path / "pages")
    assert "bind 127.0.0.1:" in _section(hardened, "listen stats")
    assert "bind 127.0.0.1:" in _section(hardened, "frontend prometheus")
    defaults = _section(hardened, "defaults")
    assert "timeout http-request 10s" in defaults and "option http-buffer-request" in defaults
    frontend = _section(hardened, "frontend http_frontend").splitlines()
    assert frontend[1].strip().startswith("bind ")
    assert frontend[2].strip().startswith("acl rlops_known_method method GET HEAD POST")
    assert "set-log-level silent if !rlops_known_method" in frontend[3]  # before the metrics log line
    assert "return status 405" in frontend[4]
    assert hh.harden(hardened, hh.Hardening(), tmp_path / "pages") == hardened  # idempotent (reloads)


def test_hardened_config_is_valid_for_the_bundled_haproxy(tmp_path: Path) -> None:
    path = _ray_config(tmp_path)
    hardening = hh.Hardening()
    hh.write_pages(tmp_path / "pages", hardening)
    path.write_text(hh.harden(path.read_text(), hardening, tmp_path / "pages"))
    binary = hh.real_binary()
    result = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_shim_rewrites_then_runs_haproxy_even_when_named_by_ray(tmp_path: Path) -> None:
    """Run as Ray runs it: RAY_SERVE_HAPROXY_BINARY_PATH names the shim (which must not exec itself)."""
    path = _ray_config(tmp_path)
    env = {
        **os.environ,
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(SHIM),
        "RLOPS_PYTHON": sys.executable,
        "RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S": "7",
    }
    result = subprocess.run(
        [str(SHIM), "-c", "-f", str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert "timeout http-request 7s" in text and hh.MARKER in text
    assert (tmp_path / "rlops-pages" / "405.json").is_file()


def test_shim_fails_closed_on_an_unknown_template(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text("global\n    maxconn 10\ndefaults\n    mode http\n")
    env = {**os.environ, "RLOPS_PYTHON": sys.executable}
    result = subprocess.run(
        [str(SHIM), "-c", "-f", str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 78 and "no 'listen stats / bind' section" in result.stderr, result.stderr
    with pytest.raises(hh.HardeningError):
        hh.harden(path.read_text(), hh.Hardening(), tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S": "0"}, "at least 1"),
        ({"RLOPS_HAPROXY_ADMIN_HOST": "1.2.3.4 ; bind *"}, "not an address"),
        ({"RLOPS_HAPROXY_ALLOWED_METHODS": "GET if TRUE"}, "upper-case"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(hh.HardeningError, match=message):
        hh.Hardening.from_env(env)


def test_real_binary_refuses_the_shim(tmp_path: Path) -> None:
    with pytest.raises(hh.HardeningError, match="is this shim"):
        hh.real_binary({"RLOPS_HAPROXY_BINARY": str(SHIM), "PATH": ""})


def test_shipped_serve_config_sets_the_safe_limits() -> None:
    config = yaml.safe_load((REPO / "workloads" / "serve_config.yaml").read_text())
    http = config["http_options"]
    assert http["keep_alive_timeout_s"] <= 15 and http["request_timeout_s"] <= 60
    user = config["applications"][0]["deployments"][0]["user_config"]
    assert user["max_body_bytes"] == 1024 * 1024 and user["body_timeout_s"] == 10


def test_demo_deploys_the_shipped_limits() -> None:
    from rlops_demo.serve_deploy import serve_config

    config = serve_config("file:///tmp/checkpoint", 18080)
    assert config["http_options"]["host"] == "127.0.0.1" and config["http_options"]["port"] == 18080
    assert config["http_options"]["keep_alive_timeout_s"] == 5
    assert config["http_options"]["request_timeout_s"] == 30
