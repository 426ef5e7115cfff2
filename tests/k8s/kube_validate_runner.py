"""Run by the tools venv's Python (kubernetes-validate lives there, not in the project venv).

Reads {"versions": [...], "docs": [[label, doc], ...]} as JSON on stdin and prints a JSON list of
"label: message" errors: every document checked strictly (unknown fields are errors) against the
bundled Kubernetes schemas of each version.
"""

from __future__ import annotations

import json
import sys

import kubernetes_validate


def main() -> None:
    request = json.load(sys.stdin)
    errors: list[str] = []
    for version in request["versions"]:
        for label, doc in request["docs"]:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as exc:  # every failure kind is a finding to report
                message = getattr(exc, "message", None) or str(exc)
                errors.append(f"{label} @ {version}: {type(exc).__name__}: {message}")
    json.dump(errors, sys.stdout)


if __name__ == "__main__":
    main()
