"""Reading the database for one day's figures, and the one place each raw stage record is read.

The stage records (what preprocessing, generation and the state machine leave behind) are read
only through speech_seconds, verified_seconds and event_failure below: when they become typed
records, these three functions are all that changes. QC's stored checks are already typed: they
are read with QC's own reader (stored_checks, through qc.verdicts, which imports no media code).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from avatarflow import records
from avatarflow.records import Speech
from db.models import Asset, Event, GenerationAttempt, QCResult, Review, Reviewer
from db.states import TERMINAL
from db.worker_models import GangWorkerRecord
from qc.verdicts import VERDICTS, CheckResult
from tasks.report.figures import (
    APPROVALS,
    BACKLOG_STATES,
    REJECTIONS,
    SCORE_EDGES,
    UTC,
    BacklogState,
    CheckCount,
    GangUse,
    QCChecks,
    ReviewerThroughput,
    ScoreDistribution,
    Window,
)
from tasks.report.stats import median, ratio, union_hours


@dataclass(frozen=True)
class History:
    """Every transition (all time, oldest first) of the assets that had one in the window."""

    events: dict[int, list[Event]]  # asset id → its transitions
    assets: dict[int, Asset]


@dataclass(frozen=True)
class ReviewFigures:
    """The day's review decisions by decision, rejection reasons, and per-reviewer counts."""

    decisions: dict[str, int]
    reasons: dict[str, int]
    reviewers: list[ReviewerThroughput]


@dataclass(frozen=True)
class GpuUse:
    """GPU-hours, per-gang use, and failed generation attempts by kind, for the window."""

    gpu_hours: float
    gangs: list[GangUse]
    attempt_failures: dict[str, int]


# --- the raw stage records: read here and nowhere else ----------------------------------------

def speech_seconds(asset: Asset) -> float | None:
    """The speech length preprocessing recorded (its Speech record)."""
    try:
        speech = records.read(asset.details, Speech)
    except records.RecordError:
        return None
    return speech.duration_s if speech else None


def verified_seconds(attempt: GenerationAttempt) -> float | None:
    """The generator output's verified length, as every engine records it on its attempt
    (`config["verified"]["duration_s"]`)."""
    verified = (attempt.config or {}).get("verified") or {}
    value = verified.get("duration_s")
    return float(value) if isinstance(value, (int, float)) else None


def event_failure(event: Event) -> tuple[str | None, str | None]:
    """(stage, kind) a move into failed recorded in its event data, each None when not said."""
    data = event.data or {}
    return data.get("failed_stage"), data.get("failure_kind") or data.get("kind") or data.get("code")


def stored_checks(stored: Any) -> tuple[list[CheckResult], int]:
    """The check results one `QCResult.checks` holds, and how many entries are not check results."""
    found: list[CheckResult] = []
    unreadable = 0
    for entry in stored if isinstance(stored, list) else []:
        try:
            found.append(CheckResult.from_dict(entry))
        except (KeyError, TypeError, ValueError, AttributeError):
            unreadable += 1
    return found, unreadable


def delivered_duration_s(asset: Asset, attempts: Sequence[GenerationAttempt]) -> float | None:
    """The delivered video's length: the preprocessed speech, else the verified generator output."""
    speech = speech_seconds(asset)
    if speech is not None:
        return speech
    for attempt in sorted(attempts, key=lambda a: a.number, reverse=True):
        verified = verified_seconds(attempt)
        if verified is not None:
            return verified
    return None


# --- queries ----------------------------------------------------------------------------------

def is_transition() -> Any:
    """SQL: the event moved the asset (notes, from_state == to_state, are left out)."""
    return and_(Event.to_state.is_not(None),
                or_(Event.from_state.is_(None), Event.from_state != Event.to_state))


def in_window(column: Any, window: Window) -> Any:
    return and_(column >= window.start, column < window.end)


def load_history(session: Session, window: Window) -> History:
    touched = (select(Event.asset_id)
               .where(in_window(Event.at, window), is_transition())
               .distinct())
    events: dict[int, list[Event]] = defaultdict(list)
    for event in session.scalars(select(Event)
                                 .where(Event.asset_id.in_(touched), is_transition())
                                 .order_by(Event.asset_id, Event.at, Event.id)):
        events[event.asset_id].append(event)
    assets = {a.id: a for a in session.scalars(select(Asset).where(Asset.id.in_(touched)))}
    return History(events, assets)


