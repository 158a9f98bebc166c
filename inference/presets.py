"""Generation presets from production practice, corrected to what Live Avatar accepts.

Every preset samples with the Euler solver in exactly 4 steps and 48 frames per clip: the DMD
LoRA was distilled for that schedule (see DESIGN.md, "The real generator").
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.liveavatar_facts import FRAMES_PER_CLIP, SAMPLE_STEPS, SOLVER


@dataclass(frozen=True)
class Preset:
    name: str
    size: str  # maximum pixel area "W*H"; the portrait's aspect ratio picks the output shape
    num_clip: int | None  # None: as many clips as the audio needs
    online_decode: bool
    description: str
    solver: str = SOLVER
    sample_steps: int = SAMPLE_STEPS
    infer_frames: int = FRAMES_PER_CLIP


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("preview", "384*256", 10, True, "fast low-resolution check, at most 10 clips (~19 s)"),
        Preset("standard", "688*368", None, False, "delivery quality, the whole audio"),
        Preset("long", "688*368", None, True, "delivery quality for audio of many minutes"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
