"""Calibration: turn a lip-sync scorer's raw metrics into P(in sync), fitted on real videos.

`calibrate(videos, scorer)` measures real reference clips with their own soundtrack (positives)
and with out-of-sync soundtracks (negatives: the same soundtrack made late and early by 200 ms
and 480 ms, another clip's soundtrack, and optional extra (video, different speech) pairs), fits
a logistic regression from the scorer's raw features to in sync / out of sync, and keeps the
provenance with it. `save_calibration` stores it as JSON (default
`qc/calibrations/<scorer>.json`, shipped with the code), `load_calibration` reads it back and
`apply` maps a result's features to a score in [0, 1].

What the score means: the probability that a video is in sync, for a video like the reference
clips, when a share `prior_in_sync` (stored; default 0.8) of the videos are in sync a priori
(the fit weighs the positives and the negatives equally, and every kind of negative equally;
the prior's log-odds are then added to the intercept). It is not a raw
metric, and it is only as good as the reference set: the stored file says what it was fitted on
and how well it separated the cases under leave-one-clip-out cross-validation.

Long clips are cut into 5 s windows (non-overlapping) so each clip gives several positives;
clips shorter than 5 s count once, whole. Cross-validation leaves out one clip at a time (all
its windows and all its negatives), so no AUC in the report was measured on the data the model
was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize

import avatarflow
from avatarflow.errors import AvatarflowError
from avatarflow.storage import atomic_write_bytes, sha256_file
from qc.decode import FPS, HOP, load_audio
from qc.result import CalibratableScorer, LipSyncResult
from qc.speech import shift_audio
from qc.sync_search import MIN_FRAMES

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibrations"
CALIBRATION_SETTING = "AVATARFLOW_LIPSYNC_CALIBRATION"  # a JSON file, or a folder of <scorer>.json
DEFAULT_GATE = 0.92
SHIFTS_MS = (200, 480)
# The share of generated videos the score assumes in sync. The fit weighs in-sync and
# out-of-sync samples equally (P 0.5 = no evidence either way); 0.8 states that most videos a
# sound generator makes are in sync, while leaving room for one in five not to be. With 0.5, a
# weak measure fails most genuine videos (sending them to regeneration); see the README.
DEFAULT_PRIOR = 0.8
WINDOW_S = 5.0
FORMAT_VERSION = 1

POSITIVE = "in_sync"
OTHER_CLIP = "other_clip_audio"
OTHER_SPEECH = "different_speech"


class CalibrationError(AvatarflowError):
    """No usable calibration: missing, unreadable, or for another scorer."""


# --------------------------------------------------------------------------------------------
# The stored model


@dataclass
class Calibration:
    """A logistic map from raw lip-sync features to P(in sync), with its provenance."""

    scorer: str
    features: list[str]
    mean: list[float]  # standardisation of each feature before the linear model
    scale: list[float]
    coef: list[float]
    intercept: float
    l2: float
    gate: float
    created: str  # ISO 8601, UTC
    code_version: str
    clips: list[dict[str, Any]] = field(default_factory=list)  # name, sha256, frames, windows
    scorer_settings: dict[str, Any] = field(default_factory=dict)  # how the metrics were measured
    negatives: dict[str, Any] = field(default_factory=dict)  # how the negatives were made
    report: dict[str, Any] = field(default_factory=dict)  # AUCs and pass rates
    mouth_model: dict[str, Any] = field(default_factory=dict)  # the scorer's learned part, if any
    prior_in_sync: float = 0.5  # the share of in-sync videos the probability assumes
    format_version: int = FORMAT_VERSION
    source: str | None = None  # the file it was loaded from (not stored)

    @property
    def label(self) -> str:
        return f"{self.scorer} calibration of {self.created[:10]} ({len(self.clips)} clips)"

    def probability(self, features: Mapping[str, float]) -> float:
        missing = [name for name in self.features if name not in features]
        if missing:
            raise CalibrationError(
                f"the {self.scorer} calibration needs feature(s) {', '.join(missing)}, "
                f"which this result does not have"
            )
        x = np.array([float(features[name]) for name in self.features])
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(_sigmoid(float(z @ np.array(self.coef)) + self.intercept))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Calibration:
        try:
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "source"}
            calibration = cls(**known, source=source)
        except TypeError as exc:
            raise CalibrationError(f"{source or 'calibration'} is not a lip-sync calibration: {exc}") from exc
        n = len(calibration.features)
        if not (len(calibration.mean) == len(calibration.scale) == len(calibration.coef) == n):
            raise CalibrationError(f"{source or 'calibration'}: feature and coefficient counts differ")
        return calibration


def apply(calibration: Calibration, features: Mapping[str, float]) -> float:
    """P(in sync) in [0, 1] for a result's raw features (`LipSyncResult.features()`)."""
    return calibration.probability(features)


