"""Technical checks on real talking-face clips and on broken videos made from them with ffmpeg.

In-sync real clips must pass every check (the reference portrait is the clip's own first frame,
extracted with ffmpeg). Each broken video is made from a real 4 s, 384x384 cut of one clip and
must be caught by the right check, with a reason that says where, and by no unrelated check.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inference.verify import probe_video
from qc.technical import CheckResult, Thresholds, run_checks, worst_verdict
from tasks.audio import probe_audio

ALL_CHECKS = [
    "decodable", "video_stream", "audio_stream", "frame_rate", "resolution", "duration",
    "black_frames", "frozen_frames", "face_presence", "identity", "colour", "mouth_region",
    "mouth_motion", "flicker", "jitter", "eye_blinks", "audio_level", "audio_clipping",
]  # fmt: skip
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def first_frame(video: Path, out: Path) -> Path:
    ffmpeg("-i", str(video), "-frames:v", "1", str(out))
    return out


def check_clip(
    video: Path, reference: Path, speech_s: float | None = None
) -> dict[str, CheckResult]:
    """All checks, with the expectations a pipeline would pass for this clip."""
    info = probe_video(video)
    assert not hasattr(info, "kind"), info
    speech = speech_s if speech_s is not None else probe_audio(video).duration_s
    results = run_checks(video, expected_seconds=speech, expected_size=(info.width, info.height),
                         reference_image=reference)  # fmt: skip
    return {r.name: r for r in results}


def failing(results: dict[str, CheckResult]) -> set[str]:
    return {name for name, r in results.items() if r.verdict == "fail"}


def not_passing(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.reason for name, r in results.items() if r.verdict != "pass"}


# --------------------------------------------------------------------------- in-sync clips


@pytest.mark.parametrize("clip", ["retalking_face2.mp4", "retalking_face5.mp4"])
def test_real_25fps_clips_pass_every_check(media, tmp_path, clip):
    video = media / "video" / clip
    results = check_clip(video, first_frame(video, tmp_path / "ref.png"))
    assert list(results) == ALL_CHECKS
    assert not_passing(results) == {}
    assert results["face_presence"].value == 1.0
    assert results["identity"].value >= 0.8
    assert results["colour"].value < 3.0
    json.dumps([r.to_dict() for r in results.values()], allow_nan=False)


@pytest.mark.parametrize("clip", ["retalking_face4.mp4", "retalking_face1.mp4"])
def test_30fps_and_variable_rate_clips_fail_only_the_frame_rate(media, tmp_path, clip):
    # The generator delivers constant 25 fps: a 30 fps or variable-rate file is a wrong encode,
    # even though its content is fine (every other check passes on the 25 fps grid).
    video = media / "video" / clip
    results = check_clip(video, first_frame(video, tmp_path / "ref.png"))
    assert failing(results) == {"frame_rate"}
    assert set(not_passing(results)) == {"frame_rate"}
    assert "25 fps" in results["frame_rate"].reason
    assert results["frame_rate"].value != 25


def test_the_30fps_clip_normalised_to_25fps_passes(media, tmp_path):
    video = tmp_path / "25fps.mp4"
    ffmpeg("-i", str(media / "video/retalking_face4.mp4"), "-t", "3", "-vf", "fps=25,scale=384:384",
           *X264, "-c:a", "aac", str(video))  # fmt: skip
    reference = first_frame(media / "video/retalking_face4.mp4", tmp_path / "ref.png")
    results = check_clip(video, reference)
    assert not_passing(results) == {}


# --------------------------------------------------------------------------- broken videos


@pytest.fixture(scope="module")
def base(media, tmp_path_factory) -> tuple[Path, Path, float]:
    """A 4 s, 384x384, 25 fps cut of a real clip, its first frame and its speech length."""
    folder = tmp_path_factory.mktemp("qc_broken")
    video = folder / "base.mp4"
    ffmpeg("-i", str(media / "video/retalking_face2.mp4"), "-t", "4", "-vf", "scale=384:384",
           *X264, "-c:a", "aac", str(video))  # fmt: skip
    return video, first_frame(video, folder / "ref.png"), probe_audio(video).duration_s


def test_the_base_cut_passes(base):
    video, ref, speech = base
    assert not_passing(check_clip(video, ref, speech)) == {}


def test_frozen_stretch_is_caught_and_located(base, tmp_path):
    video, ref, speech = base
    frozen = tmp_path / "frozen.mp4"
    # Frames 25-75 (1.0-3.0 s) all replaced by frame 25: a 2 s freeze, as a stalled decoder makes.
    ffmpeg("-i", str(video), "-i", str(video), "-filter_complex",
           "[0:v][1:v]freezeframes=first=25:last=75:replace=25[v]", "-map", "[v]", "-map", "0:a",
           *X264, "-c:a", "copy", str(frozen))  # fmt: skip
    results = check_clip(frozen, ref, speech)
    # The mouth freezes with the picture while the speech goes on: both say so.
    assert failing(results) == {"frozen_frames", "mouth_motion"}
    assert results["frozen_frames"].ranges == [(1.0, 3.04)] and 1.0 < results["frozen_frames"].worst_s < 3.04
    check = results["frozen_frames"]
    assert check.value == pytest.approx(2.04, abs=0.05)
    assert "frozen" in check.reason and "1.0-3.0 s" in check.reason


def test_black_stretch_is_caught_and_located(base, tmp_path):
    video, ref, speech = base
    black = tmp_path / "black.mp4"
    ffmpeg("-i", str(video), "-vf", "drawbox=enable='between(t,1.5,2.5)':color=black:t=fill",
           *X264, "-c:a", "copy", str(black))  # fmt: skip
    results = check_clip(black, ref, speech)
    assert "black_frames" in failing(results)
    # While the picture is black there is no face either; nothing else is wrong.
    assert failing(results) <= {"black_frames", "face_presence"}
    assert set(not_passing(results)) <= {"black_frames", "face_presence"}
    check = results["black_frames"]
    assert check.value == pytest.approx(1.0, abs=0.1)
    assert "black" in check.reason and "1.5-2.5 s" in check.reason


def test_silent_track_is_caught(base, tmp_path):
    video, ref, speech = base
    silent = tmp_path / "silent.mp4"
    ffmpeg("-i", str(video), "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-map", "0:v",
           "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(silent))  # fmt: skip
    results = check_clip(silent, ref, speech)
    assert failing(results) == {"audio_level"}
    assert "silent" in results["audio_level"].reason
    assert results["audio_stream"].verdict == "pass"  # the stream is there; it is just empty


def test_wrong_length_is_caught_and_says_which_way(base, tmp_path):
    video, ref, speech = base
    short = tmp_path / "short.mp4"
    ffmpeg("-i", str(video), "-t", "3", "-c", "copy", str(short))
    results = check_clip(short, ref, speech)
    assert failing(results) == {"duration"}
    reason = results["duration"].reason
    assert "shorter than the speech" in reason
    assert results["duration"].details["speech_s"] == pytest.approx(speech, abs=1e-3)
    assert results["duration"].details["soundtrack_s"] == pytest.approx(3.0, abs=0.05)
    assert speech - results["duration"].value == pytest.approx(1.0, abs=0.1)


def test_soundtrack_cut_short_is_caught_by_duration(base, tmp_path):
    # The file and the picture are as long as the speech; the sound stops 1.5 s early.
    video, ref, speech = base
    cut = tmp_path / "cut_sound.mp4"
    ffmpeg("-i", str(video), "-af", "atrim=0:2.5", "-c:v", "copy", "-c:a", "aac", str(cut))
    results = check_clip(cut, ref, speech)
    assert failing(results) == {"duration"}
    assert "the soundtrack lasts 2.5" in results["duration"].reason
    assert "shorter than the speech" in results["duration"].reason


def test_missing_audio_stream_is_caught(base, tmp_path):
    video, ref, speech = base
    mute = tmp_path / "mute.mp4"
    ffmpeg("-i", str(video), "-an", "-c:v", "copy", str(mute))
    results = check_clip(mute, ref, speech)
    assert failing(results) == {"audio_stream"}
    assert "no audio stream" in results["audio_stream"].reason
    assert "audio_level" not in results  # nothing to measure


def test_another_person_spliced_in_is_caught_by_identity(base, media, tmp_path):
    video, ref, speech = base
    swapped = tmp_path / "swapped.mp4"
    # The first 2 s are the reference person; then a different person's real clip takes over,
    # as a long generation that drifts into somebody else would.
    ffmpeg("-i", str(video), "-i", str(media / "video/retalking_face1.mp4"), "-filter_complex",
           "[0:v]trim=0:2,setpts=PTS-STARTPTS[a];"
           "[1:v]trim=0:2,setpts=PTS-STARTPTS,scale=384:384,fps=25[b];"
           "[a][b]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "0:a", *X264, "-c:a", "copy",
           str(swapped))  # fmt: skip
    results = check_clip(swapped, ref, speech)
    identity = results["identity"]
    assert identity.verdict == "fail"
    assert "drifts away" in identity.reason
    windows = {start: value for start, value in identity.details["windows"]}
    assert windows[0.0] >= 0.85 and windows[1.0] >= 0.85  # the reference person
    assert windows[2.0] < 0.65 and windows[3.0] < 0.65  # somebody else
    assert "2.0-4.0 s" in identity.reason
    # The picture itself is fine: a face throughout, no black or frozen frames.
    for name in ("black_frames", "frozen_frames", "face_presence", "duration"):
        assert results[name].verdict == "pass", results[name].reason


def test_colour_cast_and_clipped_sound_are_each_caught(base, tmp_path):
    # Two independent defects in one file (one run instead of two): each is caught by its own
    # check and by nothing else.
    video, ref, speech = base
    damaged = tmp_path / "cast_and_clipped.mp4"
    ffmpeg("-i", str(video), "-vf", "colorchannelmixer=rr=1.15:bb=0.8",
           "-af", "volume=20dB,aformat=sample_fmts=s16", *X264, "-c:a", "aac",
           str(damaged))  # fmt: skip
    results = check_clip(damaged, ref, speech)
    assert failing(results) == {"colour", "audio_clipping"}
    assert "yellower" in results["colour"].reason and "redder" in results["colour"].reason
    assert "clipped" in results["audio_clipping"].reason
    assert results["audio_level"].verdict == "pass"


def test_thresholds_are_configurable(base):
    video, _, speech = base
    strict = Thresholds(face_pass=1.01)
    results = {r.name: r for r in run_checks(video, expected_seconds=speech, expected_size=None,
                                             reference_image=None, thresholds=strict)}  # fmt: skip
    # No reference: identity and colour are not run; no expected size: no resolution check.
    assert {"identity", "colour", "resolution"}.isdisjoint(results)
    assert results["face_presence"].verdict == "warn"
    assert worst_verdict(list(results.values())) == "warn"


def test_decoding_has_its_own_time_limit(base):
    video, _, speech = base
    results = {r.name: r for r in run_checks(video, expected_seconds=speech, expected_size=None,
                                             reference_image=None, timeout_s=0.01)}  # fmt: skip
    assert results["decodable"].verdict == "fail"
    assert "did not finish within" in results["decodable"].reason
    # The soundtrack's decode has the same limit and says so.
    assert results["audio_level"].verdict == "fail"
    assert "did not finish within" in results["audio_level"].reason


def test_unreadable_and_missing_files_fail_as_not_decodable(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    for path in (garbage, tmp_path / "missing.mp4"):
        results = run_checks(path, expected_seconds=4.0, expected_size=None, reference_image=None)
        assert [(r.name, r.verdict) for r in results] == [("decodable", "fail")]
        assert results[0].reason


def test_check_result_round_trips_through_a_dict():
    check = CheckResult("audio_level", float("-inf"), "≥ -50 LUFS", "fail",
                        "the soundtrack is silent", {"loudness_lufs": float("-inf")})  # fmt: skip
    data = check.to_dict()
    assert data["value"] is None and data["details"]["loudness_lufs"] is None
    json.dumps(data, allow_nan=False)
    assert CheckResult.from_dict(data).verdict == "fail"
    with pytest.raises(ValueError):
        CheckResult("x", 1, "", "maybe", "")
