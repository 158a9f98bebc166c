"""Figures read from the assets' transition histories: entries, QC decisions, failures, stage times.

Plain functions over a loaded queries.History; none of them touches the database.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise

from db.models import Event, GenerationAttempt
from tasks.report.figures import STAGE_FAILED_FROM, STAGES, FailureCount, S, Spread, Window
from tasks.report.queries import History, event_failure


def _on_day(event: Event, window: Window) -> bool:
    return window.start <= event.at < window.end


def entries(history: History, window: Window) -> dict[str, dict[int, Event]]:
    """state → {asset id → the first transition into it that day}, re-runs from failed excluded."""
    entered: dict[str, dict[int, Event]] = {}
    for asset_id, events in history.events.items():
        for event in events:
            if _on_day(event, window) and event.from_state != S.FAILED:
                entered.setdefault(event.to_state, {}).setdefault(asset_id, event)
    return entered


def qc_decisions(history: History, window: Window) -> list[Event]:
    """The day's QC verdicts: generated → qc_passed / qc_failed / review_pending."""
    return [e for events in history.events.values() for e in events
            if _on_day(e, window) and e.from_state == S.GENERATED
            and e.to_state in (S.QC_PASSED, S.QC_FAILED, S.REVIEW_PENDING)]


def registration_times(history: History, asset_ids: Iterable[int]) -> dict[int, dt.datetime]:
    """When each asset was registered: its event with no from_state, else its created_at."""
    times: dict[int, dt.datetime] = {}
    for asset_id in asset_ids:
        first = next((e for e in history.events[asset_id] if e.from_state is None), None)
        times[asset_id] = first.at if first else history.assets[asset_id].created_at
    return times


def failures(history: History, window: Window,
             attempts: dict[int, list[GenerationAttempt]]) -> list[FailureCount]:
    """The day's moves into failed by (stage, kind); DailyReport.failures says where each comes from."""
    counts: Counter[tuple[str, str]] = Counter()
    for asset_id, events in history.events.items():
        for event in events:
            if event.to_state != S.FAILED or not _on_day(event, window):
                continue
            asset = history.assets[asset_id]
            stage, kind = event_failure(event)
            if not stage and asset.state == S.FAILED and events[-1] is event:
                stage = asset.failed_stage
            stage = stage or STAGE_FAILED_FROM.get(event.from_state or "", event.from_state or "unknown")
            if not kind and stage in ("generate", "verify"):
                earlier = [a for a in attempts.get(asset_id, []) if a.started_at <= event.at]
                kind = earlier[-1].failure_kind if earlier else None
            counts[(str(stage), str(kind or "unspecified"))] += 1
    return [FailureCount(stage, kind, n) for (stage, kind), n in sorted(counts.items())]


def stage_durations(history: History, window: Window) -> dict[str, Spread]:
    """Per stage in STAGES, the lengths of the stage intervals that ended that day."""
    durations: dict[str, list[float]] = {name: [] for name in STAGES}
    for events in history.events.values():
        for previous, current in pairwise(events):
            if not _on_day(current, window) or current.from_state != previous.to_state:
                continue
            for name, (_label, sources, targets) in STAGES.items():
                if previous.to_state in sources and current.to_state in targets:
                    durations[name].append((current.at - previous.at).total_seconds())
    return {name: Spread.of(values) for name, values in durations.items()}
