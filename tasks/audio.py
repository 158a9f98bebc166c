"""Audio preprocessing: turn what operators send into the 16 kHz mono s16 WAV the generator needs.

`prepare_audio` decodes any file ffmpeg reads (audio files, the soundtrack of a video), trims
long silence at the edges, normalises loudness to EBU R128 under a true-peak ceiling and writes
the WAV atomically, or refuses with an `AudioError` that says what to do. `split_at_pauses`
cuts long audio at pauses so every piece fits one generation. Plain functions: no Prefect, no
database. Every ffmpeg/ffprobe call runs with its own timeout in its own process group.
"""

from __future__ import annotations

import math
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal as sps
from scipy import ndimage

from avatarflow import media
from avatarflow.errors import AvatarflowError
from avatarflow.media import ff_input, run_tool, stderr_tail
from avatarflow.storage import atomic_path, safe_name

GENERATOR_SAMPLE_RATE = 16_000
PROBE_TIMEOUT_S = 60.0
# Caps checked before decoding (AVATARFLOW_AUDIO_MAX_SECONDS / _MAX_BYTES set them per deployment).
MAX_SECONDS = 3600.0
MAX_BYTES = 2_000_000_000

# Voice activity detection (energy based, adaptive thresholds, hysteresis and hangover).
FRAME_S = 0.025
HOP_S = 0.010
DIGITAL_SILENCE_DB = -90.0  # frames below this are treated as "no signal at all"
MIN_DYNAMICS_DB = 10.0  # speech must rise this far above the noise floor
SEED_ABOVE_NOISE_DB = 10.0
SEED_BELOW_PEAK_DB = 30.0
EXTEND_BELOW_SEED_DB = 12.0
EXTEND_ABOVE_NOISE_DB = 4.0
ONSET_S = 0.02
HANGOVER_S = 0.05
MERGE_GAP_S = 0.12
MIN_SPEECH_S = 0.07  # shorter bursts are clicks, not syllables

# Trimming and normalisation.
EDGE_MARGIN_S = 0.2  # silence kept before the first and after the last word when trimming
EDGE_FADE_S = 0.01  # a trimmed edge may land on room noise: fade it so it does not click
LIMITER_WINDOW_S = 0.01  # attack = release half-window of the peak limiter
LOUDNESS_TOLERANCE_LU = 0.1  # stop adjusting the gain once this close to the target

# Warnings.
CLIP_LEVEL = 0.999  # of full scale
CLIP_WARN_FRACTION = 1e-4
QUIET_GAIN_DB = 20.0
LOW_SPEECH_RATIO = 0.3
HEAVY_LIMITING_DB = 6.0

# Splitting.
PAUSE_GOOD_S = 0.4  # a pause this long is a clean cut; a longer one is no better


class AudioError(AvatarflowError):
    """The audio cannot be turned into generator input; `code` says why, the message what to do.

    Codes: no_audio_stream, unreadable_audio, silent, too_short, too_long, too_large, timeout.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep `code` when the error crosses a process boundary (Prefect pickles exceptions).
        return (type(self), (self.code, str(self)))


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file, as ffprobe sees it."""

    codec: str
    sample_rate: int
    channels: int
    sample_fmt: str
    duration_s: float
    container: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PreparedAudio:
    out_path: Path
    duration_s: float
    source: AudioInfo
    loudness_in_lufs: float  # integrated loudness of the decoded mono signal before gain
    loudness_out_lufs: float
    peak_db: float  # true peak of the output, dBTP
    speech_ratio: float  # share of the output the voice activity detector marks as speech
    trimmed_start_s: float
    trimmed_end_s: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_path": str(self.out_path),
            "duration_s": round(self.duration_s, 4),
            "source": self.source.to_dict(),
            "loudness_in_lufs": round(self.loudness_in_lufs, 2),
            "loudness_out_lufs": round(self.loudness_out_lufs, 2),
            "peak_db": round(self.peak_db, 2),
            "speech_ratio": round(self.speech_ratio, 3),
            "trimmed_start_s": round(self.trimmed_start_s, 4),
            "trimmed_end_s": round(self.trimmed_end_s, 4),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Segment:
    index: int  # 0-based, in playback order
    start_s: float
    end_s: float
    path: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "path": str(self.path),
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- subprocesses


