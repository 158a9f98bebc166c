"""Audio preprocessing on real speech: formats, loudness, trimming, refusals, warnings, splitting.

Every check of the output uses tools other than the code under test where it can: ffprobe and
Python's `wave` for the format, ffmpeg's ebur128 filter for loudness and true peak, ffmpeg's
silencedetect for edge silence, and ffmpeg itself to decode the source for comparisons.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tasks.audio import (
    AudioError,
    PreparedAudio,
    find_speech,
    load_pcm,
    prepare_audio,
    probe_audio,
    split_at_pauses,
)

RATE = 16_000
TARGET = -23.0
CEILING = -1.5


# --------------------------------------------------------------------------- helpers


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=60
    )


def ffmpeg_stderr(*args: str) -> str:
    run = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return run.stderr


def ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) as measured by ffmpeg's ebur128 filter."""
    err = ffmpeg_stderr("-i", str(path), "-af", "ebur128=peak=true", "-f", "null", "-")
    summary = err[err.rfind("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.inf]+) dBFS", summary).group(1))
    return integrated, peak


def leading_trailing_silence(path: Path, noise_db: float, min_s: float) -> tuple[float, float]:
    """Seconds of silence (per ffmpeg silencedetect) at the start and at the end of a file."""
    err = ffmpeg_stderr(
        "-i", str(path), "-af", f"silencedetect=n={noise_db}dB:d={min_s}", "-f", "null", "-"
    )
    starts = [float(v) for v in re.findall(r"silence_start: (-?[\d.]+)", err)]
    ends = [float(v) for v in re.findall(r"silence_end: (-?[\d.]+)", err)]
    duration = wav_samples(path).size / RATE
    lead = ends[0] if starts and starts[0] <= 0.01 and ends else 0.0
    trail = (
        duration - starts[-1]
        if starts and (len(ends) < len(starts) or ends[-1] >= duration - 0.01)
        else 0.0
    )
    return lead, trail


def decode(path: Path) -> np.ndarray:
    """The source decoded by ffmpeg directly to 16 kHz mono float, independent of tasks.audio."""
    run = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(RATE),
         "-f", "f32le", "-"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return np.frombuffer(run.stdout, dtype="<f4")


def wav_samples(path: Path) -> np.ndarray:
    """Samples of a 16 kHz mono s16 WAV, read with Python's wave (which also checks the header)."""
    with wave.open(str(path), "rb") as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, RATE)
        assert handle.getcomptype() == "NONE"
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")


def ffprobe_stream(path: Path) -> dict:
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    streams = json.loads(run.stdout)["streams"]
    assert len(streams) == 1
    return streams[0]


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


