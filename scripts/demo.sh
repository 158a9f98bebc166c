#!/usr/bin/env bash
# Set up avatarflow and run it on the bundled demo with the embedded defaults (SQLite, CPU engine).
set -euo pipefail
# The commands the demo prints are spelled relative to the folder it was started from.
export AVATARFLOW_CALLER_CWD="$PWD"
cd "$(dirname "$0")/.."
scripts/setup.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/avatarflow demo "$@"
