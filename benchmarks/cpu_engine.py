"""Benchmark the CPU engine: frames/s and real-time factor on a real portrait and 11 s of speech.

    .venv/bin/python benchmarks/cpu_engine.py [--repeat 2] [--media ../shared/media]
                                             [--image facerec_obama.jpg] [--audio whisper_jfk.flac]

The portrait is cropped and the speech prepared first (not timed), as the pipeline does before
generation. Then it times, over `--repeat` runs (the median is printed):
  - render only: every frame of the video rendered in memory, no encoding;
  - end to end: `MouthWarpCpuEngine.generate` (landmarks, rendering, H.264/AAC encoding through
    ffmpeg, verification), as a worker runs it.
The real-time factor is generation time over audio duration (below 1: faster than real time).
CPU seconds (this process plus its ffmpeg/ffprobe children) are printed too: on a shared machine
they vary far less than wall-clock time.
Not a test: it prints numbers and the machine they were measured on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # machine.py
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere

from machine import cpu_seconds, describe

from inference.cpu_engine import (
    FPS,
    MouthWarpAnimator,
    MouthWarpCpuEngine,
    face_geometry,
    mouth_openings,
)
from inference.engine import GenerationRequest, GpuGang
from tasks.audio import load_pcm, prepare_audio
from tasks.face import crop_face
from tasks.face_detectors import default_detector
from tasks.images import load_portrait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each kind (default 2)")
    parser.add_argument(
        "--media", type=Path,
        default=Path(os.environ.get("AVATARFLOW_TEST_MEDIA", REPO.parent / "shared" / "media")),
        help="the shared media folder (default ../shared/media)",
    )
    parser.add_argument("--image", default="facerec_obama.jpg")
    parser.add_argument("--audio", default="whisper_jfk.flac")
    args = parser.parse_args()
    image, audio = args.media / "image" / args.image, args.media / "audio" / args.audio
    missing = [str(p) for p in (image, audio) if not p.is_file()]
    if missing:
        print(f"missing test media: {', '.join(missing)}", file=sys.stderr)
        return 2

    print(describe())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        crop = crop_face(image, tmp / "face.png")
        prepared = prepare_audio(audio, tmp / "speech.wav")
        print(f"inputs: {args.image} -> 512x512 crop, {args.audio} -> {prepared.duration_s:.2f} s "
              f"of 16 kHz speech (prepared in {time.perf_counter() - started:.1f} s, not counted)")

        # Render only: the same work as generate's frame loop, without ffmpeg.
        rgb, _ = load_portrait(crop.out_path)
        face = default_detector().detect(rgb)[0]
        geometry = face_geometry(face.landmarks, face.landmark_source)
        samples = load_pcm(prepared.out_path)
        n_frames = round(samples.size / 16_000 * FPS)
        render_s, render_cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), cpu_seconds()
            openings = mouth_openings(samples, 16_000, n_frames)
            for _frame in MouthWarpAnimator(rgb, geometry, openings, seed=1).frames():
                pass
            render_s.append(time.perf_counter() - t0)
            render_cpu.append(cpu_seconds() - c0)

        engine = MouthWarpCpuEngine()
        total_s, total_cpu, first_clip_s = [], [], []
        for k in range(args.repeat):
            request = GenerationRequest(
                asset_key=f"bench-{k}", image=crop.out_path, audio=prepared.out_path,
                prompt="A person talks to the camera.", preset="standard", seed=k,
                output=tmp / f"video-{k}.mp4", log_path=tmp / "log.txt",
                audio_seconds=prepared.duration_s,
            )
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = engine.generate(request, GpuGang("cpu"))
            total_s.append(time.perf_counter() - t0)
            total_cpu.append(cpu_seconds() - c0)
            if not result.ok:
                print(f"generation failed: {result.failure}", file=sys.stderr)
                return 1
            first_clip_s.append(result.metrics.first_clip_seconds or float("nan"))
        size_kb = (tmp / "video-0.mp4").stat().st_size / 1024

    render, total = statistics.median(render_s), statistics.median(total_s)
    seconds = prepared.duration_s
    print(f"\n{n_frames} frames ({seconds:.2f} s at {FPS} fps, 512x512), "
          f"median of {args.repeat} runs:")
    print(f"  render only : {render:6.2f} s  {n_frames / render:6.1f} fps  "
          f"real-time factor {render / seconds:.2f}  "
          f"({statistics.median(render_cpu):.2f} CPU s)")
    print(f"  end to end  : {total:6.2f} s  {n_frames / total:6.1f} fps  "
          f"real-time factor {total / seconds:.2f}  ({statistics.median(total_cpu):.2f} CPU s; "
          "landmarks + render + H.264/AAC + verify)")
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} "
          f"(on {os.cpu_count()} cores: above that, other work competed for the CPU)")
    print(f"  first clip of 48 frames after {statistics.median(first_clip_s):.2f} s; "
          f"video {size_kb:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
