"""Placeholder weights for the FAKE Live Avatar (tests only): the files its loaders open.

The fake ``minimal_inference/s2v_streaming_interact.py`` checks a Wan2.2-S2V-14B checkpoint the
way the real loaders of LiveAvatar@9c2c38d open it, but only for existence, so placeholder files
(a short text, never real weights) are enough. Use from a test (``tests/`` is on sys.path)::

    from fakes.liveavatar.fake_layout import make_checkpoint, make_lora
    ckpt = make_checkpoint(tmp_path / "Wan2.2-S2V-14B")
    lora = make_lora(tmp_path / "liveavatar.safetensors")

Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

T5 = "models_t5_umt5-xxl-enc-bf16.pth"
VAE = "Wan2.1_VAE.pth"
TOKENIZER = "google/umt5-xxl"
WAV2VEC = "wav2vec2-large-xlsr-53-english"
INDEX = "diffusion_pytorch_model.safetensors.index.json"
PLACEHOLDER = b"FAKE placeholder: not a weight file\n"  # not empty: engines may refuse empty files


# The folders' files as the Hub repos ship them (the fake itself needs tokenizer_config.json and
# config.json; engines may check the others).
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "spiece.model", "special_tokens_map.json")
WAV2VEC_FILES = ("config.json", "preprocessor_config.json", "vocab.json", "special_tokens_map.json", "model.safetensors")


def shard_name(i: int, count: int) -> str:
    return f"diffusion_pytorch_model-{i:05d}-of-{count:05d}.safetensors"


def make_checkpoint(root: Path, *, shards: int = 4, skip: tuple[str, ...] = ()) -> Path:
    """Create the layout under `root`; `skip` names parts to leave out (T5, VAE, INDEX,
    "config.json", a shard name, TOKENIZER or WAV2VEC (the folder), or "<folder>/<file>") to
    provoke that loader's error."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = [shard_name(i, shards) for i in range(1, shards + 1)]

    def want(name: str) -> bool:
        return name not in skip

    for name in (T5, VAE, *names):
        if want(name):
            (root / name).write_bytes(PLACEHOLDER)
    if want("config.json"):
        (root / "config.json").write_text("{}")
    if want(INDEX):
        weight_map = {f"blocks.{i}.weight": name for i, name in enumerate(names)}
        (root / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    for folder, files in ((TOKENIZER, TOKENIZER_FILES), (WAV2VEC, WAV2VEC_FILES)):
        if want(folder):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for name in files:
                if want(f"{folder}/{name}"):
                    (root / folder / name).write_bytes(b"{}" if name.endswith(".json") else PLACEHOLDER)
    return root


def make_lora(path: Path) -> Path:
    """A placeholder LoRA file (the fake only checks that it exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER)
    return path
