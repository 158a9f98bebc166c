"""What QC found for one video (`VideoChecks`), and the record it is stored as and read back from.

The database keeps two JSON columns per QC result: `QCResult.metrics` and `QCResult.checks`.
`VideoChecks.to_record()` gives exactly what goes in them; `VideoChecks.from_record(metrics,
checks)` reads them back as typed fields, so nothing downstream guesses key names:

    metrics = {
        "format": "avatarflow.qc/1",
        "scorer": "landmark-v2" or None,                  # the scorer asked for
        "lipsync": LipSyncResult.to_dict() or None,   # raw metrics, per-window values, score
        "lipsync_error": "why the scorer could not run" or None,
        "timings_s": {"probe": ..., "pass": ..., "lipsync": ..., "checks": ..., "total": ...},
    }
    checks = [CheckResult.to_dict(), ...]                  # in the technical checks' order

Rows written before this record existed hold `LipSyncResult.to_dict()` itself as metrics (or
`{"error": text}` when the scorer failed); `from_record` reads those too. Kept free of media
and model imports: the review page reads records without decoding anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qc.result import LipSyncResult
from qc.verdicts import CheckResult, worst_verdict

RECORD_FORMAT = "avatarflow.qc/1"


class RecordError(ValueError):
    """A stored QC record that is not in any format QC ever wrote."""


@dataclass(frozen=True)
class QCRecord:
    """The two JSON columns of a QC result, as stored."""

    metrics: dict[str, Any]  # QCResult.metrics
    checks: list[dict[str, Any]]  # QCResult.checks


@dataclass
class VideoChecks:
    """Everything QC measured on one video: the lip-sync result (or why there is none) and the
    technical checks."""

    video: str
    scorer: str | None  # the lip-sync scorer's name (None: none was asked for)
    lipsync: LipSyncResult | None
    lipsync_error: str | None  # why there is no lip-sync result
    checks: list[CheckResult]
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """The calibrated P(in sync) of the whole video (None: no score; see `score_reason`)."""
        return self.lipsync.score if self.lipsync is not None else None

    @property
    def score_reason(self) -> str | None:
        if self.lipsync is None:
            return f"lip-sync scorer failed: {self.lipsync_error}" if self.lipsync_error else None
        return self.lipsync.score_reason

    @property
    def calibration(self) -> str | None:
        return self.lipsync.calibration if self.lipsync is not None else None

    def worst_check(self) -> str:
        return worst_verdict(self.checks)

    def gate_metrics(self) -> dict[str, Any]:
        """The raw numbers `qc.gate.decide` uses to explain its verdict (`lipsync_metrics`)."""
        lip = self.lipsync
        return {"offset_frames": lip.offset_frames if lip else None,
                "face_fraction": lip.face_fraction if lip else None,
                "score_reason": self.score_reason}  # fmt: skip

    def to_record(self) -> QCRecord:
        metrics = {
            "format": RECORD_FORMAT,
            "scorer": self.scorer,
            "lipsync": self.lipsync.to_dict() if self.lipsync is not None else None,
            "lipsync_error": self.lipsync_error,
            "timings_s": {k: round(float(v), 3) for k, v in self.timings_s.items()},
        }
        return QCRecord(metrics=metrics, checks=[c.to_dict() for c in self.checks])

    @classmethod
    def from_record(cls, metrics: Mapping[str, Any] | None, checks: Sequence[Mapping[str, Any]] | None,
                    video: str = "") -> VideoChecks:  # fmt: skip
        """Read the stored columns back (either record format QC has written); RecordError if
        they hold something else."""
        metrics = dict(metrics or {})
        try:
            parsed = [CheckResult.from_dict(c) for c in checks or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"a stored check is not a QC check result: {exc}") from exc
        fmt = metrics.get("format")
        if fmt == RECORD_FORMAT:
            lip = metrics.get("lipsync")
            lipsync = _lipsync(lip) if lip is not None else None
            return cls(video=video or (lipsync.video if lipsync else ""), scorer=metrics.get("scorer"),
                       lipsync=lipsync, lipsync_error=metrics.get("lipsync_error"), checks=parsed,
                       timings_s=dict(metrics.get("timings_s") or {}))  # fmt: skip
        if fmt is not None:
            raise RecordError(f"unknown QC record format {fmt!r} (this code reads {RECORD_FORMAT!r})")
        if not metrics:
            return cls(video=video, scorer=None, lipsync=None, lipsync_error=None, checks=parsed)
        # Before the record: the stage stored LipSyncResult.to_dict(), or {"error": text}.
        if "scorer" in metrics:
            lipsync = _lipsync(metrics)
            return cls(video=video or lipsync.video, scorer=lipsync.scorer, lipsync=lipsync,
                       lipsync_error=None, checks=parsed)  # fmt: skip
        if set(metrics) == {"error"}:
            return cls(video=video, scorer=None, lipsync=None, lipsync_error=metrics["error"], checks=parsed)
        raise RecordError(f"stored QC metrics in no known format (keys {sorted(metrics)[:6]})")


def _lipsync(data: Any) -> LipSyncResult:
    try:
        return LipSyncResult.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"the stored lip-sync result cannot be read: {exc}") from exc