_ff_input = ff_input
_tail = stderr_tail


def _run(cmd: list[str], *, timeout_s: float, path: Path, what: str) -> tuple[bytes, bytes, int]:
    """Run ffmpeg/ffprobe with its own timeout; a timeout is an AudioError a retry may fix."""
    done = run_tool(cmd, timeout_s=timeout_s)
    if done.timed_out:
        raise AudioError(
            "timeout",
            f"{path.name}: {what} did not finish within {timeout_s:g} s; the file may be damaged "
            f"or unusually long, or the machine overloaded. Retry, or re-export the audio as WAV. "
            f"{cmd[0]} said: {stderr_tail(done.err)}",
        )
    return done.out, done.err, int(done.returncode or 0)


# --------------------------------------------------------------------------- probing, decoding


def probe_audio(path: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> AudioInfo:
    """Describe the first audio stream of `path`; AudioError if it has none or is unreadable."""
    path = Path(path)
    try:
        info = media.probe(path, timeout_s=timeout_s)
    except media.MediaError as exc:
        raise AudioError(*_AUDIO_PROBE_ERRORS[exc.code](path, exc)) from None
    stream = info.audio
    if stream is None:
        raise AudioError(
            "no_audio_stream",
            f"{path.name} has no audio stream (it holds {', '.join(info.kinds()) or 'no streams'}): "
            "it is an image or a video without sound. Send the speech as an audio file "
            "(WAV, FLAC, MP3, M4A) or a video with its soundtrack.",
        )
    if not stream.sample_rate or not stream.channels:
        raise AudioError(
            "unreadable_audio",
            f"{path.name}: its audio stream has no usable sample rate or channel count "
            f"(codec {stream.codec}); re-export it as WAV or FLAC.",
        )
    return AudioInfo(
        codec=stream.codec, sample_rate=stream.sample_rate, channels=stream.channels,
        sample_fmt=str(stream.sample_fmt or "unknown"),
        duration_s=float(stream.duration_s or info.duration_s or 0.0), container=info.container,
    )


# What each probe failure means for someone who sent speech.
_AUDIO_PROBE_ERRORS = {
    "missing": lambda path, exc: ("unreadable_audio", f"{path}: no such file; check the path in the manifest"),
    "empty": lambda path, exc: ("unreadable_audio", f"{path.name} is empty (0 bytes); re-send the file"),
    "timeout": lambda path, exc: (
        "timeout", f"{path.name}: ffprobe did not finish in time; the file may be damaged or unusually "
                   f"long, or the machine overloaded. Retry, or re-export the audio as WAV. ({exc})"),
    "unreadable": lambda path, exc: (
        "unreadable_audio", f"The file is damaged, truncated or not audio: re-export or re-send it. {exc}"),
}


def _too_long(name: str, seconds: float, limit: float, *, at_least: bool = False) -> str:
    return (f"{name} lasts {'more than ' if at_least else ''}{seconds / 60:.1f} min, more than the "
            f"{limit / 60:g} min allowed (AVATARFLOW_AUDIO_MAX_SECONDS raises it); cut the speech into parts "
            "of at most that length and submit each")


def _decode(path: Path, info: AudioInfo, timeout_s: float, *, limit_s: float | None = None) -> tuple[np.ndarray, str]:
    """First audio stream at its own rate, float32 (frames, channels), and decoder complaints;
    at most `limit_s` seconds of it (the rest is never decoded)."""
    # ffmpeg folds surround to stereo (it knows the channel layout); mono and stereo stay as is.
    channels = min(info.channels, 2)
    limit = ["-t", f"{limit_s:.3f}"] if limit_s is not None else []
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", _ff_input(path),
           "-map", "0:a:0", *limit, "-ac", str(channels), "-ar", str(info.sample_rate),
           "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"]  # fmt: skip
    out, err, rc = _run(cmd, timeout_s=timeout_s, path=path, what="decoding with ffmpeg")
    if rc != 0:
        raise AudioError(
            "unreadable_audio",
            f"{path.name}: ffmpeg could not decode its audio (exit {rc}); the file is damaged or "
            f"uses an unsupported codec. Re-export it as WAV or FLAC. ffmpeg said: {_tail(err)}",
        )
    usable = len(out) - len(out) % (4 * channels)
    samples = np.frombuffer(out[:usable], dtype="<f4").reshape(-1, channels)
    complaints = _tail(err) if err.strip() else ""
    return samples, complaints


