# shellcheck shell=bash
# SOURCE this on the GPU acceptance machine, from the repo root, at the start of every device
# command (the carried folder .gpu/ comes from benchmarks/gpu/prepare_carry.sh):
#
#     source benchmarks/gpu/bootstrap.sh || exit 1
#
# It installs the carried wheels into /tmp/site (once per machine: a stamp remembers the set),
# unpacks ffmpeg/ffprobe into /tmp/gpubin (once), and exports PATH, PYTHONPATH (/tmp/site, the
# acceptance-run stand-ins, the Live Avatar checkout), IMAGEIO_FFMPEG_EXE, HF_HUB_OFFLINE=1,
# TRANSFORMERS_OFFLINE=1 and LIVEAVATAR_DIR; then prints versions. Safe to source twice (nothing
# is added to PATH/PYTHONPATH twice, finished steps are skipped); it never calls `exit` or
# `set -e`, so it cannot end the calling shell. Returns non-zero when something is missing.
# GPU_CARRY overrides the carried folder (default: ./.gpu).

_avf_bootstrap() {
  local root carry site=/tmp/site bin=/tmp/gpubin stamp want b standins p
  root="$(pwd)"
  carry="${GPU_CARRY:-$root/.gpu}"
  if [ ! -d "$carry/wheels" ] || [ ! -d "$carry/liveavatar" ] || [ ! -d "$carry/bin" ]; then
    echo "bootstrap: $carry/{wheels,liveavatar,bin} missing: run benchmarks/gpu/prepare_carry.sh" \
         "on the development machine and name .gpu in the device call's carry" >&2
    return 1
  fi
  # -- wheels -> /tmp/site, once per set of wheels
  stamp="$site/.avatarflow-wheels"
  want="$(cd "$carry/wheels" && ls -- *.whl | sort | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$carry"/wheels/*.whl || { echo "bootstrap: pip install failed" >&2; return 1; }
    echo "$want" >"$stamp"
  fi
  # -- ffmpeg, ffprobe -> /tmp/gpubin, once
  mkdir -p "$bin"
  for b in ffmpeg ffprobe; do
    if [ ! -x "$bin/$b" ]; then
      if command -v xz >/dev/null 2>&1; then
        xz -dc "$carry/bin/$b.xz" >"$bin/$b.tmp"
      else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
          "$carry/bin/$b.xz" "$bin/$b.tmp"
      fi || { echo "bootstrap: could not unpack $b" >&2; rm -f "$bin/$b.tmp"; return 1; }
      chmod +x "$bin/$b.tmp" && mv "$bin/$b.tmp" "$bin/$b"
    fi
  done
  # -- environment (each entry added once)
  case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$bin:$PATH" ;; esac
  standins="$carry/standins"
  [ -d "$standins" ] || standins="$root/benchmarks/gpu/standins"
  for p in "$carry/liveavatar" "$standins" "$site"; do  # ends as site:standins:liveavatar
    case ":${PYTHONPATH:-}:" in
      *":$p:"*) ;;
      *) export PYTHONPATH="$p${PYTHONPATH:+:$PYTHONPATH}" ;;
    esac
  done
  export LIVEAVATAR_DIR="$carry/liveavatar"
  export IMAGEIO_FFMPEG_EXE="$bin/ffmpeg"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
  export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba-cache}"
  export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
  # -- versions (metadata only: no heavy imports)
  python3 - <<'PY'
import importlib.metadata as md, importlib.util as iu, sys
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"
names = ["torch", "transformers", "diffusers", "peft", "accelerate", "numpy", "safetensors",
         "tokenizers", "librosa"]
print("bootstrap: python " + sys.version.split()[0] + ", " + ", ".join(f"{n} {v(n)}" for n in names))
def where(mod):
    spec = iu.find_spec(mod)
    return "absent" if spec is None else ("STAND-IN" if "standins" in (spec.origin or "") else spec.origin)
print("bootstrap: flash_attn " + where("flash_attn") + ", flash_attn_interface (FA3) "
      + where("flash_attn_interface") + ", decord " + where("decord") + ", dashscope "
      + where("dashscope"))
PY
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "bootstrap: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  else
    echo "bootstrap: no nvidia-smi"
  fi
  echo "bootstrap: $("$bin/ffmpeg" -hide_banner -version | head -1 | cut -d' ' -f1-3), LIVEAVATAR_DIR=$LIVEAVATAR_DIR"
}
(return 0 2>/dev/null) || echo "bootstrap: run it with 'source', or the exports are lost" >&2
_avf_bootstrap
eval "unset -f _avf_bootstrap; unset _avf_rc; return $? 2>/dev/null || true"
