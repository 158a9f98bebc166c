#!/usr/bin/env bash
# Set up avatarflow with its test extras and run the whole test suite in two tiers: the fast
# tier first (stage functions with fakes, rules, architecture: a couple of minutes), then the
# real-parts tier (PostgreSQL, Prefect, ffmpeg, MediaPipe, Chromium). Arguments go to both runs;
# with arguments naming tests (`scripts/test.sh tests/stages -x`) one plain run is made instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
for arg in "$@"; do
    if [[ "$arg" == tests* ]]; then exec .venv/bin/python -m pytest "$@"; fi
done
.venv/bin/python -m pytest -m unit "$@"
exec .venv/bin/python -m pytest -m "not unit" "$@"
