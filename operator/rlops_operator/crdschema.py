"""The CRD's ``status`` schema, generated from the status models (:mod:`rlops_operator.status`).

``status_schema()`` turns the pydantic JSON schema into a Kubernetes structural OpenAPI v3 schema
(references inlined, optional fields as their plain type, descriptions kept). A test compares it with
``charts/rlops/crds/policyrollouts.rlops.io.yaml``; after changing a status model, run
``python -m rlops_operator.crdschema --write`` and then ``make manifests``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .progressive import crd_schema as strategy_schema
from .status import RolloutStatus

CRD_PATH = Path(__file__).resolve().parents[2] / "charts/rlops/crds/policyrollouts.rlops.io.yaml"
STATUS_INDENT = 12  # "            status:" inside openAPIV3Schema.properties
SPEC_FIELD_INDENT = 16  # "                strategy:" inside spec.properties
GENERATED_BEGIN = "# generated from rlops_operator.progressive: python -m rlops_operator.crdschema --write"
GENERATED_END = "# end of generated spec fields"
LOG_ROOT_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "pattern": "^(s3://[a-z0-9.-]{3,63}(/.*)?|file:///.+|/.+)$",
    "description": "Storage root of the Serve app's decision logs (progressive strategy). "
    "Default: the storage root above the pointer.",
}
_KEEP = (
    "type",
    "description",
    "enum",
    "format",
    "minimum",
    "maximum",
    "maxItems",
    "minItems",
    "x-kubernetes-preserve-unknown-fields",
)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    description = node.get("description")
    if "$ref" in node:
        node = {
            **defs[node["$ref"].rsplit("/", 1)[-1]],
            **({"description": description} if description else {}),
        }
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {node} in a structural schema")
        inner = _structural(options[0], defs)
        for key in ("description", "x-kubernetes-preserve-unknown-fields"):
            if node.get(key):
                inner[key] = node[key]
        return inner
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    out = {key: node[key] for key in _KEEP if key in node}
    if "enum" in node and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        out["properties"] = {name: _structural(sub, defs) for name, sub in node.get("properties", {}).items()}
    if out.get("type") == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    if "exclusiveMinimum" in node:
        out["minimum"] = node["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    return out


def status_schema() -> dict[str, Any]:
    """The ``status`` property of the CRD's openAPIV3Schema, from :class:`RolloutStatus`."""
    schema = RolloutStatus.model_json_schema(by_alias=True, mode="serialization")
    defs = schema.get("$defs", {})
    out = _structural(schema, defs)
    out["properties"]["observedGeneration"]["type"] = "integer"
    return out


def _render(block: dict[str, Any], indent: int) -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.representer.ignore_aliases = lambda *_: True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(block, buf)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in buf.getvalue().splitlines(True))


def render_status_block() -> str:
    """The YAML lines of ``status:`` as they appear in the CRD file."""
    return _render({"status": status_schema()}, STATUS_INDENT)


def render_spec_fields() -> str:
    """The generated ``spec`` fields (``logRoot``, ``strategy``), between their marker comments."""
    pad = " " * SPEC_FIELD_INDENT
    body = _render({"logRoot": LOG_ROOT_SCHEMA, "strategy": strategy_schema()}, SPEC_FIELD_INDENT)
    return f"{pad}{GENERATED_BEGIN}\n{body}{pad}{GENERATED_END}\n"


def write_crd(path: Path = CRD_PATH) -> None:
    """Replace the generated spec fields and the ``status`` block (the last block) in the CRD file."""
    lines = path.read_text().splitlines(True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == " " * STATUS_INDENT + "status:")
    head = lines[:start]
    marks = [i for i, line in enumerate(head) if line.strip() in (GENERATED_BEGIN, GENERATED_END)]
    if len(marks) == 2:
        head = head[: marks[0]] + head[marks[1] + 1 :]
        at = marks[0]
    else:
        at = len(head)  # first time: the generated fields go last in spec.properties
    text = "".join(head[:at]) + render_spec_fields() + "".join(head[at:])
    path.write_text(text + render_status_block())


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_crd()
    else:
        sys.stdout.write(render_status_block())