def loudest_window_db(x: np.ndarray, window_s: float = 0.1) -> float:
    """Level of the loudest 100 ms stretch: catches a word cut off at an edge."""
    n = int(window_s * RATE)
    if x.size < n:
        return rms_db(x)
    frames = x[: x.size // n * n].reshape(-1, n)
    return max(rms_db(frame) for frame in frames)


def check_generator_wav(result: PreparedAudio) -> np.ndarray:
    """The output is what the generator needs: 16 kHz mono s16 WAV, on target, never clipping."""
    stream = ffprobe_stream(result.out_path)
    assert stream["codec_name"] == "pcm_s16le"
    assert stream["sample_fmt"] == "s16"
    assert int(stream["sample_rate"]) == RATE and int(stream["channels"]) == 1
    samples = wav_samples(result.out_path)
    assert samples.size / RATE == pytest.approx(result.duration_s, abs=1e-3)
    assert np.abs(samples.astype(np.int32)).max() < 32767, "output touches full scale"

    integrated, true_peak = ebur128(result.out_path)
    assert abs(integrated - TARGET) <= 1.0, f"ffmpeg measures {integrated} LUFS"
    assert abs(result.loudness_out_lufs - integrated) <= 0.3  # our meter agrees with ffmpeg's
    assert true_peak <= CEILING + 0.3, f"true peak {true_peak} dBTP"
    assert result.peak_db <= CEILING + 0.05
    json.dumps(result.to_dict())  # JSON-serialisable for the database
    return samples


# --------------------------------------------------------------------------- derived real inputs


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Path:
    """A folder where tests put inputs derived with ffmpeg from the real media."""
    return tmp_path_factory.mktemp("made")


def make(made: Path, name: str, *args: str) -> Path:
    path = made / name
    if not path.exists():
        ffmpeg(*args, str(path))
    return path


def mp3_from_real(media: Path, made: Path) -> Path:
    src = media / "audio" / "retalking_audio1.wav"  # 44.1 kHz stereo
    return make(made, "retalking_audio1.mp3", "-i", str(src), "-c:a", "libmp3lame", "-b:a", "128k")


def m4a_from_real(media: Path, made: Path) -> Path:
    src = media / "audio" / "liveavatar_cyclops_baker.wav"  # float32 24 kHz
    return make(made, "cyclops_baker.m4a", "-i", str(src), "-c:a", "aac", "-b:a", "96k")


# --------------------------------------------------------------------------- conversion

SOURCES = {
    "float32 24 kHz WAV": lambda media, made: media / "audio" / "liveavatar_cyclops_baker.wav",
    "FLAC 44.1 kHz stereo": lambda media, made: media / "audio" / "whisper_jfk.flac",
    "48 kHz stereo WAV": lambda media, made: media / "audio" / "retalking_audio2.wav",
    "16 kHz two speakers": lambda media, made: media / "audio" / "pyannote_sample.wav",
    "MP3": mp3_from_real,
    "M4A/AAC": m4a_from_real,
    "video soundtrack": lambda media, made: media / "video" / "retalking_face2.mp4",
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_prepare_real_inputs(kind: str, media: Path, made: Path, tmp_path: Path) -> None:
    src = SOURCES[kind](media, made)
    result = prepare_audio(src, tmp_path / "speech.wav")
    assert result.out_path == tmp_path / "speech.wav"
    samples = check_generator_wav(result)
    assert result.warnings == []
    assert result.source.duration_s == pytest.approx(probe_audio(src).duration_s)
    assert 0.5 <= result.speech_ratio <= 1.0

    # Only silence was trimmed: the removed edges are far below the speech and the output keeps
    # the rest of the source sample for sample in length.
    source = decode(src)
    assert result.duration_s == pytest.approx(
        source.size / RATE - result.trimmed_start_s - result.trimmed_end_s, abs=0.03
    )
    speech_db = rms_db(source)
    head = source[: int(result.trimmed_start_s * RATE)]
    tail = source[source.size - int(result.trimmed_end_s * RATE) :]
    for edge in (head, tail):
        if edge.size:
            assert loudest_window_db(edge) < speech_db - 15
    # ... and no edge silence longer than allowed is left (silencedetect, 25 dB under the speech).
    lead, trail = leading_trailing_silence(result.out_path, noise_db=-48, min_s=0.3)
    assert lead <= 0.5 + 0.05 and trail <= 0.5 + 0.05
    assert samples.size > 0


def test_probe_describes_the_first_audio_stream(media: Path) -> None:
    info = probe_audio(media / "audio" / "liveavatar_cyclops_baker.wav")
    assert (info.codec, info.sample_rate, info.channels, info.sample_fmt) == (
        "pcm_f32le",
        24000,
        1,
        "flt",
    )
    assert info.duration_s == pytest.approx(11.6, abs=0.01)
    assert info.container == "wav"
    flac = probe_audio(media / "audio" / "whisper_jfk.flac")
    assert (flac.codec, flac.sample_rate, flac.channels) == ("flac", 44100, 2)
    video = probe_audio(media / "video" / "retalking_face2.mp4")
    assert video.codec == "aac" and "mp4" in video.container


def test_load_pcm_gives_mono_float_at_the_requested_rate(media: Path) -> None:
    src = media / "video" / "retalking_face2.mp4"
    pcm = load_pcm(src)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert pcm.size / RATE == pytest.approx(probe_audio(src).duration_s, abs=0.05)
    assert 0 < np.abs(pcm).max() <= 1.0
    assert load_pcm(src, 8000).size == pytest.approx(pcm.size / 2, abs=2)


# --------------------------------------------------------------------------- trimming, warnings


def test_padding_is_trimmed(media: Path, made: Path, tmp_path: Path) -> None:
    src = media / "audio" / "whisper_jfk.flac"
    padded = make(made, "jfk_padded.wav", "-i", str(src), "-af", "adelay=3000:all=1,apad=pad_dur=3")
    plain = prepare_audio(src, tmp_path / "plain.wav")
    trimmed = prepare_audio(padded, tmp_path / "padded.wav")
    check_generator_wav(trimmed)
    assert trimmed.source.duration_s == pytest.approx(17.0, abs=0.05)
    assert trimmed.source.duration_s - trimmed.duration_s == pytest.approx(6.0, abs=0.5)
    assert trimmed.duration_s == pytest.approx(plain.duration_s, abs=0.5)
    assert trimmed.trimmed_start_s == pytest.approx(3.0 + plain.trimmed_start_s, abs=0.35)
    assert trimmed.trimmed_end_s == pytest.approx(3.0 + plain.trimmed_end_s, abs=0.35)


def test_clipped_input_is_a_warning(media: Path, made: Path, tmp_path: Path) -> None:
    src = media / "audio" / "latentsync_demo1_audio.wav"
    clipped = make(made, "clipped.wav", "-i", str(src), "-af", "volume=20dB", "-c:a", "pcm_s16le")
    result = prepare_audio(clipped, tmp_path / "out.wav")
    check_generator_wav(result)
    assert any("clipped" in w for w in result.warnings), result.warnings
    assert result.loudness_in_lufs > -10


def test_very_quiet_input_is_a_warning(media: Path, made: Path, tmp_path: Path) -> None:
    src = media / "audio" / "latentsync_demo1_audio.wav"
    quiet = make(made, "quiet.wav", "-i", str(src), "-af", "volume=-35dB", "-c:a", "pcm_s24le")
    result = prepare_audio(quiet, tmp_path / "out.wav")
    check_generator_wav(result)
    assert any("very quiet" in w for w in result.warnings), result.warnings


def test_little_speech_is_a_warning(media: Path, tmp_path: Path) -> None:
    speech = decode(media / "audio" / "whisper_jfk.flac")[
        : int(2.1 * RATE)
    ]  # "And so, my fellow Americans"
    gap = np.zeros(10 * RATE, dtype=np.float32)
    sparse = tmp_path / "sparse.wav"
    with wave.open(str(sparse), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(RATE)
        handle.writeframes((np.concatenate([speech, gap, speech]) * 32767).astype("<i2").tobytes())
    result = prepare_audio(sparse, tmp_path / "out.wav")
    assert result.speech_ratio < 0.3
    assert any("speech" in w for w in result.warnings), result.warnings


# --------------------------------------------------------------------------- refusals


def refusal(src: Path, out: Path) -> AudioError:
    with pytest.raises(AudioError) as caught:
        prepare_audio(src, out)
    assert src.name in str(caught.value)  # the message names the file ...
    assert not out.exists()  # ... and nothing half-made is left behind
    assert not list(out.parent.glob("*.partial*"))
    return caught.value


def test_image_has_no_audio_stream(media: Path, tmp_path: Path) -> None:
    error = refusal(media / "image" / "skimage_astronaut.png", tmp_path / "out.wav")
    assert error.code == "no_audio_stream"
    assert "send" in str(error).lower()


def test_video_without_sound_has_no_audio_stream(media: Path, made: Path, tmp_path: Path) -> None:
    src = media / "video" / "retalking_face2.mp4"
    mute = make(made, "mute.mp4", "-i", str(src), "-an", "-c:v", "copy")
    error = refusal(mute, tmp_path / "out.wav")
    assert error.code == "no_audio_stream"
    with pytest.raises(AudioError) as caught:
        load_pcm(mute)
    assert caught.value.code == "no_audio_stream"


def test_silence_is_refused(made: Path, tmp_path: Path) -> None:
    silence = make(
        made, "silence.wav", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "3"
    )
    assert refusal(silence, tmp_path / "out.wav").code == "silent"


def test_short_clip_is_refused(media: Path, made: Path, tmp_path: Path) -> None:
    src = media / "audio" / "whisper_jfk.flac"
    short = make(made, "short.wav", "-ss", "0.5", "-t", "0.4", "-i", str(src))
    error = refusal(short, tmp_path / "out.wav")
    assert error.code == "too_short"
    assert "1 s" in str(error)


def test_corrupt_files_are_unreadable(media: Path, made: Path, tmp_path: Path) -> None:
    noise = made / "corrupt.wav"
    noise.write_bytes(np.random.default_rng(7).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    error = refusal(noise, tmp_path / "out.wav")
    assert error.code == "unreadable_audio"
    assert "ffprobe said" in str(error)  # the tool's own words come along

    head = made / "truncated.flac"
    head.write_bytes((media / "audio" / "whisper_jfk.flac").read_bytes()[:200])
    assert refusal(head, tmp_path / "out.wav").code == "unreadable_audio"

    empty = made / "empty.mp3"
    empty.write_bytes(b"")
    assert refusal(empty, tmp_path / "out.wav").code == "unreadable_audio"
    assert refusal(made / "missing.wav", tmp_path / "out.wav").code == "unreadable_audio"


def test_subprocess_timeout_is_reported(media: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioError) as caught:
        prepare_audio(
            media / "audio" / "whisper_jfk.flac", tmp_path / "out.wav", ffmpeg_timeout_s=0.001
        )
    assert caught.value.code == "timeout"
    assert "did not finish" in str(caught.value)


def test_audio_error_keeps_its_code_across_processes() -> None:
    error = pickle.loads(pickle.dumps(AudioError("silent", "x.wav is silent")))
    assert (error.code, str(error)) == ("silent", "x.wav is silent")


# --------------------------------------------------------------------------- speech detection


def test_find_speech_on_real_speech_silence_and_noise(media: Path) -> None:
    speech = decode(media / "audio" / "whisper_jfk.flac")
    intervals = find_speech(speech, RATE)
    assert intervals
    assert all(0 <= a < b <= speech.size / RATE for a, b in intervals)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(intervals, intervals[1:], strict=False))
    # JFK pauses between phrases, so there is speech and there are pauses.
    assert 0.5 < sum(b - a for a, b in intervals) / (speech.size / RATE) < 0.95
    # Speech is far louder than what lies between the intervals.
    mask = np.zeros(speech.size, dtype=bool)
    for a, b in intervals:
        mask[int(a * RATE) : int(b * RATE)] = True
    assert rms_db(speech[~mask]) < rms_db(speech[mask]) - 15

    assert find_speech(np.zeros(3 * RATE, dtype=np.float32), RATE) == []
    hiss = np.random.default_rng(1).normal(0, 0.01, 3 * RATE).astype(np.float32)
    assert find_speech(hiss, RATE) == []


# --------------------------------------------------------------------------- splitting


def check_segments(src: Path, segments: list, max_segment_s: float) -> None:
    """Ordered, contiguous, within the limit, cut in pauses, and together exactly the input."""
    original = wav_samples(src)
    assert [s.index for s in segments] == list(range(len(segments)))
    assert segments[0].start_s == 0 and segments[-1].end_s == pytest.approx(original.size / RATE)
    pieces = []
    for segment, following in zip(segments, segments[1:] + [None], strict=True):
        assert segment.end_s - segment.start_s <= max_segment_s + 1e-9
        if following is not None:
            assert following.start_s == segment.end_s
        stream = ffprobe_stream(segment.path)
        assert (stream["codec_name"], int(stream["sample_rate"]), int(stream["channels"])) == (
            "pcm_s16le",
            RATE,
            1,
        )
        pieces.append(wav_samples(segment.path))
    assert np.array_equal(np.concatenate(pieces), original)

    # Around every cut the level is far below the speech: the cut lies in a pause.
    speech_db = rms_db(original / 32768.0)
    for segment in segments[:-1]:
        cut = round(segment.end_s * RATE)
        around = original[cut - 800 : cut + 800] / 32768.0  # +-50 ms
        assert rms_db(around) < speech_db - 15, f"cut at {segment.end_s:.2f} s is in speech"


@pytest.mark.parametrize("max_segment_s", [20.0, 15.0])
def test_split_long_speech_at_pauses(max_segment_s: float, media: Path, tmp_path: Path) -> None:
    src = media / "audio" / "musetalk_eng.wav"
    segments = split_at_pauses(src, tmp_path, max_segment_s=max_segment_s, stem="musetalk")
    assert len(segments) >= 60 / max_segment_s
    check_segments(src, segments, max_segment_s)
    assert all(s.warnings == [] for s in segments)  # this speaker pauses often enough
    assert [s.path.name for s in segments] == [
        f"musetalk_{i:03d}.wav" for i in range(len(segments))
    ]
    json.dumps([s.to_dict() for s in segments])


def test_split_conversation(media: Path, tmp_path: Path) -> None:
    src = media / "audio" / "pyannote_sample.wav"
    segments = split_at_pauses(src, tmp_path, max_segment_s=10.0)
    assert len(segments) >= 3
    check_segments(src, segments, 10.0)
    # Where the talk runs on for longer than the limit the cut is forced, and says so.
    for segment in segments:
        for note in segment.warnings:
            assert "inside speech" in note


def test_short_audio_is_one_segment_without_copy(media: Path, tmp_path: Path) -> None:
    src = media / "audio" / "musetalk_eng.wav"  # exactly 60.0 s
    segments = split_at_pauses(src, tmp_path, stem="x")
    assert len(segments) == 1
    assert segments[0].path == src and segments[0].start_s == 0
    assert segments[0].end_s == pytest.approx(60.0)
    assert list(tmp_path.iterdir()) == []


def test_plus_never_reaches_derived_paths(media: Path, tmp_path: Path) -> None:
    src = tmp_path / "in" / "alice+bob take 1.wav"
    src.parent.mkdir()
    shutil.copyfile(media / "audio" / "pyannote_sample.wav", src)
    segments = split_at_pauses(src, tmp_path / "out", max_segment_s=10.0, stem=src.stem)
    assert all("+" not in str(s.path) for s in segments)
    assert all(" " not in s.path.name for s in segments)
    check_segments(src, segments, 10.0)

    # Short enough for one segment: still a clean copy rather than the input's own name.
    (whole,) = split_at_pauses(src, tmp_path / "whole", stem=src.stem)
    assert whole.path.name == "alice_bob_take_1_000.wav"
    assert np.array_equal(wav_samples(whole.path), wav_samples(src))

    result = prepare_audio(src, tmp_path / "out" / "prepared.wav")
    assert "+" not in str(result.out_path)
    with pytest.raises(ValueError, match=r"\+"):
        prepare_audio(src, tmp_path / "a+b.wav")
    with pytest.raises(ValueError, match=r"\+"):
        split_at_pauses(src, tmp_path / "x+y", max_segment_s=10.0)


def test_loud_target_is_limited_not_clipped(media: Path, tmp_path: Path) -> None:
    # -14 LUFS leaves this conversation's peaks far above the ceiling: the limiter must hold them.
    result = prepare_audio(
        media / "audio" / "pyannote_sample.wav", tmp_path / "loud.wav", target_lufs=-14.0
    )
    integrated, true_peak = ebur128(result.out_path)
    assert abs(integrated - -14.0) <= 1.0
    assert true_peak <= CEILING + 0.3
    assert np.abs(wav_samples(result.out_path).astype(np.int32)).max() < 32767
    assert any("limiting" in w for w in result.warnings), result.warnings