def attempts_by_asset(session: Session, asset_ids: Iterable[int]) -> dict[int, list[GenerationAttempt]]:
    """Each asset's generation attempts, in attempt order."""
    ids = sorted(set(asset_ids))
    found: dict[int, list[GenerationAttempt]] = defaultdict(list)
    if not ids:
        return found
    for attempt in session.scalars(select(GenerationAttempt)
                                   .where(GenerationAttempt.asset_id.in_(ids))
                                   .order_by(GenerationAttempt.asset_id, GenerationAttempt.number)):
        found[attempt.asset_id].append(attempt)
    return found


def backlog(session: Session, window: Window) -> list[BacklogState]:
    """Each asset's state at the end of the window: its last transition before then."""
    ranked = (select(Event.asset_id, Event.to_state, Event.at,
                     func.row_number().over(partition_by=Event.asset_id,
                                            order_by=(Event.at.desc(), Event.id.desc())).label("rn"))
              .where(Event.at < window.until, is_transition())
              .subquery())
    ages: dict[str, list[float]] = defaultdict(list)
    rows = session.execute(select(ranked.c.to_state, ranked.c.at)
                           .where(ranked.c.rn == 1, ranked.c.to_state.not_in([s.value for s in TERMINAL])))
    for state, entered_at in rows:
        if entered_at.tzinfo is None:  # a subquery column loses the UTC decorator on SQLite
            entered_at = entered_at.replace(tzinfo=UTC)
        ages[state].append((window.until - entered_at).total_seconds())
    states = list(BACKLOG_STATES) + sorted(set(ages) - set(BACKLOG_STATES))  # unknown states still show
    return [BacklogState(state, len(ages[state]), max(ages[state]) if ages[state] else None,
                         median(ages[state])) for state in states]


def lip_sync(session: Session, window: Window) -> ScoreDistribution:
    rows = session.execute(select(QCResult.score, QCResult.gate)
                           .where(in_window(QCResult.created_at, window), QCResult.score.is_not(None))
                           ).tuples().all()
    counts = [0] * (len(SCORE_EDGES) - 1)
    for score, _gate in rows:
        # bisect on exact decimal edges: score/0.05 would put 0.95 in the 0.90 bin (float error).
        index = min(max(bisect_right(SCORE_EDGES, score) - 1, 0), len(counts) - 1)
        counts[index] += 1
    gates = Counter(gate for _score, gate in rows)
    gate = max(gates, key=lambda g: (gates[g], g)) if gates else None
    above = sum(1 for score, gate_of_row in rows if score >= gate_of_row)
    return ScoreDistribution(SCORE_EDGES, counts, len(rows), gate, above, ratio(above, len(rows)),
                             median([score for score, _ in rows]))


def qc_checks(session: Session, window: Window) -> QCChecks:
    """Check by check, how the QC results created in the window went (QCChecks defines each figure)."""
    stored = session.scalars(select(QCResult.checks).where(in_window(QCResult.created_at, window))).all()
    checked: Counter[str] = Counter()
    verdicts: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    with_ranges = unreadable = 0
    for column in stored:
        results, bad = stored_checks(column)
        unreadable += bad
        # One vote per video and check, even if a record lists a check twice: the worst verdict.
        worst: dict[str, CheckResult] = {}
        for check in results:
            if check.name not in worst or _rank(check) > _rank(worst[check.name]):
                worst[check.name] = check
        for name, check in worst.items():
            checked[name] += 1
            verdicts[name][check.verdict] += 1
            if check.verdict != "pass":
                reasons[name][check.reason.strip() or "(no reason given)"] += 1
        if any(c.verdict == "fail" and c.ranges for c in results):
            with_ranges += 1
    rows = [CheckCount(name, checked[name], verdicts[name]["fail"], verdicts[name]["warn"],
                       *_commonest(reasons[name])) for name in checked]  # fmt: skip
    rows.sort(key=lambda c: (-c.failed, -c.warned, c.check))
    return QCChecks(rows, len(stored), with_ranges, unreadable)


