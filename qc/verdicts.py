"""One check's outcome (`CheckResult`) and how a list of them reads: the worst verdict, a summary.

Kept free of media and model imports: the gate, the stored QC record and the review page read
check results without decoding anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

VERDICTS = ("pass", "warn", "fail")


def plain(value: Any) -> Any:
    """JSON-ready: numpy numbers as Python numbers, floats rounded, non-finite numbers as None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(float(value)) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass
class CheckResult:
    """One check's outcome, written for the reviewer who reads it."""

    name: str
    value: Any  # the measurement (number, string or None when it could not be measured)
    threshold: str  # human-readable, e.g. "≥ 0.95 (warn ≥ 0.80)"
    verdict: str  # "pass" | "warn" | "fail"
    reason: str  # one sentence
    details: dict[str, Any] = field(default_factory=dict)  # where, per-window values, ...
    # Where it goes wrong: the stretches [start_s, end_s] that fail or warn (a reviewer's
    # time ranges, and what a regeneration would target), and the time of the worst frame.
    ranges: list[tuple[float, float]] = field(default_factory=list)
    worst_s: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")
        self.ranges = [(round(float(a), 2), round(float(b), 2)) for a, b in self.ranges]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (non-finite numbers become None)."""
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            name=data["name"], value=data.get("value"), threshold=data.get("threshold", ""),
            verdict=data["verdict"], reason=data.get("reason", ""),
            details=dict(data.get("details") or {}),
            ranges=[(float(a), float(b)) for a, b in data.get("ranges") or []],
            worst_s=None if data.get("worst_s") is None else float(data["worst_s"]),
        )


def summarise(results: Sequence[CheckResult]) -> str:
    """One line per check, for logs and the CLI."""
    return "\n".join(f"{r.verdict.upper():4} {r.name:15} {r.reason}" for r in results)


def worst_verdict(results: Sequence[CheckResult]) -> str:
    return max((r.verdict for r in results), key=VERDICTS.index, default="pass")
