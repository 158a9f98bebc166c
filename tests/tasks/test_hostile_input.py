"""Huge and hostile input, generated here: refused before decoding, with bounded memory and a
message that names the limit and the setting that raises it.

Peak memory is measured in a child process: how far its high-water mark (`ru_maxrss`) rose past
what its imports took.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tasks import audio
from tasks.audio import AudioError, prepare_audio
from tasks.face_types import FaceError
from tasks.images import read_portrait

MB = 1024 * 1024

PROBE = """
import json, resource, sys
from pathlib import Path
from tasks.audio import AudioError, prepare_audio
from tasks.face_types import FaceError
from tasks.images import read_portrait
kind, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the imports' own high-water mark
try:
    if kind == "audio":
        prepare_audio(src, out)
    else:
        read_portrait(src)
    outcome = {"ok": True}
except (AudioError, FaceError) as exc:
    outcome = {"ok": False, "code": exc.code, "message": str(exc)}
mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tools = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({**outcome, "grew_kb": mine - imported, "peak_kb": mine, "tools_peak_kb": tools}))  # tools: ffprobe
"""


def in_child(kind: str, src: Path, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, kind, str(src), str(tmp_path / "out.wav")],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height, with a few bytes of pixels: a pixel bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def three_hour_silence(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "three-hours-silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "10800",
                    "-c:a", "pcm_u8", str(path)], check=True, timeout=120)
    return path


def test_hours_of_audio_are_refused_from_the_header_with_bounded_memory(three_hour_silence, tmp_path):
    result = in_child("audio", three_hour_silence, tmp_path)
    assert result["code"] == "too_long"
    assert "180.0 min, more than the 60 min allowed (AVATARFLOW_AUDIO_MAX_SECONDS raises it)" in result["message"]
    # Decoding it whole would hold 10800 s × 8000 × 4 bytes = 346 MB of float32 alone, plus copies.
    # (ffprobe's own peak, ≈ 100 MB for the static build, says nothing about the file: not bounded here)
    assert result["grew_kb"] * 1024 < 50 * MB, result


def test_a_header_that_understates_the_length_is_caught_by_the_decoder(three_hour_silence, tmp_path, monkeypatch):
    """The decoder stops just past the cap whatever the header says (here it claims 30 s)."""
    real_probe = audio.probe_audio
    monkeypatch.setattr(audio, "probe_audio", lambda path, **kw: dataclasses.replace(real_probe(path, **kw),
                                                                                      duration_s=30.0))
    decoded: list[int] = []
    real_decode = audio._decode
    monkeypatch.setattr(audio, "_decode", lambda *a, **kw: (lambda r: decoded.append(r[0].shape[0]) or r)(
        real_decode(*a, **kw)))
    with pytest.raises(AudioError) as caught:
        prepare_audio(three_hour_silence, tmp_path / "a.wav", max_seconds=60)
    assert caught.value.code == "too_long" and "more than 1.0 min" in str(caught.value)
    assert decoded == [61 * 8000]  # 61 s decoded of the 3 hours


def test_an_audio_file_over_the_size_cap_is_refused_before_probing(three_hour_silence, tmp_path):
    with pytest.raises(AudioError) as caught:
        prepare_audio(three_hour_silence, tmp_path / "a.wav", max_bytes=10_000_000)
    assert caught.value.code == "too_large" and "AVATARFLOW_AUDIO_MAX_BYTES" in str(caught.value)


def test_a_pixel_bomb_is_refused_from_its_header_with_bounded_memory(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 12000, 12000)  # 144 MP: under Pillow's 179 MP guard
    result = in_child("image", bomb, tmp_path)
    assert result["code"] == "image_too_large"
    assert ("12000×12000 = 144 megapixels, more than the 100 allowed (AVATARFLOW_IMAGE_MAX_PIXELS raises it)"
            in result["message"])
    assert result["grew_kb"] * 1024 < 50 * MB, result  # decoded, it would be 432 MB of RGB


def test_an_image_under_the_cap_is_decoded_and_one_over_it_is_not(tmp_path):
    from PIL import Image

    Image.new("RGB", (1200, 1000), (90, 120, 150)).save(tmp_path / "under.png")
    rgb, _, _ = read_portrait(tmp_path / "under.png", max_pixels=1_200_000)
    assert rgb.shape == (1000, 1200, 3)
    with pytest.raises(FaceError) as caught:
        read_portrait(tmp_path / "under.png", max_pixels=1_000_000)
    assert caught.value.code == "image_too_large" and "1.2 megapixels" not in str(caught.value)


@pytest.mark.parametrize("name", ["image/liveavatar_man.png", "image/facerec_obama.jpg"])
def test_a_truncated_image_of_each_kind_says_so(media, tmp_path, name):
    source = media / name
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    with pytest.raises(FaceError) as caught:
        read_portrait(cut)
    assert caught.value.code == "unreadable_image" and "truncated or corrupt" in str(caught.value)


@pytest.mark.parametrize("kind", ["wav", "flac", "mp3", "m4a"])
def test_a_truncated_audio_file_of_each_kind_is_refused_with_what_to_do(media, tmp_path, kind):
    source = tmp_path / f"speech.{kind}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "audio/retalking_audio1.wav"), str(source)],
                   check=True, timeout=60)
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(source.read_bytes()[:4000])  # the header and a sliver of sound
    with pytest.raises(AudioError) as caught:
        prepare_audio(cut, tmp_path / "a.wav")
    message = str(caught.value)
    assert caught.value.code in ("too_short", "unreadable_audio", "silent"), message
    assert any(word in message.lower() for word in ("send", "re-export")), message
