"""Live Avatar's facts, each written once with where it comes from.

Validation, the engine's checks, the command line, the presets, the output rules, verification
and the GPU planner all read these names; none of them restates a number. Sources:
- "source": Live Avatar's code (Alibaba-Quark/LiveAvatar @ 9c2c38d), as DESIGN.md "The real
  generator: facts the code must respect" summarises it;
- "published": its README and paper (arXiv:2512.04677 v1), as quoted in DESIGN.md;
- "measured": avatarflow's GPU acceptance run on one H200, 2026-12-01
  (benchmarks/gpu/results/h200-2026-12-01/), or the machine named beside the value.
This module holds values only; what breaks when a value is not respected is said where it is
checked (`inference.validation`).
"""

from __future__ import annotations

# --- the program ------------------------------------------------------------------------------
# source: the only entry point avatarflow drives; always launched through torchrun, even on one GPU.
ENTRY_SCRIPT = "minimal_inference/s2v_streaming_interact.py"
TASK = "s2v-14B"  # source: --task of the streaming script
TRAINING_CONFIG = "liveavatar/configs/s2v_causal_sft.yaml"  # source: --training_config (checkout-relative)
# source: the online-decode switch as named by the argparse of public copies of the checkout. Some
# versions of the script do not have it: check it against the checkout you deploy
# (`grep -n online_decode minimal_inference/s2v_streaming_interact.py`) on every update.
ONLINE_DECODE_FLAG = "--enable_online_decode"
# source: a "+" in --audio switches on a multi-speaker mode (the path is split on it).
MULTI_SPEAKER_MARK = "+"

# --- sampling -----------------------------------------------------------------------------------
SOLVER = "euler"  # source: unipc and dpm++ pass argparse and then raise
# source: the DMD LoRA's fixed 4-step schedule; more raise on one GPU, other values deadlock the
# 5-GPU pipeline (one rank per step).
SAMPLE_STEPS = 4
TIMESTEPS = (1000, 857.7, 602.2, 8.9)  # source: flow matching, shift 3; one model evaluation per step
# source: argparse accepts these, and the distilled sampler ignores them (name → why).
IGNORED_ARGUMENTS = {
    "sample_shift": "the 4-step DMD schedule is fixed (flow matching, shift 3)",
    "sample_guide_scale": "the distilled 4-step sampler does not use guidance",
}

# --- frames, clips and audio ---------------------------------------------------------------------
FRAMES_PER_CLIP = 48  # source: --infer_frames, the trained value
# source: the VAE packs 4 frames into one latent frame; the causal blocks hold 3 latent frames
# each; the motion window is 73 frames (19 latent frames).
VAE_TEMPORAL_STRIDE = 4
LATENT_FRAMES_PER_BLOCK = 3
MOTION_FRAMES = 73
# source: --infer_frames must be a multiple of 12 (whole causal blocks of latent frames).
FRAME_MULTIPLE = VAE_TEMPORAL_STRIDE * LATENT_FRAMES_PER_BLOCK
ARGPARSE_DEFAULT_FRAMES = 80  # source: --infer_frames' default, which leaves blank frames
FIRST_CLIP_DROPPED_FRAMES = 3  # source: a job of n clips makes n·48 − 3 frames
FPS = 25  # source: the muxed video's frame rate
SAMPLE_RATE = 16_000  # source: wav2vec2 reads 16 kHz speech
# source: wav2vec2's feature encoder has a receptive field of 400 samples and a stride of 320
# (50 frames per second at 16 kHz); AudioEncoder.video_rate interpolates them to 30 per second
# (`audio_encoder.py` `get_audio_embed_bucket_fps`).
WAV2VEC_FIELD_SAMPLES = 400
WAV2VEC_STRIDE_SAMPLES = 320
WAV2VEC_FPS = 50
AUDIO_FEATURE_FPS = 30

# --- picture size -------------------------------------------------------------------------------
# source: --size is a maximum pixel area; the image's aspect ratio picks the output, padded to
# multiples of 64 (`get_size_less_than_area`).
SIZE_DIVISOR = 64
VALID_SIZES = ("720*400", "704*384", "688*368", "384*256")  # source: the sizes the model supports
# source: larger areas overflow a fixed-size cache: "The expanded size of the tensor (2800) must
# match ..." on one GPU, "(3000)" in the pipeline.
MAX_SIZE = "720*400"
MAX_AREA = 720 * 400  # MAX_SIZE's area

# --- topology -----------------------------------------------------------------------------------
SINGLE_GPU = 1  # source: one GPU, offload on
PIPELINE_GPUS = 5  # source: --num_gpus_dit 4 --enable_vae_parallel
PIPELINE_DIT_GPUS = 4  # source: each runs one denoising step; the fifth decodes
SUPPORTED_GPU_COUNTS = (SINGLE_GPU, PIPELINE_GPUS)  # source: 2–4 GPUs are not supported
SINGLE_GPU_MIN_GB = 80  # published: "needs a single 80 GB GPU"
# The rule above in words, for every refusal of a GPU count (gangs, the engine, validation).
TOPOLOGY_RULE = (f"Live Avatar runs on exactly 1 GPU (≥ {SINGLE_GPU_MIN_GB} GB, offload on) or exactly "
                 f"{PIPELINE_GPUS} ({PIPELINE_DIT_GPUS} run one denoising step each, 1 decodes); "
                 "2–4 GPUs are not supported")
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)  # source: --fp8 needs Ada, Hopper or later

