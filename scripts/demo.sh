#!/usr/bin/env bash
# Set up avatarflow and run it on the bundled demo with the embedded defaults (SQLite, CPU engine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/avatarflow demo "$@"
