#!/usr/bin/env bash
# The GPU acceptance run in one command, from the repo root of a checkout on the GPU host.
#
#   benchmarks/gpu/run_acceptance.sh [RUNS] [DEADLINE_S]
#
# RUNS: names from benchmarks/gpu/acceptance.py RUNS, comma-separated, or "all" (default).
# Needs the carried folder .gpu/ (benchmarks/gpu/prepare_carry.sh) unless LIVEAVATAR_DIR and a
# Python environment with Live Avatar's requirements are already there. Builds the random-weight
# checkpoint once into $WEIGHTS (default /tmp/ckpt, ~47 GB), runs what is not yet in
# $WORK/results.jsonl (default /tmp/acceptance), and packs results and logs into $OUT (default
# $WORK/out): results.jsonl, versions.json, logs.tar.gz.
set -uo pipefail
runs=${1:-all}
deadline=${2:-540}
WEIGHTS=${WEIGHTS:-/tmp/ckpt}
WORK=${WORK:-/tmp/acceptance}
OUT=${OUT:-$WORK/out}
INPUTS=${INPUTS:-.gpu/inputs}
started=$(date +%s)
mkdir -p "$WORK" "$OUT"
if [[ -d .gpu/wheels ]]; then
    source benchmarks/gpu/bootstrap.sh || exit 1
elif [[ -z "${LIVEAVATAR_DIR:-}" ]]; then
    echo "set LIVEAVATAR_DIR to the Live Avatar checkout (or carry .gpu/: benchmarks/gpu/prepare_carry.sh)" >&2
    exit 1
fi
export PYTHONUNBUFFERED=1
if [[ ! -f "$WORK/probe.jsonl" ]]; then
    for capture in 0 1; do
        TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=$capture timeout 120 \
            python3 benchmarks/gpu/compile_probe.py --liveavatar "$LIVEAVATAR_DIR" >>"$WORK/probe.jsonl" \
            2>>"$WORK/probe.err"
    done
    cat "$WORK/probe.jsonl"
fi
timeout 600 python3 benchmarks/gpu/build_checkpoint.py --liveavatar "$LIVEAVATAR_DIR" --out "$WEIGHTS" \
    2>&1 | tee -a "$WORK/build.log" | tail -n 15
left=$(( deadline - ($(date +%s) - started) ))
timeout $(( left + 60 )) python3 benchmarks/gpu/acceptance.py --liveavatar "$LIVEAVATAR_DIR" \
    --weights "$WEIGHTS" --inputs "$INPUTS" --work "$WORK" --runs "$runs" --deadline-s "$left"
status=$?
cp "$WORK/results.jsonl" "$WORK/versions.json" "$OUT/" 2>/dev/null
# Up to RETURN_VIDEOS verified videos of at most 15 MiB that no earlier call returned, for the
# technical checks (`avatarflow qc check`) on a machine with the full avatarflow installed.
touch "$WORK/returned.txt"
find "$WORK/jobs" -name generated.mp4 -size -15M -printf '%s %p\n' 2>/dev/null | sort -n | cut -d' ' -f2- |
    grep -vxF -f "$WORK/returned.txt" | head -n "${RETURN_VIDEOS:-4}" | while read -r video; do
        cp "$video" "$OUT/$(basename "$(dirname "$video")").mp4" && echo "$video" >>"$WORK/returned.txt"
    done
tar czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.mp4' . 2>/dev/null
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader
exit $status
