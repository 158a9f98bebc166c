"""Build a RANDOM-weight Live Avatar checkpoint with the real layout, for the GPU acceptance run.

No real weights are available to the acceptance machine, so this writes, at run time, every file
that Live Avatar's loaders open - same folder layout, file names, tensor names, shapes and dtypes -
filled with random values:

    <out>/Wan2.2-S2V-14B/
        config.json                                    DiT config (diffusers' config machinery)
        diffusion_pytorch_model-0000K-of-0000N.safetensors DiT shards (diffusers' naming, sharding)
        diffusion_pytorch_model.safetensors.index.json written last: marks the DiT complete
        models_t5_umt5-xxl-enc-bf16.pth                umt5-xxl encoder state dict (torch.save)
        Wan2.1_VAE.pth                                 Wan 2.1 VAE state dict (torch.save)
        google/umt5-xxl/                               tokenizer folder (AutoTokenizer), offline
        wav2vec2-large-xlsr-53-english/                Wav2Vec2Processor + Wav2Vec2ForCTC folder
    <out>/liveavatar.safetensors                       the DMD LoRA (peft key names)
    <out>/build_manifest.json                          files, bytes, tensors, seconds, versions

Where the shapes come from. Nothing is a hand-copied shape list: the DiT is Live Avatar's own
CausalWanModel_S2V (liveavatar/models/wan/causal_model_s2v.py) built on the meta device from the
`transformer` settings of liveavatar/models/wan/wan_2_2/configs/wan_s2v_14B_modified.py, mapped onto
the class's __init__ signature with inspect (settings the signature lacks are reported and dropped);
config.json is the model's own diffusers `to_json_string()`. The T5 is `umt5_xxl(encoder_only=True,
dtype=config.t5_dtype, device='meta')` from wan_2_2/modules/t5.py, exactly as its T5EncoderModel
calls it. The VAE is whatever `_video_vae` builds (the module the pipeline imports: vae_streaming
when inference_utils.STREAMING_VAE, else vae2_1), with its torch.load/load_state_dict intercepted.
The LoRA names/shapes are what `peft.get_peft_model` produces on the meta DiT with the settings of
liveavatar/configs/s2v_causal_sft.yaml (read with Live Avatar's own parse_args_for_training_config).
File names come from the same config (t5_checkpoint, vae_checkpoint, t5_tokenizer, wav2vec).
The ONLY hand-written architecture is the wav2vec2 config below (Live Avatar names only the folder):
it restates the published architecture of jonatasgrosman/wav2vec2-large-xlsr-53-english; the
model itself is transformers' Wav2Vec2ForCTC with its own initialisation, saved by save_pretrained.
The tokenizer is a byte-fallback BPE trained offline (tokenizers library) on the Live Avatar
checkout's text, saved as a PreTrainedTokenizerFast: ids stay far below the umt5 vocabulary
(256384), pad=0, eos=1, unk=2, and it appends </s> like T5.

Random values (seeded per tensor from --seed and the tensor name, so a rebuild of one part gives the
same numbers): weights of Linear/Conv/Embedding layers ~ N(0, 0.02); biases 0; norm weights 1;
free parameters (the DiT's `modulation`, the audio encoder's layer `weights`, `padding_tokens`)
keep the value the class's constructor gave them (randn/sqrt(dim), 0.01, 0), because e.g. the
audio layer weights are divided by their own SiLU-sum and random ones would blow that up. LoRA A
and B are both N(0, 0.02) so the merged LoRA changes the weights. Generation runs on the GPU when
there is one. This keeps the numbers finite through the 40 DiT blocks.

Writing: the DiT is streamed tensor by tensor into its shards (host RAM stays at a few tensors;
the .pth files need their whole state dict in RAM, ~11.4 GB for the T5); every file is written
under a temporary name and renamed when complete; the DiT index (what diffusers opens first) is
written after every shard. A re-run skips parts whose files match the manifest (sizes and a
fingerprint of the tensor list); --only NAME rebuilds one part. Disk space is checked up front.

    python3 benchmarks/gpu/build_checkpoint.py --liveavatar .gpu/liveavatar --out /tmp/ckpt
    python3 benchmarks/gpu/build_checkpoint.py --liveavatar PATH --out PATH --dry-run
    python3 benchmarks/gpu/build_checkpoint.py ... --only lora        # rebuild one part

--debug-layers N (a TEST AID, not for the acceptance run) builds the DiT and the T5 with N blocks
(the DiT's config.json records it, so diffusers' from_pretrained loads it; Live Avatar's T5 loader
does not, it always builds 24) and the matching LoRA.

Live Avatar's source is imported from --liveavatar at run time and never copied here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEME = "avatarflow-random-ckpt-v1"  # bump when the value scheme or layout logic changes
PARTS = ("tokenizer", "wav2vec", "vae", "lora", "t5", "dit")
STD = 0.02

# --- the one hand-written architecture: wav2vec2 (Live Avatar only names the folder) ----------
# Published config of jonatasgrosman/wav2vec2-large-xlsr-53-english (fine-tuned from
# facebook/wav2vec2-large-xlsr-53): the architecture fields, plus its dropout/masking settings
# (inactive at inference).
WAV2VEC2_CONFIG = {
    "architectures": ["Wav2Vec2ForCTC"],
    "model_type": "wav2vec2",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "do_stable_layer_norm": True,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "num_feat_extract_layers": 7,
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "vocab_size": 33,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "ctc_loss_reduction": "mean",
    "ctc_zero_infinity": True,
    "initializer_range": 0.02,
    "activation_dropout": 0.05,
    "attention_dropout": 0.1,
    "hidden_dropout": 0.05,
    "feat_proj_dropout": 0.05,
    "final_dropout": 0.0,
    "layerdrop": 0.05,
    "mask_time_prob": 0.05,
    "apply_spec_augment": True,
}
# Its CTC vocabulary: 33 symbols (pad/bos/eos/unk, word delimiter, apostrophe, hyphen, A-Z).
WAV2VEC2_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "'", "-"] + [
    chr(c) for c in range(ord("A"), ord("Z") + 1)
]
WAV2VEC2_FEATURE_EXTRACTOR = {
    "feature_size": 1,
    "sampling_rate": 16000,
    "padding_value": 0.0,
    "do_normalize": True,
    "return_attention_mask": True,
}


def log(msg: str) -> None:
    print(msg, flush=True)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return str(n)


# ------------------------------------------------------------------------------------------------
# Importing Live Avatar
# ------------------------------------------------------------------------------------------------


class LiveAvatar:
    """Live Avatar's modules, imported from a checkout given on the command line."""

    def __init__(self, checkout: Path):
        self.root = checkout.resolve()
        if not (self.root / "liveavatar" / "models" / "wan" / "causal_model_s2v.py").is_file():
            sys.exit(
                f"error: {self.root} is not a Live Avatar checkout "
                "(no liveavatar/models/wan/causal_model_s2v.py)"
            )
        sys.path.insert(0, str(self.root))
        # Modules Live Avatar imports but this path never uses (decord, dashscope, flash_attn):
        # the stand-ins go LAST on sys.path, so real installs win.
        standins = str(HERE / "standins")
        if standins not in sys.path:
            sys.path.append(standins)
        import importlib

        try:
            self.s2v = importlib.import_module("liveavatar.models.wan.causal_model_s2v")
            self.t5 = importlib.import_module("liveavatar.models.wan.wan_2_2.modules.t5")
        except (AssertionError, RuntimeError) as exc:
            if "cuda" in str(exc).lower() or "CUDA" in repr(exc):
                sys.exit(
                    f"error: importing Live Avatar needs CUDA ({exc}): its t5.py calls "
                    "torch.cuda.current_device() at import time and CausalWanModel_S2V moves "
                    "its rope table to 'cuda' in __init__. Run this on the GPU host."
                )
            raise
        self.configs = importlib.import_module("liveavatar.models.wan.wan_2_2.configs")
        self.config = self.configs.WAN_CONFIGS["s2v-14B"]
        inference_utils = importlib.import_module("liveavatar.models.wan.inference_utils")
        self.streaming_vae = bool(getattr(inference_utils, "STREAMING_VAE", False))
        self.vae = importlib.import_module(
            "liveavatar.models.wan.wan_2_2.modules."
            + ("vae_streaming" if self.streaming_vae else "vae2_1")
        )
        self.vae_class = getattr(self.vae, "WanVAE" if self.streaming_vae else "Wan2_1_VAE")
        self.args_config = importlib.import_module("liveavatar.utils.args_config")

    def commit(self) -> str | None:
        marker = self.root / "LIVEAVATAR_COMMIT.txt"
        if marker.is_file():
            return marker.read_text().strip() or None
        try:
            out = subprocess.run(
                ["git", "-C", str(self.root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            return out.stdout.strip() or None if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    def training_settings(self, path: Path | None) -> dict:
        path = path or self.root / "liveavatar" / "configs" / "s2v_causal_sft.yaml"
        return self.args_config.parse_args_for_training_config(str(path))


# ------------------------------------------------------------------------------------------------
# Meta models and tensor specs
# ------------------------------------------------------------------------------------------------

_STANDARD_WEIGHT_OWNERS = None


def _standard_owner(module) -> bool:
    global _STANDARD_WEIGHT_OWNERS
    from torch import nn

    if _STANDARD_WEIGHT_OWNERS is None:
        _STANDARD_WEIGHT_OWNERS = (
            nn.Linear,
            nn.Conv1d,
            nn.Conv2d,
            nn.Conv3d,
            nn.ConvTranspose1d,
            nn.ConvTranspose2d,
            nn.ConvTranspose3d,
            nn.Embedding,
        )
    return isinstance(module, _STANDARD_WEIGHT_OWNERS)


def _is_norm(module) -> bool:
    return "norm" in type(module).__name__.lower()


@contextlib.contextmanager
def meta_init_keeping_free_values(kept: dict):
    """Like accelerate.init_empty_weights (parameters go to 'meta' as they are registered, so
    constructors still run on CPU - CausalWanModel_S2V moves a CPU rope table to CUDA in __init__,
    which a torch.device('meta') context would break), but remembers the constructor value of each
    small "free" parameter (not a Linear/Conv/Embedding/norm weight, not a bias) in `kept`."""
    import torch
    from torch import nn

    old = nn.Module.register_parameter

    def register(module, name, param):
        old(module, name, param)
        if param is None:
            return
        p = module._parameters[name]
        value = None
        free = not (
            name.endswith("bias")
            or _is_norm(module)
            or (_standard_owner(module) and name == "weight")
        )
        if free and p.device.type != "meta" and p.numel() <= (1 << 22) and p.is_floating_point():
            value = p.detach().to("cpu", copy=True)
        kwargs = dict(p.__dict__)
        kwargs["requires_grad"] = p.requires_grad
        module._parameters[name] = type(p)(p.to("meta"), **kwargs)
        if value is not None:
            kept[id(module._parameters[name])] = value

    nn.Module.register_parameter = register
    try:
        with torch.no_grad():
            yield kept
    finally:
        nn.Module.register_parameter = old


class Spec:
    """One tensor to write: name, shape, dtype, and how to fill it."""

    __slots__ = ("arg", "dtype", "kind", "name", "shape")

    def __init__(self, name, shape, dtype, kind, arg=None):
        self.name, self.shape, self.dtype, self.kind, self.arg = (
            name,
            tuple(shape),
            dtype,
            kind,
            arg,
        )

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize

    def key(self):
        return [
            self.name,
            list(self.shape),
            str(self.dtype).replace("torch.", ""),
            self.kind,
            None if self.kind == "value" else self.arg,
        ]


def specs_from_model(model, dtype=None, kept: dict | None = None, prefix: str = "") -> tuple:
    """Tensor specs for model.state_dict() (all parameters; these models have no buffers in
    their state dicts), with the value scheme described in the module docstring."""
    kept = kept or {}
    specs, free = [], []
    sd_names = set(model.state_dict().keys())
    seen = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if full not in sd_names or full in seen:
                continue
            seen.add(full)
            if pname.endswith("bias"):
                kind, arg = "zeros", None
            elif _is_norm(module):
                kind, arg = ("zeros", None) if pname in ("beta",) else ("ones", None)
            elif _standard_owner(module) and pname == "weight":
                kind, arg = "normal", STD
            elif (
                id(p) in kept
                and bool(kept[id(p)].isfinite().all())
                and float(kept[id(p)].abs().max()) < 1e4
            ):
                kind, arg = "value", kept[id(p)]
                free.append(full)
            else:
                kind, arg = "normal", STD
                free.append(full + " (no constructor value: N(0, 0.02))")
            specs.append(Spec(prefix + full, p.shape, dtype or p.dtype, kind, arg))
    missing = sd_names - seen
    if missing:
        raise RuntimeError(f"state_dict entries that are not parameters: {sorted(missing)[:5]}")
    return specs, free


def dit_init_kwargs(la: LiveAvatar, debug_layers: int | None) -> tuple[dict, list]:
    cls = la.s2v.CausalWanModel_S2V
    accepted = [
        n
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    kwargs, dropped = {}, []
    for key, value in la.config.transformer.items():
        if key in accepted:
            kwargs[key] = list(value) if isinstance(value, tuple) else value
        elif key != "__name__":
            dropped.append(key)
    if debug_layers:
        kwargs["num_layers"] = debug_layers
        kept_layers = [i for i in kwargs.get("audio_inject_layers", []) if i < debug_layers]
        kwargs["audio_inject_layers"] = kept_layers or [0]
    return kwargs, dropped


def build_dit_meta(la: LiveAvatar, debug_layers: int | None):
    kwargs, dropped = dit_init_kwargs(la, debug_layers)
    kept: dict = {}
    with meta_init_keeping_free_values(kept):
        model = la.s2v.CausalWanModel_S2V(**kwargs)
    return model, kept, kwargs, dropped


def build_t5_meta(la: LiveAvatar, debug_layers: int | None):
    extra = {"encoder_layers": debug_layers} if debug_layers else {}
    return la.t5.umt5_xxl(
        encoder_only=True, return_tokenizer=False, dtype=la.config.t5_dtype, device="meta", **extra
    )


class _Capture(dict):
    pass


def build_vae_meta(la: LiveAvatar, path: str):
    """Run Live Avatar's own `_video_vae` (its cfg, its meta-device construction) with torch.load
    answering a sentinel and load_state_dict skipping it: returns the meta model it builds."""
    import torch
    from torch import nn

    z_dim = inspect.signature(la.vae_class.__init__).parameters["z_dim"].default
    old_load, old_lsd = torch.load, nn.Module.load_state_dict

    def fake_load(*args, **kwargs):
        return _Capture()

    def lsd(self, state_dict, *args, **kwargs):
        if isinstance(state_dict, _Capture):
            return None
        return old_lsd(self, state_dict, *args, **kwargs)

    torch.load, nn.Module.load_state_dict = fake_load, lsd
    try:
        model = la.vae._video_vae(pretrained_path=path, z_dim=z_dim)
    finally:
        torch.load, nn.Module.load_state_dict = old_load, old_lsd
    return model


def lora_meta(dit_model, settings: dict):
    """Apply peft to the meta DiT as Live Avatar's add_lora_to_model does; return (peft model,
    {name: param}) for its LoRA parameters."""
    import accelerate
    from peft import LoraConfig, get_peft_model

    init = settings.get("init_lora_weights", "kaiming")
    config = LoraConfig(
        r=int(settings["lora_rank"]),
        lora_alpha=settings["lora_alpha"],
        init_lora_weights=True if init == "kaiming" else init,
        target_modules=settings["lora_target_modules"].split(","),
    )
    kwargs = {}
    if "low_cpu_mem_usage" in inspect.signature(get_peft_model).parameters:
        kwargs["low_cpu_mem_usage"] = True
    with accelerate.init_empty_weights():
        peft_model = get_peft_model(dit_model, config, **kwargs)
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    return peft_model, lora


def check_lora_against_peft(peft_model, file_shapes: dict) -> dict:
    """What Live Avatar's add_lora_to_model would do with a file of these keys/shapes: add the
    'base_model.model.' prefix if the first key lacks it, load_state_dict(strict=False), count."""
    import torch

    names = list(file_shapes)
    if names and not names[0].startswith("base_model.model."):
        file_shapes = {f"base_model.model.{k}": v for k, v in file_shapes.items()}
    params = dict(peft_model.named_parameters())
    lora_names = {n for n in params if "lora_" in n}
    mismatched = [k for k, s in file_shapes.items() if k in params and tuple(params[k].shape) != s]
    state = {
        k: torch.empty(s, device="meta", dtype=params[k].dtype if k in params else None)
        for k, s in file_shapes.items()
        if k not in mismatched
    }
    missing, unexpected = peft_model.load_state_dict(state, strict=False, assign=False)
    loaded = len(params) - len(missing)
    return {
        "file_tensors": len(file_shapes),
        "expected_lora_tensors": len(lora_names),
        "matched": len(lora_names & set(file_shapes)),
        "loaded_as_live_avatar_counts": loaded,
        "unexpected": len(unexpected),
        "shape_mismatches": len(mismatched),
        "lora_not_in_file": len(lora_names - set(file_shapes)),
    }


# ------------------------------------------------------------------------------------------------
# Random values and writers
# ------------------------------------------------------------------------------------------------


def _seed(global_seed: int, name: str) -> int:
    return (zlib.crc32(name.encode()) ^ (global_seed * 0x9E3779B1)) & 0x7FFFFFFFFFFFFFFF


def make_tensor(spec: Spec, device, seed: int):
    import torch

    if spec.kind == "zeros":
        return torch.zeros(spec.shape, dtype=spec.dtype, device=device)
    if spec.kind == "ones":
        return torch.ones(spec.shape, dtype=spec.dtype, device=device)
    if spec.kind == "value":
        return spec.arg.to(device=device, dtype=spec.dtype).reshape(spec.shape)
    gen = torch.Generator(device=device).manual_seed(_seed(seed, spec.name))
    t = torch.empty(spec.shape, dtype=spec.dtype, device=device)
    return t.normal_(0.0, float(spec.arg), generator=gen)


def _produce(specs, device, seed, q: queue.Queue, stop: threading.Event):
    """Background producer: random tensors, moved to host memory, in order."""
    try:
        for spec in specs:
            if stop.is_set():
                return
            t = make_tensor(spec, device, seed)
            if not bool(t.isfinite().all()):
                raise RuntimeError(f"non-finite values generated for {spec.name}")
            q.put(t.to("cpu").contiguous())
        q.put(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
        q.put(exc)


def tensor_stream(specs, device, seed, depth=3):
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(specs, device, seed, q, stop), daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.05)


_ST_DTYPES = {
    "bfloat16": "BF16",
    "float16": "F16",
    "float32": "F32",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


def write_safetensors_streaming(path: Path, specs, device, seed, metadata=None) -> int:
    """Write a .safetensors file tensor by tensor (standard layout: u64 header length, JSON header,
    padded with spaces to 8 bytes, then the tensors back to back in header order)."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for s in specs:
        header[s.name] = {
            "dtype": _ST_DTYPES[str(s.dtype).replace("torch.", "")],
            "shape": list(s.shape),
            "data_offsets": [offset, offset + s.nbytes],
        }
        offset += s.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for spec, t in zip(specs, tensor_stream(specs, device, seed)):
            data = t.reshape(-1).view(__import__("torch").uint8).numpy()
            if data.nbytes != spec.nbytes:
                raise RuntimeError(f"{spec.name}: {data.nbytes} bytes, expected {spec.nbytes}")
            f.write(memoryview(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def write_pth(path: Path, specs, device, seed) -> int:
    """torch.save of the state dict (what Live Avatar's loaders torch.load); whole dict in RAM."""
    import torch

    state = {}
    for spec, t in zip(specs, tensor_stream(specs, device, seed)):
        state[spec.name] = t
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    del state
    os.replace(tmp, path)
    return path.stat().st_size


def write_text_atomic(path: Path, text: str) -> int:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path.stat().st_size


def replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def dir_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------
# Parts
# ------------------------------------------------------------------------------------------------


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Builder:
    def __init__(self, args):
        self.args = args
        self.la = LiveAvatar(Path(args.liveavatar))
        import torch

        self.torch = torch
        if args.device:
            self.device = torch.device(args.device)
        else:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            sys.exit("error: --device cuda but no CUDA device")
        self.out = Path(args.out).resolve()
        self.ckpt = self.out / "Wan2.2-S2V-14B"
        self.seed = args.seed
        self.debug_layers = args.debug_layers
        cfg = self.la.config
        self.paths = {
            "t5": self.ckpt / cfg.t5_checkpoint,
            "vae": self.ckpt / cfg.vae_checkpoint,
            "tokenizer": self.ckpt / cfg.t5_tokenizer,
            "wav2vec": self.ckpt / cfg.wav2vec,
            "lora": self.out / "liveavatar.safetensors",
        }
        self._dit = None
        self.plan: dict[str, dict] = {}

    # -- meta builds (cheap; done for every run, also --dry-run) ---------------------------------
    def dit(self):
        if self._dit is None:
            t0 = time.time()
            model, kept, kwargs, dropped = build_dit_meta(self.la, self.debug_layers)
            specs, free = specs_from_model(model, dtype=self.la.config.param_dtype, kept=kept)
            config_text = model.to_json_string()
            self._dit = {
                "model": model,
                "specs": specs,
                "free": free,
                "kwargs": kwargs,
                "dropped": dropped,
                "config": config_text,
                "seconds": time.time() - t0,
            }
        return self._dit

    def plan_parts(self):
        """Everything each part will write: files, tensor specs, bytes - from the meta models."""
        import diffusers
        from diffusers.models.modeling_utils import ModelMixin
        from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME
        from huggingface_hub import split_torch_state_dict_into_shards

        torch = self.torch
        dit = self.dit()
        max_shard = (
            self.args.max_shard_size
            or inspect.signature(ModelMixin.save_pretrained).parameters["max_shard_size"].default
        )
        meta_sd = {s.name: torch.empty(s.shape, dtype=s.dtype, device="meta") for s in dit["specs"]}
        pattern = SAFETENSORS_WEIGHTS_NAME.replace(".safetensors", "{suffix}.safetensors")
        split = split_torch_state_dict_into_shards(
            meta_sd, filename_pattern=pattern, max_shard_size=max_shard
        )
        by_name = {s.name: s for s in dit["specs"]}
        shards = {
            fname: [by_name[n] for n in names] for fname, names in split.filename_to_tensors.items()
        }
        index = {"metadata": dict(split.metadata), "weight_map": dict(split.tensor_to_filename)}
        self.plan["dit"] = {
            "shards": shards,
            "index": index,
            "index_name": SAFE_WEIGHTS_INDEX_NAME,
            "sharded": split.is_sharded,
            "max_shard_size": max_shard,
            "diffusers": diffusers.__version__,
            "bytes": sum(s.nbytes for s in dit["specs"]),
            "tensors": len(dit["specs"]),
            "fp": fingerprint(
                [
                    SCHEME,
                    self.seed,
                    dit["config"],
                    [s.key() for s in dit["specs"]],
                    sorted((k, [x.name for x in v]) for k, v in shards.items()),
                ]
            ),
        }

        t5 = build_t5_meta(self.la, self.debug_layers)
        t5_specs, t5_free = specs_from_model(t5)
        self.plan["t5"] = {
            "specs": t5_specs,
            "free": t5_free,
            "bytes": sum(s.nbytes for s in t5_specs),
            "tensors": len(t5_specs),
            "fp": fingerprint([SCHEME, self.seed, [s.key() for s in t5_specs]]),
        }

        vae = build_vae_meta(self.la, str(self.paths["vae"]))
        vae_specs, vae_free = specs_from_model(vae)
        self.plan["vae"] = {
            "specs": vae_specs,
            "free": vae_free,
            "bytes": sum(s.nbytes for s in vae_specs),
            "tensors": len(vae_specs),
            "module": self.la.vae.__name__,
            "fp": fingerprint([SCHEME, self.seed, [s.key() for s in vae_specs]]),
        }

        settings = self.la.training_settings(
            Path(self.args.training_config) if self.args.training_config else None
        )
        lora_settings = {
            k: settings[k]
            for k in ("lora_rank", "lora_alpha", "lora_target_modules", "init_lora_weights")
            if k in settings
        }
        peft_model, lora = lora_meta(dit["model"], lora_settings)
        lora_specs = [
            Spec(n, p.shape, self.la.config.param_dtype, "normal", STD) for n, p in lora.items()
        ]
        check = check_lora_against_peft(peft_model, {s.name: s.shape for s in lora_specs})
        self.plan["lora"] = {
            "specs": lora_specs,
            "settings": lora_settings,
            "peft_check": check,
            "peft_model": peft_model,
            "bytes": sum(s.nbytes for s in lora_specs),
            "tensors": len(lora_specs),
            "fp": fingerprint([SCHEME, self.seed, lora_settings, [s.key() for s in lora_specs]]),
        }
        import transformers

        corpus = self.tokenizer_corpus()
        self.plan["tokenizer"] = {
            "corpus_bytes": sum(len(c) for c in corpus),
            "vocab_size": self.args.tokenizer_vocab,
            "bytes": None,
            "tensors": 0,
            "fp": fingerprint(
                [
                    SCHEME,
                    self.args.tokenizer_vocab,
                    transformers.__version__,
                    hashlib.sha256("\n".join(corpus).encode()).hexdigest(),
                ]
            ),
        }
        w2v_params = self.wav2vec_param_count()
        self.plan["wav2vec"] = {
            "bytes": w2v_params * 4,
            "tensors": None,
            "params": w2v_params,
            "fp": fingerprint(
                [SCHEME, self.seed, WAV2VEC2_CONFIG, WAV2VEC2_VOCAB, transformers.__version__]
            ),
        }

    def wav2vec_param_count(self) -> int:
        import accelerate
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

        with accelerate.init_empty_weights():
            model = Wav2Vec2ForCTC(Wav2Vec2Config(**WAV2VEC2_CONFIG))
        return sum(t.numel() for t in model.state_dict().values())

    def tokenizer_corpus(self) -> list[str]:
        texts = [str(self.la.config.sample_neg_prompt)]
        for path in sorted(self.la.root.rglob("*")):
            if path.suffix in (".py", ".md", ".yaml", ".txt") and path.is_file():
                try:
                    texts.append(path.read_text(encoding="utf-8", errors="ignore"))
                except OSError:
                    continue
        return texts

    # -- manifest ---------------------------------------------------------------------------------
    def manifest_path(self) -> Path:
        return self.out / "build_manifest.json"

    def load_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path().read_text())
        except (OSError, ValueError):
            return {}

    def up_to_date(self, manifest: dict, part: str) -> bool:
        entry = manifest.get("parts", {}).get(part)
        if not entry or entry.get("fingerprint") != self.plan[part]["fp"]:
            return False
        for f in entry.get("files", []):
            p = self.out / f["path"]
            if not p.is_file() or p.stat().st_size != f["bytes"]:
                return False
        return bool(entry.get("files"))

    def save_manifest(self, manifest: dict) -> None:
        import diffusers
        import huggingface_hub
        import safetensors
        import tokenizers
        import transformers

        try:
            import peft

            peft_version = peft.__version__
        except ImportError:
            peft_version = None
        torch = self.torch
        manifest.update(
            {
                "scheme": SCHEME,
                "seed": self.seed,
                "debug_layers": self.debug_layers,
                "liveavatar_checkout": str(self.la.root),
                "liveavatar_commit": self.la.commit(),
                "versions": {
                    "python": sys.version.split()[0],
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "diffusers": diffusers.__version__,
                    "peft": peft_version,
                    "safetensors": safetensors.__version__,
                    "tokenizers": tokenizers.__version__,
                    "huggingface_hub": huggingface_hub.__version__,
                },
                "device": (
                    torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
                ),
            }
        )
        parts = manifest.get("parts", {})
        manifest["complete"] = all(p in parts for p in PARTS)
        manifest["total_bytes"] = sum(e["bytes"] for e in parts.values())
        manifest["total_tensors"] = sum(e.get("tensors") or 0 for e in parts.values())
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.manifest_path(), json.dumps(manifest, indent=2) + "\n")

    # -- building ---------------------------------------------------------------------------------
    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.out))

    def report_file(self, part, path: Path, nbytes, tensors, seconds, files):
        rate = f"{nbytes / seconds / 1e6:7.0f} MB/s" if seconds > 0 else ""
        log(
            f"  [{part}] {self.rel(path):70s} {human(nbytes):>10s} {tensors!s:>5s} tensors "
            f"{seconds:7.1f} s {rate}"
        )
        files.append(
            {
                "path": self.rel(path),
                "bytes": nbytes,
                "tensors": tensors,
                "seconds": round(seconds, 2),
            }
        )

    def build_dit(self, files):
        plan, dit = self.plan["dit"], self.dit()
        self.ckpt.mkdir(parents=True, exist_ok=True)
        index_path = self.ckpt / plan["index_name"]
        if index_path.exists():
            index_path.unlink()  # from here on the DiT does not look complete
        wanted = set(plan["shards"])
        for old in self.ckpt.glob("diffusion_pytorch_model*.safetensors"):
            if old.name not in wanted:
                old.unlink()
        t0 = time.time()
        config_path = self.ckpt / "config.json"
        self.report_file(
            "dit",
            config_path,
            write_text_atomic(config_path, dit["config"]),
            0,
            time.time() - t0,
            files,
        )
        for fname, specs in plan["shards"].items():
            t0 = time.time()
            path = self.ckpt / fname
            n = write_safetensors_streaming(path, specs, self.device, self.seed, {"format": "pt"})
            self.report_file("dit", path, n, len(specs), time.time() - t0, files)
        t0 = time.time()
        if plan["sharded"]:
            n = write_text_atomic(
                index_path, json.dumps(plan["index"], indent=2, sort_keys=True) + "\n"
            )
            self.report_file("dit", index_path, n, 0, time.time() - t0, files)
        self.verify_safetensors("dit", [self.ckpt / f for f in plan["shards"]], dit["specs"])

    def build_pth(self, part, files):
        plan, path = self.plan[part], self.paths[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        n = write_pth(path, plan["specs"], self.device, self.seed)
        self.report_file(part, path, n, len(plan["specs"]), time.time() - t0, files)
        self.verify_pth(part, path, plan["specs"])

    def build_lora(self, files):
        plan, path = self.plan["lora"], self.paths["lora"]
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        n = write_safetensors_streaming(
            path, plan["specs"], self.device, self.seed, {"format": "pt"}
        )
        self.report_file("lora", path, n, len(plan["specs"]), time.time() - t0, files)
        self.verify_safetensors("lora", [path], plan["specs"])
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        check = check_lora_against_peft(plan["peft_model"], shapes)
        self.report_lora_check(check, "file")
        if (
            check["matched"] != check["expected_lora_tensors"]
            or check["unexpected"]
            or check["shape_mismatches"]
        ):
            raise RuntimeError(f"LoRA file does not match peft's names: {check}")

    def report_lora_check(self, check, what):
        log(
            f"  [lora] {what} vs peft on the meta DiT: {check['matched']}/"
            f"{check['expected_lora_tensors']} LoRA tensors match, {check['unexpected']} unexpected, "
            f"{check['shape_mismatches']} shape mismatches; Live Avatar's count would print "
            f"'{check['loaded_as_live_avatar_counts']} parameters are loaded ... "
            f"{check['unexpected']} parameters are unexpected'"
        )

    def build_tokenizer(self, files):
        from tokenizers import (
            Regex,
            Tokenizer,
            decoders,
            models,
            normalizers,
            pre_tokenizers,
            processors,
            trainers,
        )
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        t0 = time.time()
        final = self.paths["tokenizer"]
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        specials = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")]
        )
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=self.args.tokenizer_vocab,
            min_frequency=2,
            special_tokens=specials,
            show_progress=False,
        )
        tok.train_from_iterator(self.tokenizer_corpus(), trainer=trainer)
        # byte-fallback pieces <0x00>..<0xFF> right after the specials (as SentencePiece does),
        # so no character is ever <unk>
        data = json.loads(tok.to_str())
        old_vocab = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
        pieces = specials + [f"<0x{b:02X}>" for b in range(256)]
        pieces += [p for p, _ in old_vocab if p not in set(pieces)]
        data["model"]["vocab"] = {p: i for i, p in enumerate(pieces)}
        data["model"]["byte_fallback"] = True
        for added in data.get("added_tokens", []):
            added["id"] = data["model"]["vocab"][added["content"]]
        tok = Tokenizer.from_str(json.dumps(data))
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("\u2581", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="<pad>",
            eos_token="</s>",
            unk_token="<unk>",
            model_max_length=int(self.la.config.text_len),
        )
        fast.save_pretrained(str(tmp))
        # transformers 5 names its class TokenizersBackend; PreTrainedTokenizerFast is the name
        # both 4.x and 5.x AutoTokenizer resolve to the same tokenizers-backed class
        tc_path = tmp / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        if tc.get("tokenizer_class") == "TokenizersBackend":
            tc["tokenizer_class"] = "PreTrainedTokenizerFast"
            tc_path.write_text(json.dumps(tc, indent=2) + "\n")
        # the loader's own check: AutoTokenizer, pad 0 / eos 1, ids inside the T5 vocabulary
        check = AutoTokenizer.from_pretrained(str(tmp))
        ids = check(
            [str(self.la.config.sample_neg_prompt), "A person talks. \u00e9\u4f60"],
            padding="max_length",
            truncation=True,
            max_length=int(self.la.config.text_len),
            return_tensors="pt",
        ).input_ids
        vocab_limit = self.plan["t5"]["specs"][0].shape[0] if self.plan["t5"]["specs"] else 256384
        if check.pad_token_id != 0 or check.eos_token_id != 1 or int(ids.max()) >= vocab_limit:
            raise RuntimeError(
                f"tokenizer check failed: pad {check.pad_token_id}, "
                f"eos {check.eos_token_id}, max id {int(ids.max())}"
            )
        replace_dir(tmp, final)
        seconds = time.time() - t0
        for p in dir_files(final):
            self.report_file("tokenizer", p, p.stat().st_size, 0, seconds, files)
            seconds = 0.0
        log(
            f"  [tokenizer] vocab {len(pieces)} (BPE, byte fallback), max id {int(ids.max())} "
            f"< {vocab_limit}, pad 0, eos 1"
        )

    def build_wav2vec(self, files):
        torch = self.torch
        from transformers import (
            Wav2Vec2Config,
            Wav2Vec2CTCTokenizer,
            Wav2Vec2FeatureExtractor,
            Wav2Vec2ForCTC,
            Wav2Vec2Processor,
        )

        t0 = time.time()
        final = self.paths["wav2vec"]
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(WAV2VEC2_VOCAB)}))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(tmp / "vocab.json"),
            unk_token="<unk>",
            pad_token="<pad>",
            bos_token="<s>",
            eos_token="</s>",
            word_delimiter_token="|",
        )
        extractor = Wav2Vec2FeatureExtractor(**WAV2VEC2_FEATURE_EXTRACTOR)
        Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(
            str(tmp)
        )
        extractor.save_pretrained(str(tmp))  # preprocessor_config.json, as the published folder
        torch.manual_seed(self.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(self.seed)
        with torch.device(self.device):
            model = Wav2Vec2ForCTC(Wav2Vec2Config(**WAV2VEC2_CONFIG))
        model.eval()
        model.save_pretrained(str(tmp), safe_serialization=True)
        n_tensors = len(model.state_dict())
        del model
        for p in dir_files(tmp):
            os.chmod(p, 0o644)  # save_pretrained leaves model.safetensors at 0600
        replace_dir(tmp, final)
        seconds = time.time() - t0
        for p in dir_files(final):
            self.report_file(
                "wav2vec",
                p,
                p.stat().st_size,
                n_tensors if p.suffix == ".safetensors" else 0,
                seconds,
                files,
            )
            seconds = 0.0

    # -- verification (headers / mmap only) --------------------------------------------------------
    def verify_safetensors(self, part, paths, specs):
        from safetensors import safe_open

        want = {s.name: (s.shape, str(s.dtype).replace("torch.", "")) for s in specs}
        got = {}
        for p in paths:
            with safe_open(str(p), framework="pt") as f:
                for k in f.keys():  # noqa: SIM118 - safe_open is not iterable
                    sl = f.get_slice(k)
                    got[k] = (tuple(sl.get_shape()), sl.get_dtype())
        dmap = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
        got = {k: (s, dmap.get(d, d)) for k, (s, d) in got.items()}
        bad = [k for k in want if got.get(k) != want[k]]
        extra = [k for k in got if k not in want]
        if bad or extra:
            raise RuntimeError(
                f"[{part}] verify failed: {len(bad)} wrong/missing "
                f"(e.g. {bad[:3]}), {len(extra)} unexpected"
            )
        log(f"  [{part}] verified: {len(got)} tensors, names/shapes/dtypes = the meta model's")

    def verify_pth(self, part, path, specs):
        torch = self.torch
        sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        want = {s.name: (s.shape, s.dtype) for s in specs}
        got = {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
        bad = [k for k in want if got.get(k) != want[k]]
        extra = [k for k in got if k not in want]
        del sd
        if bad or extra:
            raise RuntimeError(f"[{part}] verify failed: {bad[:3]} {extra[:3]}")
        log(f"  [{part}] verified: {len(got)} tensors, names/shapes/dtypes = the meta model's")

    # -- driver ---------------------------------------------------------------------------------
    def summary(self):
        dit = self.dit()
        log(f"Live Avatar: {self.la.root} (commit {self.la.commit() or 'unknown'})")
        log(f"DiT: CausalWanModel_S2V({', '.join(f'{k}={v}' for k, v in dit['kwargs'].items())})")
        if dit["dropped"]:
            log(f"     config keys not in CausalWanModel_S2V.__init__ (dropped): {dit['dropped']}")
        log(
            f"     free parameters kept at their constructor values: "
            f"{sorted({n.split('.')[-1] for n in dit['free']})} ({len(dit['free'])} tensors)"
        )
        for part in ("t5", "vae"):
            if self.plan[part]["free"]:
                log(f"     {part}: free parameters: {self.plan[part]['free'][:5]}")
        log(f"VAE module: {self.plan['vae']['module']}")
        log(f"LoRA settings: {self.plan['lora']['settings']}")
        self.report_lora_check(self.plan["lora"]["peft_check"], "planned names")
        log("")
        log(f"{'part':10s} {'files':>5s} {'tensors':>8s} {'bytes':>12s}")
        total = 0
        rows = [
            (
                "dit",
                len(self.plan["dit"]["shards"]) + 2,
                self.plan["dit"]["tensors"],
                self.plan["dit"]["bytes"],
            ),
            ("t5", 1, self.plan["t5"]["tensors"], self.plan["t5"]["bytes"]),
            ("vae", 1, self.plan["vae"]["tensors"], self.plan["vae"]["bytes"]),
            ("lora", 1, self.plan["lora"]["tensors"], self.plan["lora"]["bytes"]),
            ("wav2vec", "dir", "", self.plan["wav2vec"]["bytes"]),
            ("tokenizer", "dir", "", 0),
        ]
        for name, nfiles, ntensors, nbytes in rows:
            total += nbytes or 0
            log(f"{name:10s} {nfiles!s:>5s} {ntensors!s:>8s} {human(nbytes or 0):>12s}")
        log(
            f"{'total':10s} {'':5s} {'':8s} {human(total):>12s}  (tensor payload; files add "
            "headers of a few MB)"
        )
        for fname, specs in self.plan["dit"]["shards"].items():
            log(
                f"  Wan2.2-S2V-14B/{fname}: {len(specs)} tensors, "
                f"{human(sum(s.nbytes for s in specs))}"
            )
        log(
            f"  max_shard_size {self.plan['dit']['max_shard_size']} (diffusers "
            f"{self.plan['dit']['diffusers']} save_pretrained default)"
        )
        return total

    def run(self) -> int:
        t_all = time.time()
        self.plan_parts()
        log(f"planned in {time.time() - t_all:.1f} s (meta models)")
        self.summary()
        if self.args.dry_run:
            log("\n--dry-run: nothing written")
            return 0
        manifest = self.load_manifest()
        if manifest and manifest.get("debug_layers") != self.debug_layers:
            manifest = {}
        chosen = self.args.only or list(PARTS)
        todo = [p for p in chosen if self.args.only or not self.up_to_date(manifest, p)]
        for p in chosen:
            if p not in todo:
                log(f"[{p}] up to date (manifest), skipped")
        need = sum((self.plan[p]["bytes"] or 0) for p in todo)
        self.out.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.out).free
        reclaim = sum(
            (self.out / f["path"]).stat().st_size
            for p in todo
            for f in manifest.get("parts", {}).get(p, {}).get("files", [])
            if (self.out / f["path"]).is_file()
        )
        log(
            f"\nto build: {todo or 'nothing'}; needs {human(need)}, free {human(free)} on "
            f"{self.out} (+{human(reclaim)} replaced)"
        )
        if need > free + reclaim - 512e6 and not self.args.force:
            log(
                f"error: not enough disk space (need {human(need)} + 0.5 GB margin); pick another "
                "--out or pass --force"
            )
            return 2
        manifest.setdefault("parts", {})
        # drop stale temporaries from a killed build
        for stale in list(self.out.rglob("*.tmp-*")):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        for part in todo:
            manifest["parts"].pop(part, None)
            self.save_manifest(manifest)
            t0 = time.time()
            files: list = []
            log(f"[{part}] building on {self.device} ...")
            if part == "dit":
                self.build_dit(files)
            elif part in ("t5", "vae"):
                self.build_pth(part, files)
            elif part == "lora":
                self.build_lora(files)
            elif part == "tokenizer":
                self.build_tokenizer(files)
            elif part == "wav2vec":
                self.build_wav2vec(files)
            seconds = time.time() - t0
            entry = {
                "fingerprint": self.plan[part]["fp"],
                "files": files,
                "bytes": sum(f["bytes"] for f in files),
                "tensors": sum(f["tensors"] or 0 for f in files),
                "seconds": round(seconds, 1),
            }
            if part == "lora":
                entry["peft_check"] = self.plan["lora"]["peft_check"]
                entry["settings"] = self.plan["lora"]["settings"]
            if part == "dit":
                entry["init_kwargs"] = self.dit()["kwargs"]
                entry["dropped_config_keys"] = self.dit()["dropped"]
            manifest["parts"][part] = entry
            self.save_manifest(manifest)
            log(f"[{part}] done: {human(entry['bytes'])} in {seconds:.1f} s")
        self.save_manifest(manifest)
        total = sum(e["bytes"] for e in manifest["parts"].values())
        log(
            f"\ncheckpoint: {self.out} ({human(total)} in all parts; built {todo} in "
            f"{time.time() - t_all:.1f} s); manifest {self.manifest_path()}"
        )
        log(f"  --ckpt_dir {self.ckpt}  --lora_path_dmd {self.paths['lora']}")
        return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--liveavatar", required=True, help="Live Avatar checkout (imported, not copied)"
    )
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="build the meta models, print files/tensor counts/bytes, write nothing",
    )
    ap.add_argument(
        "--only", action="append", choices=PARTS, help="(re)build only this part; repeatable"
    )
    ap.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="where random values are generated (default: cuda when available)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--debug-layers",
        type=int,
        default=None,
        help="TEST AID: N DiT/T5 blocks instead of the config's (not for the acceptance run)",
    )
    ap.add_argument(
        "--max-shard-size",
        default=None,
        help="DiT shard size (default: diffusers' save_pretrained default)",
    )
    ap.add_argument(
        "--training-config",
        default=None,
        help="LoRA settings yaml (default: <liveavatar>/liveavatar/configs/s2v_causal_sft.yaml)",
    )
    ap.add_argument(
        "--tokenizer-vocab",
        type=int,
        default=8000,
        help="BPE vocabulary size of the offline tokenizer",
    )
    ap.add_argument("--force", action="store_true", help="skip the free-disk-space check")
    args = ap.parse_args(argv)
    return Builder(args).run()


if __name__ == "__main__":
    sys.exit(main())