class Calibrator:
    """A scorer's calibration, loaded once on first use, applied to its results.

    `calibration`: None loads the stored default for `scorer_name` (or the one at `path`); a
    `Calibration` uses that one; False gives raw metrics only ("calibration disabled").
    """

    def __init__(self, scorer_name: str, calibration: Calibration | Literal[False] | None = None,
                 path: Path | None = None) -> None:  # fmt: skip
        self.scorer_name = scorer_name
        self._calibration = calibration
        self._path = path
        self._error: str | None = None

    def calibration(self) -> Calibration | None:
        """The calibration in use (None: disabled or not available; `reason()` says which)."""
        if self._calibration is None and self._error is None:
            try:
                self._calibration = load_calibration(self.scorer_name, self._path)
            except CalibrationError as exc:
                self._error = str(exc)
        return self._calibration or None

    def reason(self) -> str:
        return self._error or "calibration disabled"

    def apply(self, result: LipSyncResult) -> LipSyncResult:
        """Fill in `score` (or the reason there is none) and each analysis window's score."""
        if not result.measured:
            return result  # score stays None; score_reason says why
        calibration = self.calibration()
        if calibration is None:
            result.score_reason = self.reason()
            return result
        result.score = calibration.probability(result.features())
        result.calibration = calibration.label
        for window in result.sync_windows:
            if window.features:
                window.score = calibration.probability(window.features)
        return result


def default_path(scorer_name: str) -> Path:
    """The shipped calibration of `scorer_name` (`AVATARFLOW_LIPSYNC_CALIBRATION` points the
    scorers elsewhere: `qc.lipsync.default_scorer` passes it as their calibration path)."""
    return CALIBRATION_DIR / f"{scorer_name}.json"


def load_calibration(scorer_name: str, path: Path | None = None) -> Calibration:
    """The stored calibration of `scorer_name` (from `path`, the setting, or the shipped default)."""
    target = Path(path) if path is not None else default_path(scorer_name)
    if target.is_dir():
        target = target / f"{scorer_name}.json"
    if not target.is_file():
        command = "avatarflow qc calibrate" + (" --scorer syncnet" if scorer_name.startswith("syncnet") else "")
        raise CalibrationError(
            f"no lip-sync calibration for scorer '{scorer_name}' at {target}: run "
            f"`{command}` (or point {CALIBRATION_SETTING} at a calibration file)"
        )
    try:
        data = json.loads(target.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{target} cannot be read as a calibration: {exc}") from exc
    calibration = Calibration.from_dict(data, source=str(target))
    if calibration.scorer != scorer_name:
        raise CalibrationError(
            f"{target} calibrates scorer '{calibration.scorer}', not '{scorer_name}'"
        )
    return calibration


def save_calibration(calibration: Calibration, path: Path | None = None) -> Path:
    """Write the calibration as JSON (atomically); returns the path written."""
    target = Path(path) if path is not None else default_path(calibration.scorer)
    if target.is_dir():
        target = target / f"{calibration.scorer}.json"
    text = json.dumps(calibration.to_dict(), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(target, text.encode())
    calibration.source = str(target)
    return target


# --------------------------------------------------------------------------------------------
# Logistic regression (weighted, L2-penalised, on standardised features)


def _log_odds(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise CalibrationError(f"the prior share of in-sync videos must be between 0 and 1, not {p}")
    return math.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))  # no overflow warnings for large |z|


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, l2: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, coef, intercept) minimising the weighted log loss + l2/2 |coef|^2.

    Features are standardised first so the penalty treats them alike; `weights` are normalised
    to sum to the number of samples, so `l2` means the same for any data set size.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w * (y.size / w.sum())
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:-1], theta[-1]
        t = z @ coef + b
        # log(1 + e^t) - y t, computed stably
        nll = np.logaddexp(0.0, t) - y * t
        p = _sigmoid(t)
        r = w * (p - y)
        value = float(w @ nll) + 0.5 * l2 * float(coef @ coef)
        grad = np.concatenate([z.T @ r + l2 * coef, [r.sum()]])
        return value, grad

    theta0 = np.zeros(z.shape[1] + 1)
    done = minimize(loss, theta0, jac=True, method="L-BFGS-B")
    if not np.all(np.isfinite(done.x)):
        raise CalibrationError(f"logistic fit failed: {done.message}")
    return mean, scale, done.x[:-1], float(done.x[-1])


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative); ties count half."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


