"""Live Avatar's progress: its tqdm bars on stderr, turned into clips done and step timings."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from inference.engine import Progress
from inference.liveavatar_facts import FRAMES_PER_CLIP, SAMPLE_STEPS
from inference.output_rules import blocks_per_clip
from inference.processes import split_segments

BARS_PER_CLIP = blocks_per_clip(FRAMES_PER_CLIP)  # 4: one bar per causal block

_BAR = re.compile(r"^\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)")
_RATE = re.compile(r"([\d.]+)\s*(s/it|it/s)\]")
# torchrun --tee's line header: "[default3]:" (role "default", local rank 3).
_RANK_HEADER = re.compile(r"\[[A-Za-z_]*(\d+)\]:")


class TqdmProgress:
    """Turns Live Avatar's denoising bars into clips done, and times them.

    Each clip runs `bars_per_clip` blocks (4 at 48 frames), each with one tqdm bar over the 4
    sampling steps. tqdm repaints a bar in place with \\r and ends it with \\n when it closes, so a
    bar is finished when it first shows n == total after showing less; repaints of the same state
    do not count twice. Bars with a description ("Loading checkpoint shards: 100%|...| 4/4") are
    not denoising bars and never match.

    In the 5-GPU pipeline every rank prints its own bars (the decoding rank races through its
    bars first). torchrun's --tee header ("[default3]:") says whose text follows; only the bars
    of `count_rank` are counted — the last denoising rank, whose bar closes when a block's last
    step is done. Text without a header belongs to the last header seen.
    """

    def __init__(self, clips_planned: int, *, bars_per_clip: int = BARS_PER_CLIP, steps_per_bar: int = SAMPLE_STEPS,
                 count_rank: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clips_planned = clips_planned
        self.bars_per_clip = bars_per_clip
        self.steps_per_bar = steps_per_bar
        self.count_rank = count_rank
        self.bars_done = 0
        self._clock = clock
        self._rank: int | None = None
        self._bar_open: dict[int | None, bool] = {}  # per rank: a bar is showing n < total
        self._rank_of_last_rate: int | None = None
        self.started = clock()
        self.first_step_at: float | None = None  # when the first denoising bar appeared
        self.clip_ends: list[float] = []
        self.last_bar_at: float | None = None
        self.step_rates: list[float] = []  # seconds per step, as tqdm printed it when a bar closed

    @property
    def clips_done(self) -> int:
        return min(self.bars_done // self.bars_per_clip, self.clips_planned)

    def feed(self, segment: str, ends_line: bool = True) -> Progress | None:
        """Read one stderr segment (ended by \\n when `ends_line`, else by \\r); a Progress per clip done."""
        pieces = _RANK_HEADER.split(segment)  # [text, rank, text, rank, text, ...]
        update = None
        for i in range(0, len(pieces), 2):
            if i:
                self._rank = int(pieces[i - 1])
            update = self._read(pieces[i]) or update
        return update

    def _read(self, text: str) -> Progress | None:
        if self.count_rank is not None and self._rank != self.count_rank:
            return None
        match = _BAR.match(text)
        if not match:
            return None
        n, total = int(match.group(2)), int(match.group(3))
        if total != self.steps_per_bar:
            return None
        now = self._clock()
        if self.first_step_at is None:
            self.first_step_at = now
        if n != total:
            self._bar_open[self._rank] = True
            return None
        # A bar is done when it reaches n == total after showing less. tqdm repaints the final
        # state (ended by \r, then again by \n on close), and torchrun's --tee turns every repaint into
        # a line of its own: only the first n == total after n < total counts.
        rate = _RATE.search(text)
        per_step = None
        if rate and float(rate.group(1)) > 0:
            value = float(rate.group(1))
            per_step = value if rate.group(2) == "s/it" else 1.0 / value
        if not self._bar_open.get(self._rank, False):
            if per_step is not None and self.step_rates and self._rank_of_last_rate == self._rank:
                self.step_rates[-1] = per_step  # tqdm's closing repaint has the bar's final rate
            return None
        self._bar_open[self._rank] = False
        self.bars_done += 1
        self.last_bar_at = now
        if per_step is not None:
            self.step_rates.append(per_step)
            self._rank_of_last_rate = self._rank
        if self.bars_done % self.bars_per_clip or self.bars_done // self.bars_per_clip > self.clips_planned:
            return None
        self.clip_ends.append(now)
        done, planned = self.clips_done, self.clips_planned
        return Progress(done, planned, f"clip {done}/{planned}")

    def timings(self) -> dict[str, float | None]:
        """first_step_seconds, seconds_per_step, seconds_per_clip, as GenerationMetrics names them."""
        first = self.first_step_at - self.started if self.first_step_at is not None else None
        per_step = sorted(self.step_rates)[len(self.step_rates) // 2] if self.step_rates else None
        return {"first_step_seconds": first, "seconds_per_step": per_step,
                "seconds_per_clip": seconds_per_clip(self.clip_ends, self.first_step_at)}

    def feed_text(self, text: str) -> list[Progress]:
        """Feed a whole captured stderr text (as a recorded log); the Progress updates in order."""
        segments, rest = split_segments(text)
        if rest:
            segments.append((rest, True))
        return [p for seg, ends in segments if (p := self.feed(seg, ends)) is not None]


def seconds_per_clip(clip_ends: Sequence[float], first_step_at: float | None) -> float | None:
    """The mean time between finished clips; with one clip, the time from the first step to it."""
    if len(clip_ends) > 1:
        return (clip_ends[-1] - clip_ends[0]) / (len(clip_ends) - 1)
    if clip_ends and first_step_at is not None:
        return clip_ends[0] - first_step_at
    return None