# --- environment --------------------------------------------------------------------------------
# measured on an H200 (benchmarks/gpu/results/h200-2026-12-01): on Python 3.12 / torch 2.11
# torch.compile fails at the first DiT forward (UnboundLocalError in attention.py flash_attention);
# with TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1 that function compiles alone, but a whole job then
# fails in inductor after ~88 s of compiling (GuardOnDataDependentSymNode at causal_model_s2v.py
# `repeat_interleave(int(frame_seqlen))`). No setting made compiling work there; Live Avatar
# documents Python 3.10.
COMPILE_BROKEN_FROM_PYTHON = (3, 12)
COMPILE_WORKAROUND_ENV = "TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS"

# --- weights, as Live Avatar's loaders open them --------------------------------------------------
# source: the files inside the Wan2.2-S2V-14B folder, in the order the loaders open them (T5,
# tokenizer, VAE, DiT, wav2vec2).
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER_DIR = "google/umt5-xxl"
VAE_CHECKPOINT = "Wan2.1_VAE.pth"
DIT_CONFIG = "config.json"
DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SINGLE_FILE = "diffusion_pytorch_model.safetensors"
WAV2VEC_DIR = "wav2vec2-large-xlsr-53-english"

# --- memory (GB = 10⁹ bytes, the unit of the published figures) ----------------------------------
DIT_BF16_GB = 34.0  # published: DiT ≈ 16–17 B parameters × 2 bytes
DIT_FP8_GB = 17.0  # published: with --fp8 (1 byte per parameter)
T5_GB = 11.0  # published: the umT5-XXL text encoder each pipeline rank loads for itself
CONDITION_CACHE_GB = 2.5  # published: the reference/condition cache beside the KV cache
# published: one KV cache = 40 layers × 2 (K, V) × 12·N tokens × 40 heads × 128 × 2 bytes (bf16),
# N = (H/16)(W/16) latent tokens per frame: ≈ 10.4 GB at 704×384.
KV_LAYERS = 40
KV_HEADS = 40
KV_HEAD_DIM = 128
KV_BYTES = 2
KV_LATENT_FRAMES = 12  # the "12·N": tokens per cache = 12 × N
LATENT_PATCH_PX = 16  # the "/16" of N: VAE ÷8 spatially, patch 2×2
KV_REFERENCE_SIZE = "704*384"  # the size of the published KV figure
CACHES_ONE_GPU = 4  # published: one GPU runs all 4 denoising steps and keeps a cache for each
CACHES_PIPELINE_RANK = 1  # published: each DiT rank runs one step
PUBLISHED_ONE_GPU_BF16_GB = 80.0  # published: one GPU, bf16, offload on, ≈ 80 GB
PUBLISHED_PIPELINE_RANK_FP8_GB = 45.0  # published: with fp8 a pipeline rank needs ≈ 45 GB
# measured: the DMD LoRA (rank 128 on every q, k, v, o, ffn.0, ffn.2 of the DiT, audio injector
# included): 896 tensors, 1.35 GB in bf16, as built from Live Avatar's own classes (benchmarks/gpu).
LORA_GB = 1.35
# measured: an fp8 preview peaked at 37.97 GB while loading — the bf16 DiT (34), the LoRA (1.35)
# and the CUDA context (0.6) leave 2.0 GB for the fp8 conversion's workspace and the allocator's
# cached blocks. Fitted to that one run.
FP8_CONVERSION_GB = 2.0
# measured by a third party, not verified here (deployment write-ups of Live Avatar on
# 5 × RTX 4090, 2026): FSDP loads ≈ 21.48 GB per GPU and needs ≈ 4.17 GB more to unshard the
# parameters for a forward pass, 25.65 GB against ≈ 22.15 GB usable. Used as the unshard peak.
FSDP_UNSHARD_GB = 4.17

# --- speed --------------------------------------------------------------------------------------
# published: "20 FPS end-to-end on 5 × H800 with 4-step sampling" (README, arXiv:2512.04677 v1; a
# later version reports 45 FPS with further optimisation, not used here).
PUBLISHED_PIPELINE_FPS = 20.0
PUBLISHED_PIPELINE_SOURCE = ("Live Avatar README / arXiv:2512.04677: 20 FPS end-to-end on 5×H800, "
                             "4 steps")

# --- output -------------------------------------------------------------------------------------
# measured: ffmpeg's -shortest (Live Avatar's muxer) lets the AAC stream run past the video by
# 0.25 s with ffmpeg 5.1 (Debian 12), not at all with 7.0. Audio that long is the muxer, not a fault.
SHORTEST_OVERSHOOT_S = 0.35