def _to_mono(native: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Average the channels and resample (polyphase) to `rate_out`; float32."""
    mono = native.mean(axis=1, dtype=np.float64) if native.shape[1] > 1 else native[:, 0]
    if rate_in != rate_out and mono.size:
        g = math.gcd(rate_in, rate_out)
        mono = sps.resample_poly(mono, rate_out // g, rate_in // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_pcm(
    path: Path, sample_rate: int = GENERATOR_SAMPLE_RATE, *, timeout_s: float = 300.0
) -> np.ndarray:
    """Any file's first audio stream as mono float32 (full scale 1.0) at `sample_rate`."""
    path = Path(path)
    info = probe_audio(path, timeout_s=min(PROBE_TIMEOUT_S, timeout_s))
    native, _ = _decode(path, info, timeout_s)
    return _to_mono(native, info.sample_rate, sample_rate)


def _clipped_fraction(native: np.ndarray) -> float:
    """Share of samples sitting on a flat top at full scale: the mark of hard clipping."""
    level = np.abs(native)
    hot = level >= CLIP_LEVEL
    # A natural peak touches full scale for one sample; clipping holds it there.
    flat = hot[1:] & hot[:-1] & (np.abs(level[1:] - level[:-1]) < 1e-4)
    return float(flat.sum()) / max(native.size, 1)


# --------------------------------------------------------------------------- measurement


def _frame_energy_db(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean-square level in dBFS of 25 ms frames every 10 ms (frame i starts at i * hop)."""
    frame = max(1, round(FRAME_S * sample_rate))
    hop = max(1, round(HOP_S * sample_rate))
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0)
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    cumsum = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, x.size - frame + 1, hop)
    power = np.maximum((cumsum[starts + frame] - cumsum[starts]) / frame, 0.0)
    return 10.0 * np.log10(power + 1e-12)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True in a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _speech_frames(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame levels (dBFS, see `_frame_energy_db`) and which frames are speech.

    The noise floor and speech level are percentiles of the frame levels, so the thresholds
    follow the recording: frames well above the floor seed speech and neighbours a little above
    it extend it (hysteresis); bursts too short to be a syllable (clicks) are dropped.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    # Rumble and hum below 80 Hz carry energy but no speech.
    highpass = sps.butter(2, 80.0, btype="highpass", fs=sample_rate, output="sos")
    levels = _frame_energy_db(sps.sosfilt(highpass, x), sample_rate)
    speech = np.zeros(levels.size, dtype=bool)
    live = levels > DIGITAL_SILENCE_DB
    if not live.any():
        return levels, speech
    noise = float(np.percentile(levels[live], 10))
    peak = float(np.percentile(levels[live], 99))
    if peak - noise < MIN_DYNAMICS_DB:
        return levels, speech  # steady noise or hum: nothing rises above the floor
    seed = max(noise + SEED_ABOVE_NOISE_DB, peak - SEED_BELOW_PEAK_DB)
    extend = max(noise + EXTEND_ABOVE_NOISE_DB, seed - EXTEND_BELOW_SEED_DB)
    min_frames = math.ceil((MIN_SPEECH_S - FRAME_S) / HOP_S) + 1
    above_seed = levels > seed
    for start, stop in _runs(levels > extend):
        if stop - start >= min_frames and above_seed[start:stop].any():
            speech[start:stop] = True
    return levels, speech


def find_speech(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """Speech intervals in seconds from an energy detector with adaptive thresholds and hangover.

    Each run of speech frames is widened a little (onset, hangover) so soft word edges stay
    inside, and gaps too short to be a pause are bridged so words are not chopped.
    """
    _, speech = _speech_frames(samples, sample_rate)
    hop = round(HOP_S * sample_rate) / sample_rate
    frame = round(FRAME_S * sample_rate) / sample_rate
    total = len(samples) / sample_rate
    intervals: list[tuple[float, float]] = []
    for first, stop in _runs(speech):
        start = max(0.0, first * hop - ONSET_S)
        end = min(total, (stop - 1) * hop + frame + HANGOVER_S)
        if intervals and start - intervals[-1][1] < MERGE_GAP_S:
            intervals[-1] = (intervals[-1][0], end)
        else:
            intervals.append((start, end))
    return intervals


def _k_weighting(sample_rate: int) -> np.ndarray:
    """BS.1770 K-weighting (high shelf + high pass) as SOS, derived for any sample rate."""
    # Analogue prototype parameters as used by libebur128 / ffmpeg's ebur128 filter.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]  # fmt: skip
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def measure_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of a mono signal, LUFS (BS.1770-4, EBU R128 gates); -inf if all gated."""
    y = sps.sosfilt(_k_weighting(sample_rate), np.asarray(samples, dtype=np.float64))
    block = round(0.4 * sample_rate)
    step = round(0.1 * sample_rate)
    if y.size < block:
        return -math.inf
    cumsum = np.concatenate([[0.0], np.cumsum(y * y)])
    starts = np.arange(0, y.size - block + 1, step)
    power = np.maximum((cumsum[starts + block] - cumsum[starts]) / block, 1e-20)
    loudness = -0.691 + 10 * np.log10(power)
    power = power[loudness > -70.0]  # absolute gate
    if power.size == 0:
        return -math.inf
    relative_gate = -0.691 + 10 * math.log10(power.mean()) - 10.0
    power = power[-0.691 + 10 * np.log10(power) > relative_gate]
    return float(-0.691 + 10 * math.log10(power.mean()))


def measure_true_peak_db(samples: np.ndarray) -> float:
    """True peak in dBTP: the sample peak of the 4x oversampled signal (BS.1770 annex 2)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    peak = max(float(np.abs(sps.resample_poly(x, 4, 1)).max()), float(np.abs(x).max()))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


# --------------------------------------------------------------------------- processing


def _limit(x: np.ndarray, sample_rate: int, ceiling_db: float) -> tuple[np.ndarray, float]:
    """Smooth look-ahead peak limiter; returns the signal and the largest gain reduction in dB."""
    ceiling = 10 ** (ceiling_db / 20)
    # Required gain per sample from the 4x oversampled envelope, so inter-sample peaks count too.
    oversampled = np.abs(sps.resample_poly(x, 4, 1))[: 4 * x.size].reshape(-1, 4).max(axis=1)
    envelope = ndimage.maximum_filter1d(np.maximum(oversampled, np.abs(x)), size=3)
    needed = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    if needed.min() >= 1.0:
        return x, 0.0
    half = max(1, round(LIMITER_WINDOW_S * sample_rate))
    # A moving minimum then a moving average of the same width never exceeds the needed gain
    # at any sample (each averaged term is a minimum over a window containing that sample).
    gain = ndimage.minimum_filter1d(needed, size=2 * half + 1, mode="nearest")
    gain = ndimage.uniform_filter1d(gain, size=2 * half + 1, mode="nearest")
    gain = np.minimum(gain, needed)  # guard the filter edges
    return x * gain, float(-20 * np.log10(gain.min()))


def _to_s16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")


def _normalise(
    x: np.ndarray, sample_rate: int, target_lufs: float, ceiling_db: float, loudness_in: float
) -> tuple[np.ndarray, float, float]:
    """Gain to the target loudness under a true-peak ceiling: s16 samples, loudness, limiting."""
    # A little headroom below the ceiling absorbs the limiter's approximation and s16 rounding.
    limit_db = ceiling_db - 0.15
    gain_db = target_lufs - loudness_in
    out = _to_s16(x)
    loudness, limited_db = loudness_in, 0.0
    for _ in range(5):
        limited, limited_db = _limit(x * 10 ** (gain_db / 20), sample_rate, limit_db)
        out = _to_s16(limited)
        loudness = measure_loudness(out / 32768.0, sample_rate)
        if abs(loudness - target_lufs) <= LOUDNESS_TOLERANCE_LU:
            break
        # Limiting lowers the loudness a little; raise the gain by the shortfall and try again.
        gain_db += target_lufs - loudness
    return out, loudness, limited_db


def _fade_edges(x: np.ndarray, sample_rate: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    n = min(round(EDGE_FADE_S * sample_rate), x.size // 2)
    if n < 2 or not (fade_in or fade_out):
        return x
    x = x.copy()
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, n))).astype(x.dtype)
    if fade_in:
        x[:n] *= ramp
    if fade_out:
        x[-n:] *= ramp[::-1]
    return x


def _write_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write mono s16 PCM to `path` atomically."""
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def _refuse_plus(path: Path) -> None:
    if "+" in str(path):
        raise ValueError(
            f"{path}: a '+' in an audio path switches Live Avatar to multi-speaker mode; "
            "build derived paths with avatarflow.storage.safe_name"
        )


def prepare_audio(
    src: Path,
    out_path: Path,
    *,
    sample_rate: int = GENERATOR_SAMPLE_RATE,
    target_lufs: float = -23.0,
    true_peak_db: float = -1.5,
    min_seconds: float = 1.0,
    max_edge_silence_s: float = 0.5,
    ffmpeg_timeout_s: float = 300.0,
    max_seconds: float = MAX_SECONDS,
    max_bytes: int = MAX_BYTES,
) -> PreparedAudio:
    """Decode `src`, trim edge silence, normalise loudness, write a mono s16 WAV to `out_path`.

    Files over `max_bytes`, or whose header says they last over `max_seconds`, are refused before
    anything is decoded; the decoder stops just past `max_seconds` whatever the header says, so
    memory is bounded by the cap (a header that lies is caught by the decoded length)."""
    src, out_path = Path(src), Path(out_path)
    _refuse_plus(out_path)
    if out_path.suffix.lower() != ".wav":
        raise ValueError(f"{out_path}: prepared audio is a WAV file; give it a .wav name")
    name = src.name
    if src.is_file() and (size := src.stat().st_size) > max_bytes:
        raise AudioError("too_large", f"{name} is {size / 1e9:.2f} GB, more than the {max_bytes / 1e9:g} GB allowed "
                                      "(AVATARFLOW_AUDIO_MAX_BYTES raises it); send the speech alone, as FLAC or "
                                      "MP3, or cut into parts")
    info = probe_audio(src, timeout_s=min(PROBE_TIMEOUT_S, ffmpeg_timeout_s))
    if info.duration_s > max_seconds:
        raise AudioError("too_long", _too_long(name, info.duration_s, max_seconds))
    native, complaints = _decode(src, info, ffmpeg_timeout_s, limit_s=max_seconds + 1.0)
    if native.shape[0] / info.sample_rate > max_seconds:  # the header said less than it holds
        raise AudioError("too_long", _too_long(name, native.shape[0] / info.sample_rate, max_seconds, at_least=True))
    warnings: list[str] = []
    if complaints:
        warnings.append(
            f"ffmpeg reported errors while decoding {name}; listen for glitches: {complaints}"
        )
    clipped = _clipped_fraction(native)
    if clipped >= CLIP_WARN_FRACTION:
        warnings.append(
            f"{name} is clipped ({clipped:.2%} of samples stuck at full scale): the voice will "
            "sound distorted and lip-sync may suffer; ask for a recording made at a lower level"
        )
    x = _to_mono(native, info.sample_rate, sample_rate)
    del native
    if x.size == 0:
        raise AudioError(
            "unreadable_audio",
            f"{name}: its audio stream decoded to no samples; the file is damaged or truncated. "
            f"Re-export or re-send it. ffmpeg said: {complaints or '(nothing)'}",
        )
    total_s = x.size / sample_rate
    if float(np.abs(x).max()) < 10 ** (DIGITAL_SILENCE_DB / 20):
        raise AudioError(
            "silent",
            f"{name} is silent ({total_s:.1f} s of digital silence); send the speech recording",
        )
    if total_s < min_seconds:
        raise AudioError(
            "too_short",
            f"{name} lasts {total_s:.2f} s; at least {min_seconds:g} s of speech is needed. "
            "Send a longer recording.",
        )
    speech = find_speech(x, sample_rate)
    if not speech:
        raise AudioError(
            "silent",
            f"{name} holds no speech ({total_s:.1f} s of silence or steady noise); "
            "check that the right file was sent",
        )

    # Trim edge silence longer than allowed, keeping a short margin around the first/last word.
    margin = min(EDGE_MARGIN_S, max_edge_silence_s)
    first, last = speech[0][0], speech[-1][1]
    start_s = first - margin if first > max_edge_silence_s else 0.0
    end_s = last + margin if total_s - last > max_edge_silence_s else total_s
    start, end = round(start_s * sample_rate), round(end_s * sample_rate)
    y = _fade_edges(x[start:end], sample_rate, fade_in=start > 0, fade_out=end < x.size)
    duration_s = y.size / sample_rate
    if duration_s < min_seconds:
        raise AudioError(
            "too_short",
            f"{name} holds only {duration_s:.2f} s of speech after trimming silence; at least "
            f"{min_seconds:g} s is needed. Send a longer recording.",
        )

    loudness_in = measure_loudness(y, sample_rate)
    if not math.isfinite(loudness_in):
        raise AudioError(
            "silent",
            f"{name} is too quiet to measure (below -70 LUFS); re-record or re-export it at a "
            "normal level",
        )
    gain_db = target_lufs - loudness_in
    if gain_db > QUIET_GAIN_DB:
        warnings.append(
            f"{name} is very quiet ({loudness_in:.1f} LUFS) and needed +{gain_db:.0f} dB of gain, "
            "which raises its noise too; ask for a louder recording if it sounds noisy"
        )
    out, loudness_out, limited_db = _normalise(
        y, sample_rate, target_lufs, true_peak_db, loudness_in
    )
    if limited_db > HEAVY_LIMITING_DB:
        warnings.append(
            f"{name} has strong peaks: reaching {target_lufs:g} LUFS needed up to "
            f"{limited_db:.1f} dB of peak limiting; listen for pumping or distortion"
        )
    if abs(loudness_out - target_lufs) > 1.0:
        warnings.append(
            f"{name} reached only {loudness_out:.1f} LUFS (target {target_lufs:g}) under the "
            f"{true_peak_db:g} dBTP ceiling"
        )

    kept = sum(max(0.0, min(b, end_s) - max(a, start_s)) for a, b in speech)
    speech_ratio = min(1.0, kept / duration_s)
    if speech_ratio < LOW_SPEECH_RATIO:
        warnings.append(
            f"only {speech_ratio:.0%} of {name} is speech: the avatar will sit idle most of the "
            "time; check it is the right recording (long pauses, music or noise?)"
        )

    _write_wav(out_path, out, sample_rate)
    return PreparedAudio(
        out_path=out_path,
        duration_s=duration_s,
        source=info,
        loudness_in_lufs=loudness_in,
        loudness_out_lufs=loudness_out,
        peak_db=measure_true_peak_db(out / 32768.0),
        speech_ratio=speech_ratio,
        trimmed_start_s=start / sample_rate,
        trimmed_end_s=(x.size - end) / sample_rate,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- splitting


def _read_s16(path: Path) -> tuple[np.ndarray, int]:
    """Samples of a 16 kHz mono s16 WAV exactly as stored; anything else is decoded to that."""
    try:
        with wave.open(str(path), "rb") as handle:
            shape = (handle.getnchannels(), handle.getsampwidth(), handle.getframerate())
            if shape == (1, 2, GENERATOR_SAMPLE_RATE):
                frames = handle.readframes(handle.getnframes())
                return np.frombuffer(frames, dtype="<i2").copy(), GENERATOR_SAMPLE_RATE
    except (wave.Error, EOFError):
        pass  # float WAV, WAVE_FORMAT_EXTENSIBLE, or not a WAV: let ffmpeg decode it
    return _to_s16(load_pcm(path, GENERATOR_SAMPLE_RATE)), GENERATOR_SAMPLE_RATE


@dataclass(frozen=True)
class Pause:
    """A quiet stretch between speech frames, in samples of the audio being split."""

    start: int  # samples
    stop: int
    seconds: float
    depth_db: float  # mean frame level inside the pause


def _choose_cut(
    start: int, total: int, max_len: int, pauses: list[Pause], quiet: np.ndarray, rate: int
) -> tuple[int, bool]:
    """Sample index of the next cut after `start`, and whether it had to fall inside speech."""
    limit = start + max_len
    needed = math.ceil((total - start) / max_len)
    # Look first where a cut keeps the number of segments minimal, then anywhere past half the
    # limit, then past a quarter: long segments, never a sliver.
    windows = [
        (max(start + max_len // 2, total - (needed - 1) * max_len), limit),
        (start + max_len // 2, limit),
        (start + max_len // 4, limit),
    ]
    for low, high in windows:
        best: tuple[tuple[float, float, int], int] | None = None
        for pause in pauses:
            a, b = max(pause.start, low), min(pause.stop, high)
            if b <= a:
                continue
            # Any pause of PAUSE_GOOD_S is a clean cut: take the latest (fewer, longer segments).
            # Shorter pauses rank by length, then depth.
            good = pause.seconds >= PAUSE_GOOD_S
            key = (min(pause.seconds, PAUSE_GOOD_S), 0.0 if good else -pause.depth_db, b)
            if best is None or key > best[0]:
                best = (key, (a + b) // 2)  # the middle of the usable part of the pause
        if best is not None:
            return best[1], False
    # No pause at all: cut in the middle of the quietest stretch of the window's second half.
    hop, frame = round(HOP_S * rate), round(FRAME_S * rate)
    first = (start + max_len // 2) // hop
    last = max(first + 1, (limit - frame) // hop)
    quietest = first + int(np.argmin(quiet[first:last]))
    return min(max(quietest * hop + frame // 2, start + 1), limit), True


def _find_pauses(
    levels: np.ndarray, speech: np.ndarray, rate: int, total: int, min_pause_s: float
) -> list[Pause]:
    """Stretches of at least `min_pause_s` between speech frames, in samples."""
    hop, frame = round(HOP_S * rate), round(FRAME_S * rate)
    pauses = []
    for first, stop in _runs(~speech):
        # Frame i covers [i*hop, i*hop + frame): the quiet stretch starts where the last speech
        # frame ends and stops where the next speech frame begins.
        a = 0 if first == 0 else (first - 1) * hop + frame
        b = stop * hop if stop < speech.size else total
        seconds = (b - a) / rate
        if seconds >= min_pause_s:
            pauses.append(Pause(a, b, seconds, float(levels[first:stop].mean())))
    return pauses


def split_at_pauses(
    wav_path: Path,
    out_dir: Path,
    *,
    max_segment_s: float = 60.0,
    min_pause_s: float = 0.25,
    stem: str = "segment",
) -> list[Segment]:
    """Cut long audio at pauses into segments of at most `max_segment_s`; short audio stays whole.

    Segments are exact slices of the input (a 16 kHz mono s16 WAV, as `prepare_audio` writes),
    so concatenating them in order gives it back. Other inputs are decoded to that first.
    """
    wav_path, out_dir = Path(wav_path), Path(out_dir)
    _refuse_plus(out_dir)
    if max_segment_s < 1.0:
        raise ValueError(f"max_segment_s must be at least 1 s, not {max_segment_s:g}")
    pcm, rate = _read_s16(wav_path)
    total = pcm.size
    if total <= max_segment_s * rate:
        path = wav_path
        if "+" in str(wav_path):
            # Never hand the generator a '+' (multi-speaker mode): give it a clean copy instead.
            path = out_dir / f"{safe_name(stem)}_000.wav"
            _write_wav(path, pcm, rate)
        return [Segment(index=0, start_s=0.0, end_s=total / rate, path=path)]

    x = pcm.astype(np.float32) / 32768.0
    levels, speech = _speech_frames(x, rate)
    pauses = _find_pauses(levels, speech, rate, total, min_pause_s)
    # Level of ~100 ms stretches, for the fallback cut when speech runs on without a pause.
    quiet = ndimage.uniform_filter1d(10 ** (levels / 10), size=max(1, round(0.1 / HOP_S)))

    max_len = math.floor(max_segment_s * rate)
    cuts: list[tuple[int, bool]] = []
    start = 0
    while total - start > max_len:
        cut, forced = _choose_cut(start, total, max_len, pauses, quiet, rate)
        cuts.append((cut, forced))
        start = cut

    bounds = [0] + [c for c, _ in cuts] + [total]
    forced_at = {c for c, forced in cuts if forced}
    segments = []
    for index, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        notes = []
        if b in forced_at:
            notes.append(
                f"no pause of {min_pause_s:g} s or more in time: cut inside speech at "
                f"{b / rate:.2f} s (the quietest point); check this join"
            )
        if a in forced_at:
            notes.append(f"starts inside speech at {a / rate:.2f} s (forced cut); check this join")
        path = out_dir / f"{safe_name(stem)}_{index:03d}.wav"
        _write_wav(path, pcm[a:b], rate)
        segments.append(
            Segment(index=index, start_s=a / rate, end_s=b / rate, path=path, warnings=notes)
        )
    return segments
