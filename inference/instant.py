"""`instant-replay`: an engine for orchestration benchmarks and load tests, not for production.

It makes the first video for a given (portrait crop, speech) pair with the CPU engine and then
replays that verified file for every later request with the same pair, so a benchmark measures
the pipeline around the engine rather than the engine.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

from avatarflow.storage import atomic_path, sha256_file
from inference.cpu_engine import MouthWarpCpuEngine
from inference.engine import (
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
    ProgressCallback,
)
from inference.verify import verify_output

NAME = "instant-replay"


class InstantEngine:
    name = NAME

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._cpu = MouthWarpCpuEngine()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._cpu.close()

    def generate(self, request: GenerationRequest, gang: GpuGang,
                 progress: ProgressCallback | None = None) -> GenerationResult:
        started = time.monotonic()
        key = hashlib.sha256(f"{sha256_file(request.image)}:{sha256_file(request.audio)}".encode()).hexdigest()
        cache = (self.cache_dir or request.output.parent / "_instant") / f"{key}.mp4"
        with self._lock:  # one real generation per pair, even with many threads asking at once
            if not cache.exists():
                seeded = GenerationRequest(**{**request.__dict__, "output": cache,
                                              "log_path": request.log_path})
                first = self._cpu.generate(seeded, gang, progress)
                if not first.ok:
                    return GenerationResult(engine=NAME, config={"replay_of": None}, failure=first.failure,
                                            metrics=first.metrics)
        with atomic_path(request.output) as tmp:
            shutil.copyfile(cache, tmp)
        checked = verify_output(request.output, request.audio_seconds)
        metrics = GenerationMetrics(total_seconds=time.monotonic() - started, exit_status=0)
        if not hasattr(checked, "width"):
            request.output.unlink(missing_ok=True)
            return GenerationResult(engine=NAME, config={"replay_of": str(cache)}, failure=checked, metrics=metrics)
        return GenerationResult(engine=NAME, config={"replay_of": str(cache)}, output=request.output, metrics=metrics)
