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

# pip runs only when pyproject.toml or the extras changed since the last install: a stamp in the
# venv records what was installed (delete .venv/.avatarflow-installed to force a reinstall).
stamp=.venv/.avatarflow-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=${extras:-none}"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" && -x .venv/bin/avatarflow ]]; then
    echo "avatarflow already installed in $(pwd)/.venv (pyproject.toml unchanged)"
    exit 0
fi
# A test install also satisfies a runtime-only request.
if [[ -z "$extras" && -f "$stamp" && "$(cat "$stamp")" == "${wanted% *} extras=[test]" ]]; then
    echo "avatarflow already installed in $(pwd)/.venv (with test extras)"
    exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# setuptools warns on every editable install about folders named like the package; this
# repository's layout is the package, so the warning says nothing here.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".${extras}"
echo "$wanted" > "$stamp"
echo "avatarflow installed in $(pwd)/.venv"
