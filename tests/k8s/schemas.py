"""Validate custom resources against a CRD's OpenAPI v3 schema, the way the API server would.

The API server prunes fields a structural schema does not declare; a manifest with a misspelt field
would lose it silently. Here such fields are errors: every object schema with ``properties`` and no
``x-kubernetes-preserve-unknown-fields`` / ``additionalProperties`` becomes closed.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of an openAPIV3Schema with undeclared fields forbidden (recursively)."""
    out = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for item in node:
                close(item)

    close(out)
    return out


def crd_version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


@cache
def load_crd(path: str) -> dict[str, Any]:
    """A CRD file, parsed once (KubeRay's are over 1 MB: the C loader when PyYAML has it)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader)


@cache
def _validator(path: str, version: str) -> jsonschema.Draft4Validator:
    crd = load_crd(path)
    schema = strict_schema(crd_version_schema(crd, version))
    # The metadata of a custom resource is checked by the API server itself, not by the CRD schema.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    return jsonschema.Draft4Validator(schema)


def crd_errors(crd_path: Path, doc: dict[str, Any]) -> list[str]:
    """Schema violations of ``doc`` against the CRD version its apiVersion names (empty = valid)."""
    version = doc["apiVersion"].split("/")[-1]
    validator = _validator(str(crd_path), version)
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