def _rank(check: CheckResult) -> int:
    return VERDICTS.index(check.verdict)  # pass < warn < fail


def _commonest(reasons: Counter[str]) -> tuple[str | None, int]:
    """The most frequent reason and its count; on a tie the first in alphabetical order."""
    if not reasons:
        return None, 0
    reason = min(reasons, key=lambda r: (-reasons[r], r))
    return reason, reasons[reason]


def reviews(session: Session, window: Window) -> ReviewFigures:
    rows = session.execute(select(Review.decision, Review.reason_code, Reviewer.username)
                           .join(Reviewer, Review.reviewer_id == Reviewer.id)
                           .where(in_window(Review.decided_at, window))).tuples().all()
    decisions = Counter(decision for decision, _, _ in rows)
    reasons = Counter(reason or "unspecified" for decision, reason, _ in rows
                      if decision.lower() in REJECTIONS)
    per_reviewer: dict[str, list[str]] = defaultdict(list)
    for decision, _, username in rows:
        per_reviewer[username].append(decision.lower())
    reviewers = [ReviewerThroughput(name, len(d), sum(x in APPROVALS for x in d),
                                    sum(x in REJECTIONS for x in d))
                 for name, d in sorted(per_reviewer.items(), key=lambda item: (-len(item[1]), item[0]))]
    return ReviewFigures(dict(sorted(decisions.items())), dict(sorted(reasons.items())), reviewers)


def worker_hours(session: Session, window: Window) -> dict[str, float]:
    """Hours each gang had a long-lived worker up inside the window (unioned per host)."""
    rows = session.scalars(select(GangWorkerRecord).where(GangWorkerRecord.started_at < window.until)).all()
    spans: dict[tuple[str, str], list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for row in rows:
        begin, end = max(row.started_at, window.start), min(row.stopped_at or row.heartbeat_at, window.until)
        if end > begin:
            spans[row.gang, row.host].append((begin, end))
    hours: dict[str, float] = defaultdict(float)
    for (gang, _), found in spans.items():
        hours[gang] += union_hours(found)
    return dict(hours)


def gpu_use(session: Session, window: Window) -> GpuUse:
    overlapping = session.scalars(
        select(GenerationAttempt)
        .where(GenerationAttempt.started_at < window.until,
               or_(GenerationAttempt.ended_at.is_(None), GenerationAttempt.ended_at > window.start))
        .order_by(GenerationAttempt.started_at, GenerationAttempt.id)).all()
    intervals: dict[tuple[str, str], list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    gpu_hours: dict[str, float] = defaultdict(float)
    gpus: dict[str, set[Any]] = defaultdict(set)
    for attempt in overlapping:
        gang = attempt.gang or "(no gang)"
        begin = max(attempt.started_at, window.start)
        end = min(attempt.ended_at or window.until, window.until)  # still running: until the end
        if end <= begin:
            continue
        intervals[gang, attempt.host or ""].append((begin, end))
        gpu_hours[gang] += (end - begin).total_seconds() / 3600 * len(attempt.gpus or [])
        gpus[gang].update(attempt.gpus or [])
    up = worker_hours(session, window)
    gangs = []
    for gang in sorted({g for g, _ in intervals}):
        per_host = [spans for (g, _), spans in intervals.items() if g == gang]
        busy = sum(union_hours(spans) for spans in per_host)
        alive = up.get(gang)
        gangs.append(GangUse(gang, len(gpus[gang]), sum(len(spans) for spans in per_host), busy, gpu_hours[gang],
                             busy / window.hours if window.hours else 0.0, alive,
                             min(1.0, busy / alive) if alive else None))  # fmt: skip
    failed_kinds = Counter(
        kind for kind in session.scalars(
            select(GenerationAttempt.failure_kind)
            .where(in_window(GenerationAttempt.ended_at, window),
                   GenerationAttempt.failure_kind.is_not(None))))
    return GpuUse(sum(gpu_hours.values()), gangs, dict(sorted(failed_kinds.items())))