# --------------------------------------------------------------------------------------------
# Building the reference set


# Sources of ../shared/media/video that show the same person (its README): one group, so no
# fold is tested on a face it was fitted on.
SAME_PERSON_SOURCES = {"aniportrait": "may", "synctalk": "may", "geneface": "may"}


def clip_source(name: str) -> str:
    """A clip's source, the leave-one-source-out group: its name up to the first underscore
    (`retalking_face3` -> `retalking`), with `SAME_PERSON_SOURCES` merged."""
    prefix = name.split("_", 1)[0]
    return SAME_PERSON_SOURCES.get(prefix, prefix)


def _clip_itself(name: str) -> str:
    return name


@dataclass
class Sample:
    clip: str  # the video's clip name
    kind: str  # POSITIVE, "shift_200ms", "shift_480ms", OTHER_CLIP, OTHER_SPEECH
    detail: str  # e.g. "audio late 480 ms", "audio of retalking_face2"
    start_s: float
    stop_s: float
    features: dict[str, float]
    scope: str = "window"  # "window": fitted on; "clip": the whole clip, for the report only
    group: str = ""  # the cross-validation group (the clip's source); "" means the clip itself

    def __post_init__(self) -> None:
        self.group = self.group or self.clip

    @property
    def positive(self) -> bool:
        return self.kind == POSITIVE


def shift_kind(ms: int) -> str:
    return f"shift_{ms}ms"


def _windows(frames: int, window: int, min_frames: int) -> list[tuple[int, int]]:
    """Non-overlapping `window`-frame pieces; a clip shorter than one window counts whole."""
    if frames < window:
        return [(0, frames)] if frames >= min_frames else []
    return [(a, a + window) for a in range(0, frames - window + 1, window)]


def _fit_length(pcm: np.ndarray, samples: int) -> np.ndarray:
    """Another clip's soundtrack, repeated or cut to `samples`."""
    if pcm.size == 0:
        return np.zeros(samples, np.float32)
    reps = int(math.ceil(samples / pcm.size))
    return np.tile(pcm, reps)[:samples] if reps > 1 else pcm[:samples]


