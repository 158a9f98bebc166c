"""The acceptance run's inputs, made by avatarflow's own preprocessing from ../shared/media.

Writes <out>/portrait_512.png (the face crop of facerec_obama.jpg), <out>/speech_6s.wav (≈ 6 s)
and <out>/speech_25s.wav (≈ 25 s, longer than a preview's 10 clips), each as the pipeline would
hand them to an engine (512×512 RGB; 16 kHz mono s16, loudness-normalised, edge silence trimmed).

    .venv/bin/python benchmarks/gpu/prepare_inputs.py [--media ../shared/media] [--out .gpu/inputs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.audio import prepare_audio
from tasks.face import crop_face

# (name, source, start s, length s): musetalk_eng.wav is 60 s of one English speaker.
SPEECH = (("speech_6s.wav", "audio/musetalk_eng.wav", 40.0, 6.3),
          ("speech_25s.wav", "audio/musetalk_eng.wav", 10.0, 25.3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    parser.add_argument("--out", type=Path, default=Path(".gpu/inputs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    crop = crop_face(args.media / "image/facerec_obama.jpg", args.out / "portrait_512.png")
    print(f"portrait_512.png: face {crop.quality['face_size_px']} px, warnings {crop.warnings}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, source, start, length in SPEECH:
            cut = Path(tmp) / name
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(length),
                            "-i", str(args.media / source), str(cut)], check=True)
            prepared = prepare_audio(cut, args.out / name)
            print(f"{name}: {prepared.duration_s:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
