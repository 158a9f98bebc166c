"""The QC gate: turn a lip-sync score and the technical checks into pass / borderline / fail,
and a decision into a route (approve, review, regenerate with a new seed, reject).

The policy, in order:
1. fail when any technical check fails, or the calibrated lip-sync score is below
   `gate - margin` (clearly out of sync);
2. borderline when there is no calibrated score (the scorer could not run or is not
   calibrated), when the score is within ± `margin` of `gate` (boundaries included: a score of
   exactly `gate - margin` or `gate + margin` is borderline), or when any check warns;
3. pass otherwise (score above `gate + margin`, every check passes).

Every reason that led to the verdict is listed, so a reviewer sees all of them at once.

The gate takes the lip-sync result as plain values, so it does not depend on how the scorer
works: the score in [0, 1], and optionally a dict of raw metrics used only to explain the
verdict (`offset_frames`, `face_tracked_fraction` or `face_fraction`, `score_reason`). Checks
are `qc.verdicts.CheckResult`s, or their `to_dict()` form as stored in the database;
`qc.record.VideoChecks.gate_metrics()` gives the raw metrics in this form.

Routing: approve a pass unless it was sampled for review; review every borderline and every
sampled pass; regenerate a fail with a new, deterministic seed while attempts remain; reject a
fail once they are spent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.engine import next_seed
from qc.verdicts import CheckResult

DEFAULT_GATE = 0.92  # DESIGN.md: the calibrated probability a video must reach
DEFAULT_MARGIN = 0.03  # scores this close to the gate go to a person
DEFAULT_MAX_ATTEMPTS = 3  # generations per asset, the first included
_EPS = 1e-9  # float slack at the boundaries: 0.92 - 0.03 must count as "at" 0.89

APPROVE, REVIEW, REGENERATE, REJECT = "approve", "review", "regenerate", "reject"


@dataclass(frozen=True)
class GateDecision:
    verdict: str  # "pass" | "borderline" | "fail"
    reasons: list[str]
    lipsync_score: float | None
    gate: float
    margin: float
    failed_checks: list[str] = field(default_factory=list)
    warned_checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Route:
    action: str  # "approve" | "review" | "regenerate" | "reject"
    reason: str
    next_attempt: int | None = None  # for "regenerate": the number of the next attempt
    next_seed: int | None = None  # for "regenerate", when the asset key was given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_fields(check: CheckResult | Mapping[str, Any]) -> tuple[str, str, str]:
    if isinstance(check, CheckResult):
        return check.name, check.verdict, check.reason
    return str(check["name"]), str(check["verdict"]), str(check.get("reason", ""))


def _metrics_note(metrics: Mapping[str, Any] | None) -> str:
    """A few raw lip-sync numbers in words, when the scorer gave them."""
    if not metrics:
        return ""
    parts = []
    offset = metrics.get("offset_frames")
    if isinstance(offset, (int, float)) and math.isfinite(offset):
        parts.append(f"audio-video offset {offset:+g} frames")
    # LipSyncResult calls it face_fraction; either name is accepted.
    tracked = metrics.get("face_tracked_fraction", metrics.get("face_fraction"))
    if isinstance(tracked, (int, float)) and math.isfinite(tracked):
        parts.append(f"mouth tracked in {tracked:.0%} of frames")
    return f" ({', '.join(parts)})" if parts else ""


def decide(
    lipsync_score: float | None,
    checks: Sequence[CheckResult | Mapping[str, Any]],
    *,
    gate: float = DEFAULT_GATE,
    margin: float = DEFAULT_MARGIN,
    lipsync_metrics: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Pass, borderline or fail, with every reason (see the module docstring for the policy)."""
    if not 0.0 <= gate <= 1.0:
        raise ValueError(f"gate must be in [0, 1], not {gate}")
    if margin < 0.0:
        raise ValueError(f"margin must not be negative, not {margin}")
    score = lipsync_score
    if score is not None and math.isnan(score):
        score = None  # a NaN is a scorer that could not decide: treat it as no score
    if score is not None and not 0.0 <= score <= 1.0:
        raise ValueError(f"the lip-sync score must be a probability in [0, 1], not {score}")

    fail_reasons: list[str] = []
    border_reasons: list[str] = []
    failed: list[str] = []
    warned: list[str] = []
    note = _metrics_note(lipsync_metrics)
    low, high = gate - margin, gate + margin

    if score is None:
        why = (lipsync_metrics or {}).get("score_reason")
        border_reasons.append("no calibrated lip-sync score" + (f" ({why})" if why else "")
                              + ": a person must judge the sync")  # fmt: skip
    elif score < low - _EPS:
        fail_reasons.append(
            f"lip-sync score {score:.3f} is below {low:.2f} (gate {gate:.2f} − margin "
            f"{margin:.2f}): out of sync{note}"
        )
    elif score <= high + _EPS:
        border_reasons.append(
            f"lip-sync score {score:.3f} is within ±{margin:.2f} of the gate {gate:.2f}{note}"
        )

    for check in checks:
        name, verdict, reason = _check_fields(check)
        if verdict == "fail":
            failed.append(name)
            fail_reasons.append(f"{name}: {reason}")
        elif verdict == "warn":
            warned.append(name)
            border_reasons.append(f"{name} (warning): {reason}")

    if fail_reasons:
        verdict, reasons = "fail", fail_reasons + border_reasons
    elif border_reasons:
        verdict, reasons = "borderline", border_reasons
    else:
        verdict = "pass"
        summary = f"lip-sync score {score:.3f} is above {high:.2f} and all {len(checks)} "
        reasons = [summary + "technical checks pass"]
    return GateDecision(verdict, reasons, score, gate, margin, failed, warned)


def route(
    decision: GateDecision,
    attempts_so_far: int,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    sampled: bool = False,
    *,
    asset_key: str | None = None,
) -> Route:
    """Where the video goes next.

    `attempts_so_far` counts generations made for the asset, the judged one included (≥ 1);
    `max_attempts` is the most the asset may get; `sampled` says whether review sampling
    (`qc.sampling`) picked this asset. With `asset_key`, a regenerate route carries the seed
    for the next attempt (`next_seed(asset_key, attempts_so_far + 1)`).
    """
    if attempts_so_far < 1:
        raise ValueError(f"a judged video means at least one attempt, not {attempts_so_far}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    if decision.verdict == "pass":
        if sampled:
            return Route(REVIEW, "passed; sampled for a routine human review")
        return Route(APPROVE, "passed every automatic check")
    if decision.verdict == "borderline":
        return Route(REVIEW, "borderline: " + "; ".join(decision.reasons))
    if decision.verdict != "fail":
        raise ValueError(f"unknown verdict {decision.verdict!r}")
    if attempts_so_far < max_attempts:
        attempt = attempts_so_far + 1
        seed = next_seed(asset_key, attempt) if asset_key is not None else None
        return Route(
            REGENERATE,
            f"failed (attempt {attempts_so_far} of {max_attempts}); regenerating with a new "
            f"seed: " + "; ".join(decision.reasons),
            next_attempt=attempt,
            next_seed=seed,
        )
    return Route(
        REJECT,
        f"failed all {attempts_so_far} attempts (limit {max_attempts}): "
        + "; ".join(decision.reasons),
    )
