"""Transcoding: a generated video becomes the files a client receives.

`transcode` turns one verified, generated video into:

| kind   | file                | what                                                    |
|--------|---------------------|---------------------------------------------------------|
| web    | `{name}_web.mp4`    | H.264 High, yuv420p, CRF 20 + AAC, faststart, full size |
| small  | `{name}_small.mp4`  | the same at `small_height` (default 360) lines          |
| poster | `{name}_poster.jpg` | a frame one third in, full size                         |
| thumb  | `{name}_thumb.jpg`  | the same frame, 320 px wide                             |

Audio is normalised to a loudness target (EBU R128, ffmpeg `loudnorm` in two passes: measure,
then apply a linear gain under a true-peak ceiling). `join_segments` joins the videos of a split
asset back into one, in order, with continuous audio. Plain functions: no Prefect; the database
is touched only by `record_renditions`. Every ffmpeg/ffprobe call runs with our own timeout in
its own process group, which is killed on timeout (Prefect's task timeout would not kill it).

Naming scheme (`rendition_name`): `{safe batch}_{asset key[:12]}_{safe preset}_{kind}.{mp4|jpg}`,
for example `spring_launch_3fa4c2d19b0e_standard_web.mp4`. Only `[A-Za-z0-9._-]` appear
(`storage.safe_name`); the 12 hex characters of the key keep names unique within a batch and
let anyone find the asset from a file name.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ffmpeg
from sqlalchemy import select
from sqlalchemy.orm import Session

from avatarflow import media
from avatarflow.errors import AvatarflowError
from avatarflow.media import ff_input, run_tool, stderr_tail
from avatarflow.storage import atomic_path, safe_name, sha256_file
from db.models import Asset, Rendition

# Bump when encoding settings change what a rendition looks like: old renditions are then redone.
TRANSCODE_VERSION = 1

VIDEO_KINDS = ("web", "small")
IMAGE_KINDS = ("poster", "thumb")
KINDS = VIDEO_KINDS + IMAGE_KINDS
EXTENSIONS = {"web": ".mp4", "small": ".mp4", "poster": ".jpg", "thumb": ".jpg"}

CRF = 20  # visually transparent for talking heads at a modest size
X264_PRESET = "medium"
AUDIO_BITRATE = "128k"
AUDIO_RATE = 48_000  # loudnorm resamples to 192 kHz internally; bring it back to a normal rate
TRUE_PEAK_DB = -1.5  # EBU R128 allows -1 dBTP; the half dB leaves room for the AAC encoder
# loudnorm falls back to its dynamic (compressing) mode when the source's loudness range exceeds
# the target range; speech rarely exceeds 20 LU, so a wide target keeps the gain linear.
LOUDNESS_RANGE_LU = 20.0
SILENT_LUFS = -70.0  # below this (EBU's absolute gate) there is nothing to normalise
THUMB_WIDTH = 320
POSTER_AT = 1 / 3  # of the duration: past any fade-in, well before the end
JPEG_QUALITY = 2  # ffmpeg's mjpeg qscale: 2 is near the best, files stay small
PROBE_TIMEOUT_S = 60.0
# A joined video is an intermediate that is transcoded again: near lossless, encoded quickly.
JOIN_CRF = 16
JOIN_X264_PRESET = "veryfast"


class TranscodeError(AvatarflowError):
    """A video could not be transcoded or joined; `code` says why, `retryable` whether to retry.

    Codes: unreadable, no_video_stream, no_audio_stream, ffmpeg_failed, bad_output, timeout.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def retryable(self) -> bool:
        # A timeout or a bad output can come from an overloaded machine or a full disk; an
        # unreadable input or a missing stream will fail the same way again.
        return self.code in {"timeout", "ffmpeg_failed", "bad_output"}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep `code` when the error crosses a process boundary (Prefect pickles exceptions).
        return (type(self), (self.code, str(self)))


@dataclass(frozen=True)
class RenditionFile:
    kind: str  # web, small, poster, thumb
    path: Path
    width: int
    height: int
    bytes: int
    sha256: str
    duration_s: float | None  # None for still images

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class MediaInfo:
    width: int  # as displayed (rotation applied)
    height: int
    duration_s: float
    fps: float
    video_codec: str
    profile: str | None
    pix_fmt: str | None
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None


