"""Transcoding and joining on real talking-face clips (3 s cuts: fast on a small machine)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatarflow.storage import sha256_file
from tasks.transcode import (
    RenditionFile,
    TranscodeError,
    join_segments,
    rendition_name,
    rendition_stem,
    transcode,
)

CLIP = "video/infinitetalk_ref_video.mp4"  # 458x458, 25 fps, clear mouth motion, -10.5 LUFS
KEY = "3fa4c2d19b0e" + "7" * 52
BATCH = "Spring launch+1"


def cut(src: Path, out: Path, start: float, seconds: float) -> Path:
    """Re-encode a piece of `src` (frame-accurate, unlike a stream copy)."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-ss",
            str(start),
            "-i",
            str(src),
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-c:a",
            "aac",
            str(out),
        ],
        check=True,
        timeout=120,
    )
    return out


def ffprobe(path: Path) -> dict:
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def integrated_loudness(path: Path) -> float:
    done = subprocess.run(
        [
            "ffmpeg",
            "-nostats",
            "-hide_banner",
            "-i",
            str(path),
            "-map",
            "0:a",
            "-af",
            "ebur128",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = done.stderr[done.stderr.rindex("Summary:") :]
    return float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))


def top_level_boxes(path: Path) -> list[str]:
    """Box types at the top of an MP4, read straight from the bytes."""
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def gray_frame(path: Path, at_s: float) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            f"{at_s:.3f}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-vf",
            "scale=64:64,format=gray",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).astype(np.float32).reshape(64, 64)


def mono_pcm(path: Path, rate: int = 16_000) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "f32le",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, "<f4")


@pytest.fixture(scope="module")
def clip(media: Path, tmp_path_factory) -> Path:
    return cut(media / CLIP, tmp_path_factory.mktemp("clip") / "generated.mp4", 2.0, 3.0)


@pytest.fixture(scope="module")
def made(clip: Path, tmp_path_factory) -> tuple[Path, dict[str, RenditionFile]]:
    out_dir = tmp_path_factory.mktemp("renditions")
    files = transcode(clip, out_dir, name=rendition_stem(BATCH, KEY, "standard"))
    return out_dir, {f.kind: f for f in files}


def test_naming_scheme_is_documented_and_safe():
    name = rendition_name(BATCH, KEY, "standard", "web")
    assert name == "Spring_launch_1_3fa4c2d19b0e_standard_web.mp4"
    assert rendition_name(BATCH, KEY, "standard", "thumb").endswith("_thumb.jpg")
    for kind in ("web", "small", "poster", "thumb"):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", rendition_name("a/b c;+$x", KEY, "pre set", kind))
    with pytest.raises(ValueError):
        rendition_name(BATCH, KEY, "standard", "huge")


def test_videos_are_h264_high_yuv420p_aac_with_faststart(made):
    out_dir, files = made
    assert [p.name for p in sorted(out_dir.glob("*.mp4"))] == [
        "Spring_launch_1_3fa4c2d19b0e_standard_small.mp4",
        "Spring_launch_1_3fa4c2d19b0e_standard_web.mp4",
    ]
    for kind, size in (("web", (458, 458)), ("small", (360, 360))):
        info = ffprobe(files[kind].path)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert (video["codec_name"], video["profile"], video["pix_fmt"]) == (
            "h264",
            "High",
            "yuv420p",
        )
        assert audio["codec_name"] == "aac"
        assert (video["width"], video["height"]) == size == (files[kind].width, files[kind].height)
        assert float(info["format"]["duration"]) == pytest.approx(3.0, abs=0.05)
        boxes = top_level_boxes(files[kind].path)
        assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_loudness_is_normalised_to_the_target(clip, made):
    _, files = made
    assert integrated_loudness(clip) > -15  # the source is far louder than the target
    for kind in ("web", "small"):
        assert integrated_loudness(files[kind].path) == pytest.approx(-23.0, abs=1.0)


def test_poster_and_thumbnail_are_jpegs_of_the_right_size(made):
    _, files = made
    for kind, size in (("poster", (458, 458)), ("thumb", (320, 320))):
        path = files[kind].path
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == size
        assert files[kind].duration_s is None


def test_checksums_and_sizes_are_recorded(made):
    out_dir, files = made
    for file in files.values():
        assert file.path.parent == out_dir
        assert file.sha256 == sha256_file(file.path)
        assert file.bytes == file.path.stat().st_size
    assert not list(out_dir.glob(".*partial*")), "temporary files left behind"


def test_second_call_reuses_without_encoding(clip, made, tmp_path):
    out_dir, files = made
    mtimes = {kind: f.path.stat().st_mtime_ns for kind, f in files.items()}
    again = transcode(clip, out_dir, name=rendition_stem(BATCH, KEY, "standard"))
    assert {f.kind: f for f in again} == files
    assert {f.kind: f.path.stat().st_mtime_ns for f in again} == mtimes


