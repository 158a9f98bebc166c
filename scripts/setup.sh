#!/usr/bin/env bash
# Set up avatarflow on a fresh Debian 12 machine: system packages, then the Python package in .venv.
#   scripts/setup.sh          # runtime only
#   scripts/setup.sh --test   # plus the test extras (pytest, Playwright's Python client)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi

# ffmpeg: all media work; postgresql: production database and the test server; chromium: the
# browser tests; espeak-ng + sox: the demo's speech; python3-venv: the virtual environment.
packages=(ffmpeg postgresql chromium espeak-ng sox python3-venv ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "avatarflow needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
echo "avatarflow installed in $(pwd)/.venv"