# --------------------------------------------------------------------------- naming


def rendition_stem(batch_name: str, asset_key: str, preset: str) -> str:
    """`{safe batch}_{key[:12]}_{safe preset}`: the `name` to pass to `transcode`."""
    return f"{safe_name(batch_name, 60)}_{asset_key[:12]}_{safe_name(preset, 30)}"


def rendition_file_name(stem: str, kind: str) -> str:
    if kind not in EXTENSIONS:
        raise ValueError(f"unknown rendition kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{safe_name(stem, 120)}_{kind}{EXTENSIONS[kind]}"


def rendition_name(batch_name: str, asset_key: str, preset: str, kind: str) -> str:
    """The file name of one rendition, e.g. `spring_launch_3fa4c2d19b0e_standard_web.mp4`."""
    return rendition_file_name(rendition_stem(batch_name, asset_key, preset), kind)


# --------------------------------------------------------------------------- subprocesses


_ff_input = ff_input
_tail = stderr_tail


def _run(cmd: list[str], *, timeout_s: float, what: str) -> tuple[bytes, bytes]:
    """Run ffmpeg/ffprobe with its own timeout; raises TranscodeError on timeout or failure."""
    if timeout_s <= 0:
        raise TranscodeError("timeout", f"{what}: no time left in the transcoding budget")
    done = run_tool(cmd, timeout_s=timeout_s)
    if done.timed_out:
        raise TranscodeError(
            "timeout",
            f"{what} did not finish within {timeout_s:.0f} s and was killed; the "
            f"machine may be overloaded or the file unusually long. {cmd[0]} said: {stderr_tail(done.err)}",
        )
    if done.returncode != 0:
        raise TranscodeError(
            "ffmpeg_failed", f"{what} failed ({cmd[0]} exit {done.returncode}): {stderr_tail(done.err)}"
        )
    return done.out, done.err


def _compile(stream: Any) -> list[str]:
    """The ffmpeg command line for an ffmpeg-python graph, quiet and non-interactive."""
    return stream.global_args("-nostdin", "-hide_banner", "-nostats").overwrite_output().compile()


class _Deadline:
    """One time budget shared by the several ffmpeg runs of a call."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# --------------------------------------------------------------------------- probing


def probe_media(path: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> MediaInfo:
    """The first video and audio streams of `path`; TranscodeError when it has no video."""
    try:
        info = media.probe(path, timeout_s=timeout_s)
    except media.MediaError as exc:
        code = "timeout" if exc.code == "timeout" else "unreadable"
        raise TranscodeError(code, f"{Path(path).name} cannot be read as media: {exc}") from None
    video, audio = info.video, info.audio
    if video is None or video.display_size is None:
        raise TranscodeError("no_video_stream", f"{Path(path).name} has no video stream")
    width, height = video.display_size  # ffmpeg autorotates on decode: what we output is turned
    return MediaInfo(
        width=width,
        height=height,
        duration_s=info.duration_s or video.duration_s or 0.0,
        fps=video.fps or 0.0,
        video_codec=video.codec,
        profile=video.raw.get("profile"),
        pix_fmt=video.pix_fmt,
        audio_codec=audio.codec if audio else None,
        sample_rate=audio.sample_rate if audio else None,
        channels=audio.channels if audio else None,
    )


def mp4_top_level_boxes(path: Path) -> list[str]:
    """Types of the top-level ISO-BMFF boxes in file order (ftyp, moov, mdat, ...)."""
    boxes: list[str] = []
    size_total = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + 8 <= size_total:
            handle.seek(offset)
            header = handle.read(16)
            size = int.from_bytes(header[:4], "big")
            boxes.append(header[4:8].decode("latin-1"))
            if size == 1:  # 64-bit size follows the type
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:  # box runs to the end of the file
                break
            if size < 8:
                break  # corrupt: stop rather than loop
            offset += size
    return boxes


def is_faststart(path: Path) -> bool:
    """True when the index (moov) precedes the media (mdat): playback starts while downloading."""
    boxes = mp4_top_level_boxes(path)
    return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")


# --------------------------------------------------------------------------- loudness


def measure_loudnorm(src: Path, *, target_lufs: float, timeout_s: float) -> dict[str, float] | None:
    """First loudnorm pass: the source's integrated loudness, range, true peak and threshold.

    None when the audio is (near) silent: there is nothing to normalise, and loudnorm's second
    pass cannot take -inf as a measurement.
    """
    cmd = _compile(
        ffmpeg.input(_ff_input(src))
        .audio.filter(
            "loudnorm", I=target_lufs, TP=TRUE_PEAK_DB, LRA=LOUDNESS_RANGE_LU, print_format="json"
        )
        .output("-", format="null")
    )
    _, err = _run(cmd, timeout_s=timeout_s, what=f"measuring the loudness of {src.name}")
    stats = _last_json(err)
    values = {
        k: float(stats[k])
        for k in ("input_i", "input_tp", "input_lra", "input_thresh", "target_offset")
    }
    if not math.isfinite(values["input_i"]) or values["input_i"] < SILENT_LUFS:
        return None
    return values


def _last_json(stderr: bytes) -> dict[str, str]:
    text = stderr.decode("utf-8", errors="replace")
    match = re.search(r"\{[^{}]*\}\s*$", text)
    if match is None:
        raise TranscodeError("ffmpeg_failed", f"loudnorm printed no measurement: {_tail(stderr)}")
    return json.loads(match.group(0))


def _loudnorm_args(target_lufs: float, measured: dict[str, float]) -> dict[str, Any]:
    return {
        "I": target_lufs,
        "TP": TRUE_PEAK_DB,
        "LRA": LOUDNESS_RANGE_LU,
        "measured_I": measured["input_i"],
        "measured_TP": measured["input_tp"],
        "measured_LRA": measured["input_lra"],
        "measured_thresh": measured["input_thresh"],
        "offset": measured["target_offset"],
        "linear": "true",
        "print_format": "summary",
    }


# --------------------------------------------------------------------------- transcoding


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _sizes(info: MediaInfo, small_height: int) -> dict[str, tuple[int, int]]:
    """Output sizes per kind. yuv420p needs even sides; the small one never upscales."""
    web = (_even(info.width), _even(info.height))
    small_h = min(_even(small_height), web[1])
    small = (_even(web[0] * small_h / web[1] + 1), small_h)  # +1: round to nearest even
    thumb_w = min(_even(THUMB_WIDTH), web[0])
    thumb = (thumb_w, _even(web[1] * thumb_w / web[0] + 1))
    return {"web": web, "small": small, "poster": web, "thumb": thumb}


def _video_output_args() -> dict[str, Any]:
    return {
        "c:v": "libx264",
        # `-profile:v high` is only a ceiling: x264 writes the lowest profile the stream's tools
        # need. The ultrafast preset turns off CABAC, B-frames and the 8x8 transform, so its
        # streams come out Constrained Baseline and fail the High check. The 8x8 transform is a
        # High-profile tool: kept on (x264's default, off only in ultrafast) every preset makes
        # a High stream, and the other presets' output is bit-for-bit what it was.
        "profile:v": "high",
        "8x8dct": 1,
        "pix_fmt": "yuv420p",
        "crf": CRF,
        "preset": X264_PRESET,
        "c:a": "aac",
        "b:a": AUDIO_BITRATE,
        "ar": AUDIO_RATE,
        "movflags": "+faststart",
        # Drop the source's tags (tool names, dates, paths): the client gets only the media.
        "map_metadata": -1,
    }


def _encode_videos(
    src: Path,
    targets: dict[str, tuple[Path, tuple[int, int]]],
    loudnorm: dict[str, Any] | None,
    x264_preset: str,
    timeout_s: float,
) -> None:
    """Encode every requested video kind in one ffmpeg run (one decode, one loudness pass)."""
    source = ffmpeg.input(_ff_input(src))
    audio = source.audio.filter("loudnorm", **loudnorm) if loudnorm else source.audio
    video_split = source.video.filter_multi_output("split", len(targets))
    audio_split = audio.filter_multi_output("asplit", len(targets))
    outputs = []
    for i, (path, (width, height)) in enumerate(targets.values()):
        video = (
            video_split.stream(i)
            .filter("scale", width, height, flags="lanczos")
            .filter("setsar", 1)
        )
        outputs.append(
            ffmpeg.output(
                video,
                audio_split.stream(i),
                str(path),
                **{**_video_output_args(), "preset": x264_preset},
            )
        )
    cmd = _compile(ffmpeg.merge_outputs(*outputs))
    _run(cmd, timeout_s=timeout_s, what=f"transcoding {src.name} ({', '.join(targets)})")


def _encode_images(
    src: Path, at_s: float, targets: dict[str, tuple[Path, tuple[int, int]]], timeout_s: float
) -> None:
    source = ffmpeg.input(_ff_input(src), ss=f"{at_s:.3f}")
    frames = source.video.filter_multi_output("split", len(targets))
    outputs = []
    for i, (path, (width, height)) in enumerate(targets.values()):
        frame = frames.stream(i).filter("scale", width, height, flags="lanczos").filter("setsar", 1)
        # update=1: the name is one file, never an image-sequence pattern.
        outputs.append(
            ffmpeg.output(
                frame,
                str(path),
                format="image2",
                vcodec="mjpeg",
                vframes=1,
                update=1,
                **{"q:v": JPEG_QUALITY},
            )
        )
    cmd = _compile(ffmpeg.merge_outputs(*outputs))
    _run(cmd, timeout_s=timeout_s, what=f"extracting the poster of {src.name}")


def _check_video(
    path: Path, size: tuple[int, int], duration_s: float, timeout_s: float
) -> MediaInfo:
    info = probe_media(path, timeout_s=timeout_s)
    problems = []
    if info.video_codec != "h264" or info.pix_fmt != "yuv420p" or (info.profile or "") != "High":
        problems.append(
            f"video is {info.video_codec} {info.profile} {info.pix_fmt}, not h264 High yuv420p"
        )
    if info.audio_codec != "aac":
        problems.append(f"audio is {info.audio_codec or 'missing'}, not aac")
    if (info.width, info.height) != size:
        problems.append(f"size is {info.width}x{info.height}, not {size[0]}x{size[1]}")
    # AAC frames (1024 samples) and the last video frame may round the container duration.
    if abs(info.duration_s - duration_s) > 0.1:
        problems.append(f"lasts {info.duration_s:.3f} s, the source {duration_s:.3f} s")
    if not is_faststart(path):
        problems.append("the index (moov) is not at the start of the file")
    if problems:
        raise TranscodeError("bad_output", f"{path.name}: " + "; ".join(problems))
    return info


def _check_image(path: Path, size: tuple[int, int]) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
            fmt, got = image.format, image.size
    except Exception as exc:  # noqa: BLE001 - any decoding error means a bad file
        raise TranscodeError("bad_output", f"{path.name} is not a readable image: {exc}") from None
    if fmt != "JPEG" or got != size:
        raise TranscodeError("bad_output", f"{path.name} is a {fmt} of {got}, not a JPEG of {size}")


def _stamp_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{safe_name(name, 120)}.transcode.json"


def _reusable(
    stamp: dict[str, Any], expected: dict[str, Any], kind: str, path: Path
) -> RenditionFile | None:
    """The recorded rendition if made from this source with these settings and still intact."""
    if stamp.get("made_from") != expected:
        return None
    entry = (stamp.get("files") or {}).get(kind)
    if not entry or not path.is_file() or path.stat().st_size != entry["bytes"]:
        return None
    if sha256_file(path) != entry["sha256"]:
        return None
    return RenditionFile(
        kind=kind,
        path=path,
        width=entry["width"],
        height=entry["height"],
        bytes=entry["bytes"],
        sha256=entry["sha256"],
        duration_s=entry["duration_s"],
    )


def transcode(
    src: Path,
    out_dir: Path,
    *,
    name: str,
    target_lufs: float = -23.0,
    small_height: int = 360,
    timeout_s: float = 600,
    x264_preset: str = X264_PRESET,
) -> list[RenditionFile]:
    """Make the web and small MP4s, the poster and the thumbnail of `src` in `out_dir`.

    `name` is the file stem (see `rendition_stem`); files are `{name}_{kind}.{mp4|jpg}`.
    Idempotent: a rendition already made from the same source (by content hash) with the same
    settings, and still matching its recorded checksum, is reused without re-encoding. A stamp
    file `{name}.transcode.json` beside the renditions records what each was made from; it is
    what keeps a regenerated video (same name, new content) from reusing stale renditions.
    `x264_preset` trades CPU for file size at the same quality (CRF): "medium" by default,
    "veryfast" takes about a third of the CPU for files roughly 10-20 % larger. Every x264
    preset, ultrafast included, gives H.264 High (see `_video_output_args`).
    Raises TranscodeError (with `code` and `retryable`).
    """
    src, out_dir = Path(src), Path(out_dir)
    deadline = _Deadline(timeout_s)
    info = probe_media(src, timeout_s=min(PROBE_TIMEOUT_S, deadline.left()))
    if info.audio_codec is None:
        raise TranscodeError(
            "no_audio_stream",
            f"{src.name} has no audio stream; a talking-avatar "
            "video needs its speech (the generator's muxing may have failed)",
        )
    sizes = _sizes(info, small_height)
    paths = {kind: out_dir / rendition_file_name(name, kind) for kind in KINDS}
    expected = {
        "source_sha256": sha256_file(src),
        "version": TRANSCODE_VERSION,
        "target_lufs": target_lufs,
        "small_height": small_height,
        "x264_preset": x264_preset,
    }
    stamp_path = _stamp_path(out_dir, name)
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}

    done: dict[str, RenditionFile] = {}
    for kind in KINDS:
        reused = _reusable(stamp, expected, kind, paths[kind])
        if reused is not None:
            done[kind] = reused

    out_dir.mkdir(parents=True, exist_ok=True)
    todo_videos = [k for k in VIDEO_KINDS if k not in done]
    if todo_videos:
        measured = measure_loudnorm(src, target_lufs=target_lufs, timeout_s=deadline.left())
        loudnorm = _loudnorm_args(target_lufs, measured) if measured else None
        with ExitStack() as stack:
            temps = {k: stack.enter_context(atomic_path(paths[k])) for k in todo_videos}
            _encode_videos(
                src,
                {k: (temps[k], sizes[k]) for k in todo_videos},
                loudnorm,
                x264_preset,
                deadline.left(),
            )
            for kind in todo_videos:
                checked = _check_video(
                    temps[kind],
                    sizes[kind],
                    info.duration_s,
                    min(PROBE_TIMEOUT_S, max(deadline.left(), 1)),
                )
                done[kind] = _describe(
                    kind, temps[kind], paths[kind], sizes[kind], checked.duration_s
                )
            # Leaving the block renames every checked temporary file into place.
        # Recorded now, so a failure while making the images does not cost the videos.
        _write_stamp(stamp_path, expected, done)
        stamp = {"made_from": expected}

    todo_images = [k for k in IMAGE_KINDS if k not in done]
    if todo_images:
        with ExitStack() as stack:
            temps = {k: stack.enter_context(atomic_path(paths[k])) for k in todo_images}
            _encode_images(
                src,
                info.duration_s * POSTER_AT,
                {k: (temps[k], sizes[k]) for k in todo_images},
                deadline.left(),
            )
            for kind in todo_images:
                _check_image(temps[kind], sizes[kind])
                done[kind] = _describe(kind, temps[kind], paths[kind], sizes[kind], None)

    if todo_images or stamp.get("made_from") != expected:
        _write_stamp(stamp_path, expected, done)
    return [done[kind] for kind in KINDS]


def _write_stamp(path: Path, made_from: dict[str, Any], done: dict[str, RenditionFile]) -> None:
    record = {
        "made_from": made_from,
        "files": {
            kind: {k: v for k, v in file.to_dict().items() if k != "path"}
            for kind, file in done.items()
        },
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
        readable(tmp)


def readable(tmp: Path) -> None:
    """Make a temporary file from `atomic_path` world-readable before it is moved into place.

    mkstemp creates files 0600; renditions are read by the review web server and by clients.
    """
    os.chmod(tmp, 0o644)


def _describe(
    kind: str, tmp: Path, final: Path, size: tuple[int, int], duration_s: float | None
) -> RenditionFile:
    readable(tmp)
    # Checksummed from the temporary file: the rename that follows does not change the bytes.
    return RenditionFile(
        kind=kind,
        path=final,
        width=size[0],
        height=size[1],
        bytes=tmp.stat().st_size,
        sha256=sha256_file(tmp),
        duration_s=round(duration_s, 3) if duration_s is not None else None,
    )


# --------------------------------------------------------------------------- joining segments


def join_segments(videos: Sequence[Path], out: Path, *, timeout_s: float = 600) -> Path:
    """Join the segment videos of a split asset, in the given order, into one video at `out`.

    The concat filter re-encodes both streams, so the audio is one continuous AAC stream (a
    stream-copy join would leave encoder priming gaps, heard as clicks, at every join). Segments
    are brought to the first one's size and audio format. The result's duration is checked
    against the sum of the parts: within one frame per join.
    """
    videos = [Path(v) for v in videos]
    if not videos:
        raise ValueError("join_segments needs at least one video")
    deadline = _Deadline(timeout_s)
    infos = [probe_media(v, timeout_s=min(PROBE_TIMEOUT_S, deadline.left())) for v in videos]
    for video, info in zip(videos, infos, strict=True):
        if info.audio_codec is None:
            raise TranscodeError("no_audio_stream", f"segment {video.name} has no audio stream")
    first = infos[0]
    width, height = _even(first.width), _even(first.height)
    fps = first.fps or 25.0
    rate = first.sample_rate or AUDIO_RATE
    layout = "mono" if first.channels == 1 else "stereo"
    parts = []
    for video, info in zip(videos, infos, strict=True):
        source = ffmpeg.input(_ff_input(video))
        parts.append(source.video.filter("scale", width, height).filter("setsar", 1))
        # The AAC decoder also returns the encoder's padding after the last real sample (about
        # 20 ms); kept, it would become a short gap at every join and push later speech out of
        # sync. The container's duration says where the segment really ends.
        parts.append(
            source.audio.filter("atrim", end=f"{info.duration_s:.6f}")
            .filter("aresample", rate)
            .filter("aformat", sample_fmts="fltp", sample_rates=rate, channel_layouts=layout)
        )
    # concat starts each segment after the longest stream of the one before and pads short audio
    # with silence; fps after it holds the last frame where a segment's video ran short.
    joined = ffmpeg.concat(*parts, v=1, a=1).node
    video_out = joined[0].filter("fps", fps)
    args = {
        **_video_output_args(),
        "crf": JOIN_CRF,
        "preset": JOIN_X264_PRESET,
        "b:a": "192k",
        "ar": rate,
    }
    with atomic_path(Path(out)) as tmp:
        cmd = _compile(ffmpeg.output(video_out, joined[1], str(tmp), **args))
        _run(
            cmd,
            timeout_s=deadline.left(),
            what=f"joining {len(videos)} segments into {Path(out).name}",
        )
        result = probe_media(tmp, timeout_s=min(PROBE_TIMEOUT_S, max(deadline.left(), 1)))
        expected = sum(info.duration_s for info in infos)
        tolerance = max(len(videos) - 1, 1) / fps + 0.03
        if result.audio_codec is None or abs(result.duration_s - expected) > tolerance:
            raise TranscodeError(
                "bad_output",
                f"joined video lasts {result.duration_s:.3f} s but its {len(videos)} "
                f"segments add up to {expected:.3f} s (tolerance {tolerance:.3f} s)",
            )
        readable(tmp)
    return Path(out)


# --------------------------------------------------------------------------- database


def record_renditions(
    session: Session, asset: Asset, files: Sequence[RenditionFile]
) -> list[Rendition]:
    """Insert or update one Rendition row per kind for `asset` (unique on asset and kind)."""
    existing = {
        r.kind: r for r in session.scalars(select(Rendition).where(Rendition.asset_id == asset.id))
    }
    rows = []
    for file in files:
        row = existing.get(file.kind)
        if row is None:
            row = Rendition(asset_id=asset.id, kind=file.kind)
            session.add(row)
            existing[file.kind] = row
        row.path = str(file.path)
        row.width, row.height = file.width, file.height
        row.bytes, row.sha256 = file.bytes, file.sha256
        rows.append(row)
    session.flush()
    return rows
