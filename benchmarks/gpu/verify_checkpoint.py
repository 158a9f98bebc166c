"""Load a build_checkpoint.py checkpoint with Live Avatar's OWN loaders and check it (a test aid).

Parts (--parts, comma-separated; default all that fit the machine):
  tokenizer  HuggingfaceTokenizer (wan_2_2/modules/tokenizers.py) as T5EncoderModel builds it:
             padded to text_len, pad 0 / eos 1, ids inside the umt5 vocabulary
  wav2vec    AudioEncoder (causal_audio_encoder.py -> wan_2_2/modules/s2v/audio_encoder.py):
             extract_audio_feat(--audio, return_all_layers=True): [25, frames, 1024] with frames =
             int(wav2vec frames / 50 * 30), finite
  vae        the pipeline's VAE class (vae_streaming.WanVAE when STREAMING_VAE, else
             vae2_1.Wan2_1_VAE) and vae2_1.Wan2_1_VAE: encode + decode a small clip, finite
  dit        CausalWanModel_S2V.from_pretrained(<ckpt>, torch_dtype=bf16, device_map=device) -
             diffusers' own loader; all parameters finite. Full size needs ~33 GB of (GPU) memory;
             on a small machine build with --debug-layers and check that.
  lora       WanS2V.add_lora_to_model (causal_s2v_pipeline.py) with the built liveavatar.safetensors
             on that DiT (or on a meta DiT when `dit` is not checked): its printed count of loaded
             and unexpected parameters; merge_and_unload
  t5         T5EncoderModel (wan_2_2/modules/t5.py) on --device: encode a prompt, finite. Needs
             ~23 GB of host RAM (torch.load + model); --t5-mmap loads the same file memory-mapped
             into the meta model instead (Live Avatar's umt5_xxl, same keys, strict). A
             --debug-layers build is checked with umt5_xxl(encoder_layers=N).

    python3 benchmarks/gpu/verify_checkpoint.py --liveavatar .gpu/liveavatar --ckpt /tmp/ckpt \
        [--parts ...] [--device cuda] [--audio file.wav]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = ("tokenizer", "wav2vec", "vae", "dit", "lora", "t5")
PROMPT = (
    "A young woman with short dark hair talks to the camera in a bright studio, natural "
    "light, medium close-up, calm expression, subtle head movement."
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--liveavatar", required=True)
    ap.add_argument("--ckpt", required=True, help="the --out folder of build_checkpoint.py")
    ap.add_argument("--parts", default=",".join(ALL))
    ap.add_argument("--device", default=None)
    ap.add_argument("--audio", default=None, help="a speech file for the wav2vec check")
    ap.add_argument("--t5-mmap", action="store_true")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]

    sys.path.insert(0, str(Path(args.liveavatar).resolve()))
    sys.path.append(str(HERE / "standins"))
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.ckpt).resolve()
    ckpt = out / "Wan2.2-S2V-14B"
    manifest = json.loads((out / "build_manifest.json").read_text())
    debug_layers = manifest.get("debug_layers")
    from liveavatar.models.wan.wan_2_2.configs import WAN_CONFIGS

    cfg = WAN_CONFIGS["s2v-14B"]
    fails = []
    results = {}

    def ok(part, cond, msg):
        print(f"  {'ok  ' if cond else 'FAIL'} [{part}] {msg}", flush=True)
        if not cond:
            fails.append(f"{part}: {msg}")
        return cond

    def finite(t):
        return bool(torch.isfinite(t).all())

    dit_model = None
    for part in parts:
        t0 = time.time()
        print(f"[{part}]", flush=True)
        if part == "tokenizer":
            from liveavatar.models.wan.wan_2_2.modules.tokenizers import HuggingfaceTokenizer

            tok = HuggingfaceTokenizer(
                name=str(ckpt / cfg.t5_tokenizer), seq_len=cfg.text_len, clean="whitespace"
            )
            ids, mask = tok(
                [PROMPT, cfg.sample_neg_prompt], return_mask=True, add_special_tokens=True
            )
            lens = mask.gt(0).sum(dim=1).tolist()
            ok(
                part,
                tuple(ids.shape) == (2, cfg.text_len),
                f"ids {tuple(ids.shape)}, real tokens {lens}, vocab_size {tok.vocab_size}",
            )
            ok(part, int(ids.max()) < 256384, f"max id {int(ids.max())} < 256384")
            ok(
                part,
                all(
                    int(ids[i, n - 1]) == 1 and not bool(ids[i, n:].any())
                    for i, n in enumerate(lens)
                    if n < cfg.text_len
                ),
                "ends in eos 1, then pad 0",
            )
            results["tokenizer_real_tokens"] = lens
        elif part == "wav2vec":
            import librosa
            from liveavatar.models.wan.causal_audio_encoder import AudioEncoder

            audio = args.audio
            if not audio:
                print("  skip: no --audio")
                continue
            enc = AudioEncoder(model_id=str(ckpt / cfg.wav2vec))
            enc.model.to(device)
            samples = len(librosa.load(audio, sr=16000)[0])
            z = enc.extract_audio_feat(audio, return_all_layers=True)
            n = samples
            for k, s in zip(enc.model.config.conv_kernel, enc.model.config.conv_stride):
                n = (n - k) // s + 1
            frames = int(n / 50 * 30)
            ok(
                part,
                tuple(z.shape) == (25, frames, 1024) and finite(z),
                f"extract_audio_feat: {tuple(z.shape)} (expected (25, {frames}, 1024) for "
                f"{samples / 16000:.2f} s), finite, std {float(z.float().std()):.3f}",
            )
            results["wav2vec_shape"] = list(z.shape)
        elif part == "vae":
            from liveavatar.models.wan import inference_utils
            from liveavatar.models.wan.wan_2_2.modules import vae2_1, vae_streaming

            classes = [vae_streaming.WanVAE if inference_utils.STREAMING_VAE else vae2_1.Wan2_1_VAE]
            if classes[0] is not vae2_1.Wan2_1_VAE:
                classes.append(vae2_1.Wan2_1_VAE)
            g = torch.Generator().manual_seed(0)
            video = (torch.rand(3, 5, 64, 64, generator=g) * 2 - 1).to(device)
            for cls in classes:
                vae = cls(
                    vae_pth=str(ckpt / cfg.vae_checkpoint), device=device, dtype=torch.float32
                )
                with torch.no_grad():
                    z = vae.encode([video])[0]
                    x = vae.decode([z])[0]
                ok(
                    part,
                    tuple(z.shape) == (16, 2, 8, 8)
                    and finite(z)
                    and tuple(x.shape) == (3, 5, 64, 64)
                    and finite(x),
                    f"{cls.__module__.split('.')[-1]}.{cls.__name__}: latent {tuple(z.shape)} "
                    f"(std {float(z.std()):.3f}), decoded {tuple(x.shape)}, finite",
                )
                del vae
        elif part == "dit":
            from liveavatar.models.wan.causal_model_s2v import CausalWanModel_S2V

            dit_model = CausalWanModel_S2V.from_pretrained(
                str(ckpt), torch_dtype=cfg.param_dtype, device_map=str(device)
            )
            n = sum(p.numel() for p in dit_model.parameters())
            bad = [k for k, p in dit_model.named_parameters() if not finite(p)]
            dtypes = {str(p.dtype) for p in dit_model.parameters()}
            ok(
                part,
                not bad and dtypes == {str(cfg.param_dtype)},
                f"from_pretrained: {dit_model.num_layers} blocks, {n / 1e9:.3f} B parameters, "
                f"dtypes {dtypes}, non-finite {len(bad)}",
            )
            results["dit_params"] = n
            # the values are the file's (diffusers really loaded them, nothing left at init)
            from safetensors import safe_open

            index = ckpt / "diffusion_pytorch_model.safetensors.index.json"
            weight_map = (
                json.loads(index.read_text())["weight_map"]
                if index.is_file()
                else {
                    k: "diffusion_pytorch_model.safetensors"
                    for k, _ in dit_model.named_parameters()
                }
            )
            params = dict(dit_model.named_parameters())
            probe = [
                k
                for k in (
                    "blocks.0.self_attn.q.weight",
                    "blocks.0.modulation",
                    "casual_audio_encoder.weights",
                    "head.head.weight",
                )
                if k in params
            ]
            same = []
            for k in probe:
                with safe_open(str(ckpt / weight_map[k]), framework="pt") as f:
                    same.append(torch.equal(f.get_tensor(k).to(params[k].device), params[k].data))
            ok(
                part,
                all(same) and len(weight_map) == len(params),
                f"{len(weight_map)} tensors in the files = {len(params)} parameters; "
                f"{sum(same)}/{len(probe)} probed tensors equal to the file",
            )
        elif part == "lora":
            from liveavatar.models.wan import causal_s2v_pipeline
            from liveavatar.utils.args_config import parse_args_for_training_config

            settings = parse_args_for_training_config(
                str(Path(args.liveavatar) / "liveavatar" / "configs" / "s2v_causal_sft.yaml")
            )
            model = dit_model
            if model is None:
                import accelerate
                from liveavatar.models.wan.causal_model_s2v import CausalWanModel_S2V

                if (ckpt / "config.json").is_file():
                    config = CausalWanModel_S2V.load_config(str(ckpt))
                else:  # DiT not built (yet): the builder's own meta construction
                    sys.path.insert(0, str(HERE))
                    from build_checkpoint import LiveAvatar, dit_init_kwargs

                    config = dit_init_kwargs(LiveAvatar(Path(args.liveavatar)), debug_layers)[0]
                with accelerate.init_empty_weights():
                    model = CausalWanModel_S2V.from_config(config)
            shim = types.SimpleNamespace()
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                merged = causal_s2v_pipeline.WanS2V.add_lora_to_model(
                    shim,
                    model,
                    lora_rank=settings["lora_rank"],
                    lora_alpha=settings["lora_alpha"],
                    lora_target_modules=settings["lora_target_modules"],
                    init_lora_weights=settings["init_lora_weights"],
                    pretrained_lora_path=str(out / "liveavatar.safetensors"),
                    load_lora_weight_only=False,
                )
            printed = buf.getvalue().strip()
            print("  | " + printed.replace("\n", "\n  | "))
            m = re.search(
                r"(\d+) parameters are loaded .*?(\d+) parameters are unexpected", printed
            )
            from safetensors import safe_open

            with safe_open(str(out / "liveavatar.safetensors"), framework="pt") as f:
                n_file = len(list(f.keys()))
            ok(
                part,
                bool(m) and int(m.group(1)) == n_file and int(m.group(2)) == 0,
                f"add_lora_to_model: {m.group(1) if m else '?'} loaded of {n_file} in the file, "
                f"{m.group(2) if m else '?'} unexpected",
            )
            left = [n for n, _ in merged.named_parameters() if "lora_" in n]
            real = next(merged.parameters()).device.type != "meta"
            bad = [k for k, p in merged.named_parameters() if real and not finite(p)]
            ok(
                part,
                not left and not bad,
                f"merge_and_unload: {type(merged).__name__}, no lora "
                f"parameters left{', merged weights finite' if real else ' (meta model)'}",
            )
            dit_model = merged
        elif part == "t5":
            from liveavatar.models.wan.wan_2_2.modules import t5 as t5m

            path = ckpt / cfg.t5_checkpoint
            if debug_layers or args.t5_mmap:
                model = t5m.umt5_xxl(
                    encoder_only=True,
                    return_tokenizer=False,
                    dtype=cfg.t5_dtype,
                    device="meta",
                    **({"encoder_layers": debug_layers} if debug_layers else {}),
                )
                sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
                model.load_state_dict(sd, assign=True, strict=True)
                model = model.eval().requires_grad_(False).to(device)
                from liveavatar.models.wan.wan_2_2.modules.tokenizers import HuggingfaceTokenizer

                tok = HuggingfaceTokenizer(
                    name=str(ckpt / cfg.t5_tokenizer), seq_len=cfg.text_len, clean="whitespace"
                )
                ids, mask = tok([PROMPT], return_mask=True, add_special_tokens=True)
                with torch.no_grad():
                    ctx = model(ids.to(device), mask.to(device))
                n = int(mask.sum())
                ctx = [ctx[0, :n]]
                how = f"umt5_xxl({model.num_layers} blocks) + load_state_dict(strict, mmap)"
            else:
                enc = t5m.T5EncoderModel(
                    text_len=cfg.text_len,
                    dtype=cfg.t5_dtype,
                    device=torch.device("cpu"),
                    checkpoint_path=str(path),
                    tokenizer_path=str(ckpt / cfg.t5_tokenizer),
                )
                enc.model.to(device)
                with torch.no_grad():
                    ctx = enc([PROMPT], device)
                how = "T5EncoderModel (torch.load + load_state_dict)"
            ok(
                part,
                ctx[0].shape[-1] == 4096 and finite(ctx[0]),
                f"{how}: context {tuple(ctx[0].shape)}, finite, std {float(ctx[0].float().std()):.3f}",
            )
        else:
            print(f"  unknown part {part}")
            continue
        print(f"  ({time.time() - t0:.1f} s)", flush=True)
    print(json.dumps(results))
    print("verify:", "OK" if not fails else f"{len(fails)} FAILED: {fails}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
