"""One Live Avatar job: the settings it runs with, what it will make, and its output made safe.

Both engines (per job and warm) plan a job here and accept its file here, so they run and accept
exactly the same thing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.engine import Failure, GenerationRequest
from inference.liveavatar_config import LiveAvatarConfig
from inference.output_rules import (
    blocks_per_clip,
    image_size,
    output_size,
    parse_size,
    planned_clips,
    video_seconds,
)
from inference.presets import Preset
from inference.validation import JOB_SETTINGS, effective_settings
from inference.verify import VideoInfo, verify_output


@dataclass(frozen=True)
class JobSettings:
    """The preset's generation values after the request's overrides."""

    size: str
    num_clip: int | None
    online_decode: bool
    solver: str
    sample_steps: int
    infer_frames: int

    @property
    def bars_per_clip(self) -> int:
        return blocks_per_clip(self.infer_frames)


def job_settings(preset: Preset, overrides: Mapping[str, Any]) -> JobSettings:
    """The preset with the request's overrides applied, under the names validation checks them by."""
    values = effective_settings(preset, overrides)
    return JobSettings(**{name: values[name] for name in JOB_SETTINGS})


@dataclass(frozen=True)
class JobPlan:
    """What one job will run and make: settings, clips, the video's length and size, its time limit."""

    settings: JobSettings
    clips: int
    video_seconds: float  # shorter than the speech when num_clip caps the clips (previews)
    size: tuple[int, int] | None  # (width, height) from the portrait's aspect ratio; None: unknown
    timeout_s: float


def plan_job(request: GenerationRequest, preset: Preset, config: LiveAvatarConfig) -> JobPlan:
    settings = job_settings(preset, request.overrides)
    clips = planned_clips(request.samples, settings.num_clip, settings.infer_frames)
    seconds = video_seconds(request.samples, clips, settings.infer_frames)
    image = image_size(request.image)
    size = output_size(*image, settings.size) if image and parse_size(settings.size) else None
    return JobPlan(settings, clips, seconds, size, config.timeout_for(seconds))


def plan_record(plan: JobPlan) -> dict[str, Any]:
    """The plan as recorded on the attempt."""
    return {"settings": dataclasses.asdict(plan.settings), "num_clip": plan.clips,
            "video_seconds": round(plan.video_seconds, 3), "timeout_s": plan.timeout_s,
            "planned_size": list(plan.size) if plan.size else None}


# --- the output -------------------------------------------------------------------------------


def partial_output_path(output: Path) -> Path:
    """Where the engine writes before verification; never mistaken for a finished video."""
    return output.with_name(f".{output.stem}.partial{output.suffix or '.mp4'}")


def prepare_output(request: GenerationRequest) -> Path:
    """The partial path the engine writes, with any earlier attempt's leftover removed."""
    partial = partial_output_path(request.output)
    request.output.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)  # a previous attempt's leftovers must not pass as this one's
    return partial


def finalize_output(partial: Path, request: GenerationRequest, plan: JobPlan) -> VideoInfo | Failure:
    """Verify the engine's file against the plan; move it to `request.output` only when it is sound."""
    expected = ("the speech" if plan.video_seconds >= request.audio_seconds - 1e-6 else
                f"{plan.clips} clip(s) of {plan.settings.infer_frames} frames, capped by num_clip")
    checked = verify_output(partial, plan.video_seconds, expected=expected)
    if isinstance(checked, Failure):
        partial.unlink(missing_ok=True)
        return checked
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, request.output)
    try:
        fd = os.open(request.output.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return checked


def verified_record(info: VideoInfo, plan: JobPlan) -> dict[str, Any]:
    """What verification found, and whether the picture has the size Live Avatar's rule predicts."""
    size = [info.width, info.height]
    return {"size": size, "fps": round(info.fps, 3), "duration_s": round(info.duration_s, 3),
            "audio_duration_s": info.audio_duration_s, "frames": info.frames,
            "video_codec": info.video_codec, "audio_codec": info.audio_codec,
            "size_as_planned": plan.size is None or list(plan.size) == size}


def settle_output(partial: Path, request: GenerationRequest, plan: JobPlan, failure: Failure | None,
                  record: dict[str, Any]) -> Failure | None:
    """After the run: a failed job's partial file is removed; a finished one is verified and moved
    into place (its findings go on `record["verified"]`, as the CPU engine records them).
    Returns the job's failure, or None."""
    if failure is not None:
        partial.unlink(missing_ok=True)
        return failure
    checked = finalize_output(partial, request, plan)
    if isinstance(checked, Failure):
        return checked
    record["verified"] = verified_record(checked, plan)
    return None
