"""What a Live Avatar job produces from its inputs: clips, frames, seconds and picture size.

These are Live Avatar's own rules, re-derived from its source (Alibaba-Quark/LiveAvatar @ 9c2c38d)
and written here once (their numbers are in `inference.liveavatar_facts`), so that planning, both
Live Avatar engines, the CPU engine, verification and QC agree on what a job makes:

- Clips come from the wav2vec frame count of the 16 kHz speech, not from its length in seconds:
  T = (samples - 400) // 320 + 1 frames at 50 fps (wav2vec2's convolution stack), interpolated
  to int(T / 50 * 30) frames at 30 fps, then clips = int(frames / (48 * 30 / 25)) + 1
  (`audio_encoder.py` `get_audio_embed_bucket_fps`); `--num_clip` caps it.
- A job of n clips makes n·48 − 3 frames at 25 fps (the first clip drops 3 frames), and the
  muxer (`ffmpeg -shortest`) cuts the result to the shorter of video and speech: a capped job
  (a preview of long speech) lasts (n·48 − 3)/25 s, an uncapped one can end up to 0.164 s before
  the speech does at some lengths (preprocessing keeps 0.2 s of silence after the last word, so
  what is cut is silence).
- The picture size comes from the portrait's aspect ratio: the largest scale whose size, padded
  up to multiples of 64, fits in the size's pixel area (`get_size_less_than_area`). A 512×512
  crop gives 512×512 at 704*384 and 720*400, 448×448 at 688*368, 256×256 at 384*256.
"""

from __future__ import annotations

import math
from pathlib import Path

from inference.liveavatar_facts import (
    AUDIO_FEATURE_FPS,
    FIRST_CLIP_DROPPED_FRAMES,
    FPS,
    FRAMES_PER_CLIP,
    LATENT_FRAMES_PER_BLOCK,
    MOTION_FRAMES,
    SAMPLE_RATE,
    SIZE_DIVISOR,
    VAE_TEMPORAL_STRIDE,
    WAV2VEC_FIELD_SAMPLES,
    WAV2VEC_FPS,
    WAV2VEC_STRIDE_SAMPLES,
)


def wav2vec_frames(samples: int) -> int:
    """Feature frames wav2vec2 makes from `samples` at 16 kHz (0 for under 25 ms)."""
    return max(0, (samples - WAV2VEC_FIELD_SAMPLES) // WAV2VEC_STRIDE_SAMPLES + 1)


def speech_clips(samples: int, infer_frames: int = FRAMES_PER_CLIP) -> int:
    """Clips Live Avatar plans for the whole speech (before `--num_clip`)."""
    features = int(wav2vec_frames(samples) / float(WAV2VEC_FPS) * AUDIO_FEATURE_FPS)
    scale = AUDIO_FEATURE_FPS / FPS
    return int(features / (infer_frames * scale)) + 1


def planned_clips(samples: int, cap: int | None, infer_frames: int = FRAMES_PER_CLIP) -> int:
    """Clips a job generates: the speech's clips, capped by the preset's num_clip."""
    clips = speech_clips(samples, infer_frames)
    return min(clips, cap) if cap is not None else clips


def video_frames(clips: int, infer_frames: int = FRAMES_PER_CLIP) -> int:
    return clips * infer_frames - FIRST_CLIP_DROPPED_FRAMES


def video_seconds(samples: int, clips: int, infer_frames: int = FRAMES_PER_CLIP) -> float:
    """How long the muxed video lasts: the shorter of the speech and the generated frames."""
    return min(samples / SAMPLE_RATE, video_frames(clips, infer_frames) / FPS)


def blocks_per_clip(infer_frames: int = FRAMES_PER_CLIP) -> int:
    """Causal blocks per clip; each prints one tqdm bar over the sampling steps (4 at 48 frames)."""
    def latent(frames: int) -> int:  # frames → latent frames, rounded up
        return -(-frames // VAE_TEMPORAL_STRIDE)

    latent_frames = latent(infer_frames + MOTION_FRAMES) - latent(MOTION_FRAMES)
    return max(1, latent_frames // LATENT_FRAMES_PER_BLOCK)


def samples_for(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def parse_size(size: str) -> tuple[int, int] | None:
    """ "704*384" → (704, 384); None when it is not WIDTH*HEIGHT."""
    parts = str(size).replace(" ", "").split("*")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def output_size(image_width: int, image_height: int, size: str) -> tuple[int, int]:
    """(width, height) of the video Live Avatar makes from an image of that size at `size`."""
    parsed = parse_size(size)
    if parsed is None:
        raise ValueError(f"size must be WIDTH*HEIGHT, got {size!r}")
    area = parsed[0] * parsed[1]
    height, width = image_height, image_width
    if height * width <= area:
        min_scale, max_scale = 0.1, 1.0
    else:
        # The scale at which padding to the divisor could first fit, and the one without padding.
        d = SIZE_DIVISOR - 1
        b, a, c = d * (height + width), height * width, d**2 - area
        min_scale = (-b + math.sqrt(b**2 - 2 * a * c)) / (2 * a)
        max_scale = math.sqrt(area / (height * width))
    for i in range(100):  # the largest of 100 scales whose padded size fits
        scale = max_scale - (max_scale - min_scale) * i / 100
        new_h, new_w = int(height * scale), int(width * scale)
        padded_h = new_h + (SIZE_DIVISOR - new_h % SIZE_DIVISOR) % SIZE_DIVISOR
        padded_w = new_w + (SIZE_DIVISOR - new_w % SIZE_DIVISOR) % SIZE_DIVISOR
        if padded_h * padded_w <= area:
            return padded_w, padded_h
    # Live Avatar's fallback: the aspect ratio at the area, floored to the divisor.
    ratio = width / height
    target_w = int((area * ratio) ** 0.5 // SIZE_DIVISOR * SIZE_DIVISOR)
    target_h = int((area / ratio) ** 0.5 // SIZE_DIVISOR * SIZE_DIVISOR)
    if target_w >= width or target_h >= height:
        target_w, target_h = width // SIZE_DIVISOR * SIZE_DIVISOR, height // SIZE_DIVISOR * SIZE_DIVISOR
    return target_w, target_h


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file, from its header; None when it cannot be read."""
    try:
        from PIL import Image  # here: Pillow is slow to import and only this function needs it

        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 - any unreadable image simply has no known size
        return None
