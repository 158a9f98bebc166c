"""Orchestration overhead of the batch flow: wall time beyond the work itself, per asset.

    .venv/bin/python benchmarks/orchestration.py [--sizes 50 200]

Runs batches of N assets (one real portrait, a 1.5 s real speech clip, a different prompt per
asset) through the real batch flow on a local Prefect server with the `instant-replay` engine,
which replays one generated video. With one CPU worker, the CPU stages run one at a time, so
(wall time − time spent inside the stage functions) / N is what Prefect, the database and the
task chaining cost per asset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
CPU_STAGES = {"preprocess", "join", "qc", "transcode"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200])
    args = parser.parse_args()
    print(f"machine: {describe()}")
    root = Path(tempfile.mkdtemp(prefix="avatarflow-orch-"))
    clip = root / "speech.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(MEDIA / "audio/whisper_jfk.flac"), "-t", "1.5", str(clip)],
                   check=True, timeout=60)
    os.environ.update({
        "AVATARFLOW_DATA_ROOT": str(root / "var"), "AVATARFLOW_ENGINE": "instant", "AVATARFLOW_CPU_WORKERS": "1",
        "AVATARFLOW_INPUT_ROOTS": json.dumps([str(MEDIA), str(root)]), "AVATARFLOW_REVIEW_SAMPLE_RATE": "0",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
    })
    from prefect.testing.utilities import prefect_test_harness

    from db import stage as pipeline  # WORK_SECONDS: time inside the stage functions
    from flows.batch import batch_flow

    with prefect_test_harness(server_startup_timeout=180):
        # Warm-up: the one real generation that every later request replays, and imports.
        manifests = {}
        for n in [1, *args.sizes]:
            manifest = root / f"batch{n}.jsonl"
            manifest.write_text("".join(json.dumps({
                "image": str(MEDIA / "image/skimage_astronaut.png"), "audio": str(clip),
                "template": "default", "vars": {"subject": f"presenter {n}-{i}"}}) + "\n" for i in range(n)))
            manifests[n] = manifest
        batch_flow(manifest=str(manifests[1]))
        for n in args.sizes:
            pipeline.WORK_SECONDS.clear()
            started = time.perf_counter()
            state = batch_flow(manifest=str(manifests[n]), return_state=True)
            wall = time.perf_counter() - started
            # The CPU stages share one CPU slot, so they run one at a time: the wall time can be no
            # shorter than their sum. Generation (a file copy here) and the tiny plan/route
            # stages overlap with them.
            cpu_work = sum(v for k, v in pipeline.WORK_SECONDS.items() if k in CPU_STAGES)
            stages = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(pipeline.WORK_SECONDS.items()))
            print(f"{n:4d} assets: wall {wall:7.1f} s = {wall / n:.2f} s/asset; CPU-stage work "
                  f"{cpu_work / n:.2f} s/asset (all stages: {stages}); orchestration overhead "
                  f"{(wall - cpu_work) / n:.2f} s per asset; {state.message}", flush=True)


if __name__ == "__main__":
    main()
