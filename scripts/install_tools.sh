#!/usr/bin/env bash
# Installs the pinned chart and manifest tools into .tools (filled in by the packaging work).
set -euo pipefail
mkdir -p "$(dirname "$0")/../.tools"