def test_damaged_rendition_is_redone_and_the_others_kept(clip, made, tmp_path):
    out_dir, _ = made
    copy = shutil.copytree(out_dir, tmp_path / "copy")
    name = rendition_stem(BATCH, KEY, "standard")
    first = {f.kind: f for f in transcode(clip, copy, name=name)}
    kept = first["web"].path.stat().st_mtime_ns
    first["thumb"].path.write_bytes(b"not a jpeg")  # damaged after it was made
    second = {f.kind: f for f in transcode(clip, copy, name=name)}
    assert second["web"].path.stat().st_mtime_ns == kept
    assert second["thumb"].sha256 == sha256_file(second["thumb"].path) == first["thumb"].sha256


def test_regenerated_video_under_the_same_name_is_not_given_stale_renditions(media, made, tmp_path):
    out_dir, files = made
    copy = shutil.copytree(out_dir, tmp_path / "copy")
    new_video = cut(media / CLIP, tmp_path / "regenerated.mp4", 8.0, 1.5)  # a new seed, say
    redone = {
        f.kind: f for f in transcode(new_video, copy, name=rendition_stem(BATCH, KEY, "standard"))
    }
    assert redone["web"].sha256 != files["web"].sha256
    assert redone["web"].duration_s == pytest.approx(1.5, abs=0.05)


def test_the_ultrafast_preset_still_delivers_h264_high(clip, tmp_path):
    """AVATARFLOW_TRANSCODE_X264_PRESET=ultrafast once failed transcode's own check: ultrafast
    turns off every High-profile tool, so x264 wrote Constrained Baseline despite -profile high."""
    files = {f.kind: f for f in transcode(clip, tmp_path, name="fast", x264_preset="ultrafast")}
    for kind, size in (("web", (458, 458)), ("small", (360, 360))):
        video = next(s for s in ffprobe(files[kind].path)["streams"] if s["codec_type"] == "video")
        assert (video["codec_name"], video["profile"], video["pix_fmt"]) == ("h264", "High", "yuv420p")
        assert (video["width"], video["height"]) == size
        assert video["has_b_frames"] == 0  # still ultrafast's encoding: no B-frames


def test_video_without_audio_is_refused(tmp_path):
    silent = tmp_path / "no_audio.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=25:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(silent),
        ],
        check=True,
        timeout=60,
    )
    with pytest.raises(TranscodeError) as caught:
        transcode(silent, tmp_path / "out", name="x")
    assert caught.value.code == "no_audio_stream" and not caught.value.retryable


def test_our_timeout_kills_the_whole_process_group(clip, tmp_path):
    from tasks.transcode import _run

    started = time.monotonic()
    with pytest.raises(TranscodeError) as caught:
        # The backgrounded child holds the pipes open: only a group kill lets this return.
        _run(["sh", "-c", "sleep 30 & wait"], timeout_s=0.5, what="a stuck encoder")
    assert caught.value.code == "timeout" and caught.value.retryable
    assert time.monotonic() - started < 10
    with pytest.raises(TranscodeError) as caught:
        transcode(clip, tmp_path / "out", name="x", timeout_s=0.001)
    assert caught.value.code == "timeout"


def test_join_segments_keeps_order_and_continuous_audio(media, tmp_path):
    source = media / CLIP
    parts = [cut(source, tmp_path / f"segment{i}.mp4", 2.0 * i, 2.0) for i in range(3)]
    joined = join_segments(parts, tmp_path / "joined.mp4", timeout_s=300)

    info = ffprobe(joined)
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=2 / 25)
    assert {s["codec_type"]: s["codec_name"] for s in info["streams"]} == {
        "video": "h264",
        "audio": "aac",
    }

    # Just after each join the picture is the source's picture at that time, not another part's.
    sources = [gray_frame(source, 2.0 * i + 0.2) for i in range(3)]
    for i in range(3):
        frame = gray_frame(joined, 2.0 * i + 0.2)
        distances = [float(np.abs(frame - s).mean()) for s in sources]
        assert int(np.argmin(distances)) == i, distances

    # Across each join the speech lines up with the source: no gap, no overlap, no shift.
    rate = 16_000
    joined_pcm, source_pcm = mono_pcm(joined, rate), mono_pcm(source, rate)
    for join_s in (2.0, 4.0):
        window = slice(int((join_s - 0.15) * rate), int((join_s + 0.15) * rate))
        a, b = joined_pcm[window], source_pcm[window]
        assert float(np.corrcoef(a, b)[0, 1]) > 0.9