def collect_samples(
    videos: Sequence[Path],
    scorer: CalibratableScorer,
    *,
    shifts_ms: Sequence[int] = SHIFTS_MS,
    window_s: float = WINDOW_S,
    extra_pairs: Sequence[tuple[Path, Path]] = (),
    whole_clips: bool = True,
    progress: Callable[[str], None] | None = None,
    group_of: Callable[[str], str] = clip_source,
) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Measure every clip window (and, with `whole_clips`, every whole clip) against its own,
    shifted and foreign soundtracks.

    A scorer with a learned part (`learn(examples)`: the landmark scorer's mouth model) measures
    each clip with the part learned from the other groups only, so every sample is measured as
    an unseen video would be; `scorer.learn` is left fitted on all clips."""
    say = progress or (lambda _msg: None)
    window = int(round(window_s * FPS))
    videos = [Path(v) for v in videos]
    names = [v.stem for v in videos]
    if len(set(names)) != len(names):
        raise CalibrationError("two reference videos share a name; names identify the clips")
    tracks: dict[str, Any] = {}
    sounds: dict[str, np.ndarray] = {}
    clips: list[dict[str, Any]] = []
    for video, name in zip(videos, names, strict=True):
        say(f"tracking {name}")
        tracks[name] = scorer.prepare(video)
        sounds[name] = scorer.own_audio(video)
    samples: list[Sample] = []

    def add(name: str, kind: str, detail: str, pcm: np.ndarray, a: int, b: int, scope: str) -> None:
        result: LipSyncResult = scorer.measure(tracks[name], pcm, a, b, video=name, audio=detail)
        if not result.measured:
            say(f"  {name} [{a / FPS:.0f}-{b / FPS:.0f} s] {detail}: not measured ({result.score_reason})")
            return
        samples.append(Sample(name, kind, detail, a / FPS, b / FPS, result.features(), scope, group_of(name)))

    extras: dict[str, list[tuple[str, np.ndarray]]] = {}
    for video, audio in extra_pairs:
        extras.setdefault(Path(video).stem, []).append((Path(audio).name, load_audio(Path(audio))))
    learns = callable(getattr(scorer, "learn", None))
    learned_for: str | None = None
    for video, name in sorted(zip(videos, names, strict=True), key=lambda vn: group_of(vn[1])):
        if learns and learned_for != group_of(name):
            learned_for = group_of(name)
            say(f"learning without {learned_for}")
            scorer.learn([(n, tracks[n], sounds[n]) for n in names if group_of(n) != learned_for])  # type: ignore[attr-defined]
        track, own = tracks[name], sounds[name]
        frames = int(track.frames)
        pieces = _windows(frames, window, MIN_FRAMES)
        say(f"measuring {name}: {len(pieces)} window(s)")
        clips.append({"name": video.name, "sha256": sha256_file(video), "frames": frames,
                      "seconds": round(frames / FPS, 2), "windows": len(pieces)})  # fmt: skip
        needed = frames * HOP
        spans = [(a, b, "window") for a, b in pieces]
        if whole_clips and frames >= MIN_FRAMES:
            spans.append((0, frames, "clip"))
        for a, b, scope in spans:
            add(name, POSITIVE, "own soundtrack", own, a, b, scope)
            for ms in shifts_ms:
                for sign, word in ((1, "late"), (-1, "early")):
                    shifted = shift_audio(own, sign * ms / 1000 * FPS)
                    add(name, shift_kind(ms), f"own soundtrack {word} by {ms} ms", shifted, a, b, scope)
            for other in names:
                if other != name:
                    foreign = _fit_length(sounds[other], needed)
                    add(name, OTHER_CLIP, f"soundtrack of {other}", foreign, a, b, scope)
            for label, pcm in extras.get(name, []):
                foreign = _fit_length(pcm, needed)
                add(name, OTHER_SPEECH, f"speech from {label}", foreign, a, b, scope)
    if learns:
        scorer.learn([(n, tracks[n], sounds[n]) for n in names])  # type: ignore[attr-defined]
    return samples, clips


# --------------------------------------------------------------------------------------------
# Fitting and reporting


def _weights(samples: Sequence[Sample]) -> np.ndarray:
    """Half the weight on the positives, half shared equally by the kinds of negative."""
    kinds = sorted({s.kind for s in samples if not s.positive})
    counts = {k: sum(1 for s in samples if s.kind == k) for k in kinds}
    n_pos = sum(1 for s in samples if s.positive)
    return np.array([
        0.5 / n_pos if s.positive else 0.5 / (len(kinds) * counts[s.kind]) for s in samples
    ])  # fmt: skip


def _matrix(samples: Sequence[Sample], features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[s.features[f] for f in features] for s in samples], dtype=np.float64)
    y = np.array([1.0 if s.positive else 0.0 for s in samples])
    return x, y


def cross_validate(
    samples: Sequence[Sample], features: Sequence[str], l2: float,
    others: Sequence[Sample] = (), prior_in_sync: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Leave-one-group-out predictions: each sample scored by a model fitted without its group
    (its clip's source).

    Returns the predictions for `samples` and for `others` (scored, never fitted on: the
    whole-clip measurements), each by the model that did not see their group.
    """
    out = np.full(len(samples), np.nan)
    out_others = np.full(len(others), np.nan)
    for clip in sorted({s.group for s in samples}):
        train_s = [s for s in samples if s.group != clip]
        if not any(s.positive for s in train_s) or all(s.positive for s in train_s):
            continue
        x, y = _matrix(train_s, features)
        mean, scale, coef, b = fit_logistic(x, y, _weights(train_s), l2)
        for pool, target in ((samples, out), (others, out_others)):
            test = [i for i, s in enumerate(pool) if s.group == clip]
            if test:
                xt, _ = _matrix([pool[i] for i in test], features)
                target[test] = _sigmoid(((xt - mean) / scale) @ coef + b + _log_odds(prior_in_sync))
    return out, out_others


def summarise(
    samples: Sequence[Sample], probabilities: np.ndarray, gate: float
) -> dict[str, Any]:
    """AUC of in-sync against each kind of negative, and pass rates at the gate for each case."""
    kinds = [POSITIVE] + sorted({s.kind for s in samples if not s.positive}, key=_kind_order)
    by_kind = {k: np.array([p for s, p in zip(samples, probabilities, strict=True)
                            if s.kind == k and np.isfinite(p)]) for k in kinds}  # fmt: skip
    pos = by_kind[POSITIVE]
    table: dict[str, Any] = {}
    for kind in kinds:
        values = by_kind[kind]
        table[kind] = {
            "n": int(values.size),
            "pass_rate": round(float((values >= gate).mean()), 4) if values.size else None,
            "under_half": round(float((values < 0.5).mean()), 4) if values.size else None,  # window marks
            "median_p": round(float(np.median(values)), 4) if values.size else None,
            "auc_vs_in_sync": None if kind == POSITIVE else _round(roc_auc(pos, values)),
        }
    negatives = np.concatenate([by_kind[k] for k in kinds[1:]]) if len(kinds) > 1 else np.array([])
    table["all_negatives"] = {
        "n": int(negatives.size),
        "pass_rate": round(float((negatives >= gate).mean()), 4) if negatives.size else None,
        "auc_vs_in_sync": _round(roc_auc(pos, negatives)),
    }
    return table


def _kind_order(kind: str) -> tuple[int, str]:
    if kind.startswith("shift_"):
        return (0, f"{int(kind[6:-2]):06d}")
    return (1 if kind == OTHER_CLIP else 2, kind)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# The modules that shape the raw metrics or their calibration.
_SCORING_SOURCES = ("decode.py", "facetrack.py", "speech.py", "sync_search.py", "result.py",
                    "landmark.py", "syncnet.py", "calibration.py")  # fmt: skip


def code_version() -> str:
    """The package version and a digest of the scoring and calibration code."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _SCORING_SOURCES:
        path = here / name
        if path.is_file():
            digest.update(path.read_bytes())
    return f"avatarflow {avatarflow.__version__}, qc sources sha256:{digest.hexdigest()[:16]}"


def fit(
    samples: Sequence[Sample],
    features: Sequence[str],
    *,
    scorer: str,
    clips: list[dict[str, Any]],
    gate: float = DEFAULT_GATE,
    l2: float = 1.0,
    negatives: dict[str, Any] | None = None,
    scorer_settings: dict[str, Any] | None = None,
    prior_in_sync: float = 0.5,
) -> Calibration:
    """Fit on all samples; report cross-validated (honest) and training-set figures.

    The fit weighs in-sync and out-of-sync samples equally; `prior_in_sync` then sets the share
    of in-sync videos the probability assumes (added to the intercept as its log-odds)."""
    whole = [s for s in samples if s.scope == "clip"]
    samples = [s for s in samples if s.scope == "window"]
    if not any(s.positive for s in samples) or all(s.positive for s in samples):
        raise CalibrationError("calibration needs both in-sync and out-of-sync samples")
    features = list(features)
    x, y = _matrix(samples, features)
    mean, scale, coef, intercept = fit_logistic(x, y, _weights(samples), l2)
    intercept += _log_odds(prior_in_sync)
    fitted = _sigmoid(((x - mean) / scale) @ coef + intercept)
    held_out, held_out_whole = cross_validate(samples, features, l2, whole, prior_in_sync)
    per_clip: dict[str, Any] = {}
    for clip in sorted({s.clip for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.clip == clip]
        pos = [held_out[i] for i in idx if samples[i].positive]
        neg = [held_out[i] for i in idx if not samples[i].positive]
        per_clip[clip] = {
            "in_sync_p": [round(float(p), 4) for p in pos],
            "auc": _round(roc_auc(pos, neg)),
            "negatives_passing": int(sum(1 for p in neg if p >= gate)),
            "negatives": len(neg),
        }
    report = {
        "gate": gate,
        "cross_validated": summarise(samples, held_out, gate),
        "whole_clips_cross_validated": summarise(whole, held_out_whole, gate) if whole else {},
        "whole_clip_in_sync_p": {s.clip: round(float(p), 4) for s, p in
                                 zip(whole, held_out_whole, strict=True) if s.positive},  # fmt: skip
        "training_set": summarise(samples, fitted, gate),
        "per_clip_cross_validated": per_clip,
        "feature_medians": {
            kind: {f: round(float(np.median([s.features[f] for s in samples if s.kind == kind])), 4)
                   for f in features}
            for kind in sorted({s.kind for s in samples}, key=lambda k: (k != POSITIVE, _kind_order(k)))
        },  # fmt: skip
        "method": "logistic regression on standardised features, L2 penalty "
        f"{l2:g}; positives and negatives weighted equally, every negative kind equally; "
        "cross-validation leaves one source (all its clips' windows and negatives) out at a "
        "time; a learned mouth model is refitted without that source too",
    }
    return Calibration(
        scorer=scorer, features=features, mean=[float(v) for v in mean],
        scale=[float(v) for v in scale], coef=[float(v) for v in coef], intercept=intercept,
        l2=l2, gate=gate, created=datetime.now(UTC).isoformat(timespec="seconds"),
        code_version=code_version(), clips=clips, scorer_settings=scorer_settings or {},
        negatives=negatives or {}, report=report, prior_in_sync=prior_in_sync,
    )  # fmt: skip


def calibrate(
    videos: Iterable[Path],
    scorer: CalibratableScorer,
    *,
    shifts_ms: Sequence[int] = SHIFTS_MS,
    window_s: float = WINDOW_S,
    extra_pairs: Sequence[tuple[Path, Path]] = (),
    features: Sequence[str] | None = None,
    gate: float = DEFAULT_GATE,
    l2: float = 1.0,
    progress: Callable[[str], None] | None = None,
    group_of: Callable[[str], str] = clip_source,
    prior_in_sync: float = DEFAULT_PRIOR,
) -> Calibration:
    """Measure the reference videos, fit the logistic map, and return it with its report.

    `videos`: real talking-face clips whose own soundtrack is in sync. `extra_pairs`: (video,
    audio) pairs known to be out of sync (for example the same person with different speech).
    Nothing is written: pass the result to `save_calibration`.
    """
    videos = sorted(Path(v) for v in videos)
    if len(videos) < 2:
        raise CalibrationError("calibration needs at least 2 reference videos (negatives borrow "
                               "another clip's soundtrack; cross-validation leaves one out)")  # fmt: skip
    if len({group_of(v.stem) for v in videos}) < 2:
        group_of = _clip_itself  # one source only: leave one clip out instead
    samples, clips = collect_samples(videos, scorer, shifts_ms=shifts_ms, window_s=window_s,
                                     extra_pairs=extra_pairs, progress=progress, group_of=group_of)  # fmt: skip
    negatives = {
        "shifts_ms": list(shifts_ms),
        "shift_directions": ["audio late", "audio early"],
        "other_clip_audio": "every other reference clip's soundtrack (repeated if shorter)",
        "extra_pairs": [[Path(v).name, Path(a).name] for v, a in extra_pairs],
        "window_s": window_s,
        "windows": "non-overlapping; clips shorter than one window count whole",
        "groups": {c["name"]: group_of(Path(c["name"]).stem) for c in clips},
    }
    settings = scorer.settings() if hasattr(scorer, "settings") else {}
    calibration = fit(samples, features or scorer.calibration_features, scorer=scorer.name,
                      clips=clips, gate=gate, l2=l2, negatives=negatives, scorer_settings=settings,
                      prior_in_sync=prior_in_sync)  # fmt: skip
    model = getattr(scorer, "mouth_model", None)
    calibration.mouth_model = model.to_dict() if model is not None else {}
    return calibration


def report_rows(calibration: Calibration, which: str = "cross_validated") -> list[tuple[str, ...]]:
    """(case, n, AUC vs in sync, pass rate at the gate, median P) rows for printing."""
    table = calibration.report.get(which, {})
    rows = []
    for kind, entry in table.items():
        auc = entry.get("auc_vs_in_sync")
        rate = entry.get("pass_rate")
        median = entry.get("median_p")
        rows.append((
            kind, str(entry.get("n", "")), "-" if auc is None else f"{auc:.3f}",
            "-" if rate is None else f"{rate:.1%}", "-" if median is None else f"{median:.3f}",
        ))  # fmt: skip
    return rows
