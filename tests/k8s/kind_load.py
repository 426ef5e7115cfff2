"""Steady request load against the Serve endpoint during a rollout (runs inside the kind cluster).

scripts/kind_e2e.sh starts it as a pod (operator image, stdlib only). It sends POST / requests in a loop,
reads /metadata every few requests, and stops once the live checkpoint has changed and AFTER more
requests were answered by the new one, or at the deadline. The last line is ``RESULT {json}``;
the exit code is 0 only when no request failed and the checkpoint switched.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(url: str, body: dict | None, timeout: float) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as rsp:
        return json.load(rsp)


def main() -> int:
    base = os.environ["ENDPOINT"].rstrip("/")
    deadline = time.monotonic() + float(os.environ.get("DEADLINE_S", "1800"))
    after = int(os.environ.get("AFTER", "100"))
    pause = float(os.environ.get("PAUSE_S", "0.05"))
    ok = failed = 0
    errors: list[str] = []
    seen: list[str] = []
    after_switch = 0
    while time.monotonic() < deadline:
        try:
            answer = call(base + "/", {"state": [ok % 3]}, timeout=10)
            if "action" not in answer:
                raise ValueError(f"no action in {answer}")
            ok += 1
            if len(seen) > 1:
                after_switch += 1
            if ok % 10 == 1:
                live = call(base + "/metadata", None, timeout=10)["checkpoint_uri"]
                if not seen or seen[-1] != live:
                    seen.append(live)
                    print(f"live checkpoint now {live} after {ok} requests", flush=True)
        except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
            failed += 1
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            print(f"request failed: {errors[-1]}", flush=True)
        if len(seen) > 1 and after_switch >= after:
            break
        time.sleep(pause)
    result = {"ok": ok, "failed": failed, "checkpoints": seen, "errors": errors[:20]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if failed == 0 and len(seen) > 1 else 1


if __name__ == "__main__":
    sys.exit(main())
