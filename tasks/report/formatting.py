"""How the report writes a duration, a share, a number and a score bin (– for a missing value)."""

from __future__ import annotations

from collections.abc import Sequence


def fmt_duration(seconds: float | None) -> str:
    """Seconds, minutes, hours and minutes up to two days, then days."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, rest = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {rest:02d} min"
    return f"{seconds / 86400:.1f} d"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def fmt_num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def bin_label(edges: Sequence[float], index: int) -> str:
    """The score range of histogram bin `index`, e.g. 0.90–0.95."""
    return f"{edges[index]:.2f}–{edges[index + 1]:.2f}"

