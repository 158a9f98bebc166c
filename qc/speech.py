"""Speech features on the 25 fps grid: speech-band energies (landmark scorer), MFCCs (SyncNet),
and soundtrack shifts (calibration's out-of-sync negatives)."""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

from qc.decode import HOP, SAMPLE_RATE

BAND_EDGES_HZ = (100, 300, 600, 1000, 1600, 2500, 4000, 7000)


def shift_audio(pcm: np.ndarray, frames: float) -> np.ndarray:
    """The same soundtrack made late by `frames` video frames (early when negative), same length."""
    s = int(round(frames * HOP))
    if s == 0:
        return pcm.copy()
    out = np.zeros_like(pcm)
    if s > 0:
        out[s:] = pcm[: max(0, pcm.size - s)]
    else:
        out[: max(0, pcm.size + s)] = pcm[-s:]
    return out


def band_energies(pcm: np.ndarray, frames: int | None = None) -> np.ndarray:
    """(frames, 7) log energies of the speech bands in an 80 ms Hann window per video frame.

    Window i is centred on the middle of frame i, (i + 0.5) / 25 s, like the frame it describes.
    """
    n = frames if frames is not None else int(math.ceil(pcm.size / HOP))
    win = 2 * HOP
    padded = np.zeros(n * HOP + 2 * win, dtype=np.float32)
    usable = min(pcm.size, n * HOP)
    padded[win : win + usable] = pcm[:usable]
    # Frame i's window starts at i*HOP + HOP/2 - HOP (original samples) = win + i*HOP - HOP/2.
    starts = win + np.arange(n) * HOP - HOP // 2
    segments = padded[starts[:, None] + np.arange(win)[None, :]]
    spectrum = np.abs(np.fft.rfft(segments * np.hanning(win).astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1.0 / SAMPLE_RATE)
    bands = np.stack(
        [spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
         for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)],
        axis=1,
    )  # fmt: skip
    # A floor relative to the loudest frame: digital silence must not become -inf.
    floor = max(float(bands.max()) * 1e-8, 1e-12)
    return np.log(bands + floor)


# --------------------------------------------------------------------------------------------
# MFCCs: python_speech_features.mfcc with its defaults, in numpy (SyncNet's audio input)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray | float:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mfcc(signal: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(steps, 13) MFCCs exactly as python_speech_features.mfcc(signal, rate) computes them.

    Its defaults: 25 ms rectangular frames every 10 ms, pre-emphasis 0.97, 512-point FFT, 26 mel
    filters over 0 - rate/2, log, orthonormal DCT-II, 13 coefficients, cepstral lifter 22, and
    c0 replaced by the log frame energy. syncnet_python feeds it int16 sample values.
    """
    x = np.asarray(signal, dtype=np.float64)
    x = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    frame_len, step, nfft, nfilt = int(round(0.025 * rate)), int(round(0.01 * rate)), 512, 26
    n = 1 if x.size <= frame_len else 1 + int(math.ceil((x.size - frame_len) / step))
    padded = np.concatenate([x, np.zeros((n - 1) * step + frame_len - x.size)])
    idx = np.arange(frame_len)[None, :] + step * np.arange(n)[:, None]
    frames = padded[idx]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy[energy == 0] = np.finfo(float).eps
    mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mel) / rate).astype(int)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(bins[j], bins[j + 1]):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(bins[j + 1], bins[j + 2]):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = power @ bank.T
    feat[feat == 0] = np.finfo(float).eps
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    cep *= 1 + (22 / 2.0) * np.sin(np.pi * np.arange(13) / 22)
    cep[:, 0] = np.log(energy)
    return cep
