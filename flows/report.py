"""The daily production report: figures computed from the database, published three ways.

A report covers one UTC calendar day, `[date 00:00, date+1 00:00)`. For today the covered window
ends now. Everything here is a plain function except the `daily_report` flow at the bottom, so
the figures are tested without Prefect and the CLI builds the same report without a server.

Conventions every figure follows (they are repeated where a figure uses them):

- A *transition* is an event whose `to_state` differs from its `from_state` (`from_state` is None
  for the event that registers an asset). Events with `from_state == to_state` are notes (claims,
  warnings) and never count.
- An asset *entered* a state on a day when a transition into that state happened that day.
  Re-entries from `failed` (an operator re-running a failed stage) are not new output: a
  delivery retried after a failed copy does not make a second approval.
- Output figures count distinct assets. Split speech makes child assets (segments); they are
  assets of their own, so they count too.
- Durations are in seconds. Medians are the usual median (mean of the two middle values for an
  even count); the 95th percentile is the nearest-rank one: the value at rank ceil(0.95·n) of
  the sorted values (with few values it is the maximum).
- Empty days give zero counts and None for rates, medians and ratios; nothing divides by zero.

Formats: a Prefect markdown artifact (key `daily-report`, one version per run, the date in its
description), and under `<data_root>/reports/<date>/` a markdown copy, a self-contained HTML page
(matplotlib charts embedded as base64 PNG data URIs, no external resource) and a CSV with one row
per figure. Files are written atomically and listed in the `reports` table.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import html
import io
import statistics
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from avatarflow.errors import AvatarflowError
from avatarflow.storage import Storage, atomic_write_bytes
from db.models import Asset, Event, GenerationAttempt, QCResult, Review, Reviewer, utcnow
from db.report_models import Report
from db.session import Database
from db.states import TERMINAL, AssetState

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UTC = dt.UTC
S = AssetState

ARTIFACT_KEY = "daily-report"
TREND_DAYS = 14
# Lip-sync histogram: 20 bins of 0.05 over [0, 1]; the gate (0.92 by default) sits in a bin of
# its own width, and the exact share above the gate is reported beside the histogram.
SCORE_EDGES: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))

# Per-stage durations: the time between two consecutive transitions of one asset, named by the
# state it left and the state it entered.
STAGES: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    "preprocess": ("preprocess", frozenset({S.SUBMITTED}), frozenset({S.PREPROCESSED, S.SPLIT})),
    "plan": ("plan", frozenset({S.PREPROCESSED}), frozenset({S.PLANNED})),
    "gpu_queue": ("wait for a GPU", frozenset({S.PLANNED}), frozenset({S.GENERATING})),
    "generate": ("generation", frozenset({S.GENERATING}), frozenset({S.GENERATED})),
    "qc": ("QC", frozenset({S.GENERATED}), frozenset({S.QC_PASSED, S.QC_FAILED, S.REVIEW_PENDING})),
    "review_wait": ("review wait", frozenset({S.REVIEW_PENDING}),
                    frozenset({S.APPROVED, S.REJECTED, S.PLANNED})),
    "deliver": ("delivery", frozenset({S.APPROVED}), frozenset({S.DELIVERED})),
}

# The stage a move into `failed` came from, when neither the event nor the asset says it: the
# state the asset was in names the work that was running.
STAGE_FAILED_FROM: dict[str, str] = {
    S.SUBMITTED: "preprocess", S.PREPROCESSED: "plan", S.PLANNED: "generate",
    S.GENERATING: "generate", S.SPLIT: "assemble", S.GENERATED: "qc", S.QC_PASSED: "route",
    S.APPROVED: "deliver",
}

APPROVALS = frozenset({"approve", "approved"})
REJECTIONS = frozenset({"reject", "rejected"})
# Backlog: every state that is not terminal, in pipeline order (failed included: it needs a person).
BACKLOG_STATES = tuple(state.value for state in AssetState if state not in TERMINAL)


# --- the figures ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """One UTC day: `[start, end)`; `until` is `end`, or now while the day is still going on."""

    day: dt.date
    start: dt.datetime
    end: dt.datetime
    until: dt.datetime

    @classmethod
    def for_day(cls, day: dt.date, now: dt.datetime | None = None) -> Window:
        now = now or utcnow()
        start = dt.datetime.combine(day, dt.time(), tzinfo=UTC)
        end = start + dt.timedelta(days=1)
        if start > now:
            raise AvatarflowError(f"{day} has not begun yet (UTC); a report covers a day that has")
        return cls(day, start, end, min(end, now))

    @property
    def hours(self) -> float:
        """Hours covered: 24 for a past day, fewer for today."""
        return (self.until - self.start).total_seconds() / 3600


@dataclass(frozen=True)
class Spread:
    """How long something took: count, median and nearest-rank 95th percentile, in seconds."""

    count: int
    median_s: float | None
    p95_s: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(len(values), median(values), percentile(values, 95))


@dataclass(frozen=True)
class BacklogState:
    """Assets in one state at the end of the covered window, and how long they have been there.

    Age = end of the covered window − the time of the transition that put the asset in this state.
    """

    state: str
    count: int
    oldest_age_s: float | None
    median_age_s: float | None


@dataclass(frozen=True)
class ScoreDistribution:
    """Lip-sync scores of the QC results recorded that day (results without a score left out).

    `counts[i]` holds scores in `[edges[i], edges[i+1])`; the last bin also holds 1.0.
    `at_or_above_gate` compares each score with its own result's gate (a score equal to the gate
    passes); `gate` is the gate most results used (the higher one on a tie), for display.
    """

    edges: tuple[float, ...]
    counts: list[int]
    scored: int
    gate: float | None
    at_or_above_gate: int
    share_at_or_above_gate: float | None
    median_score: float | None


@dataclass(frozen=True)
class FailureCount:
    stage: str
    kind: str
    count: int


@dataclass(frozen=True)
class Regenerations:
    """Regenerations of the videos delivered that day: generation attempts of the asset − 1.

    Every attempt counts, on any day, failed ones included (an out-of-memory retry costs a GPU
    run as much as a new seed does). `by_count` maps a number of regenerations to how many
    delivered videos needed that many.
    """

    total: int
    mean: float | None
    max: int | None
    by_count: dict[int, int]


@dataclass(frozen=True)
class ReviewerThroughput:
    reviewer: str
    decisions: int
    approved: int
    rejected: int


@dataclass(frozen=True)
class GangUse:
    """One GPU gang's day, from the generation attempts that overlap the covered window.

    `busy_hours`: the union of its attempts' running intervals inside the window (overlapping
    records are not double-counted). `utilisation` = busy_hours / hours covered (24 for a past
    day). `gpu_hours`: Σ attempt hours inside the window × GPUs in the attempt. `gpus`: distinct
    GPU indices its attempts used. An attempt with no end yet counts as running until the end of
    the covered window.
    """

    gang: str
    gpus: int
    attempts: int
    busy_hours: float
    gpu_hours: float
    utilisation: float


@dataclass(frozen=True)
class TrendRow:
    """The main figures of one day, as defined on DailyReport."""

    date: dt.date
    submitted: int
    generated: int
    approved: int
    delivered: int
    rejected: int
    minutes_delivered: float
    qc_pass_rate: float | None
    gpu_hours: float
    backlog: int


@dataclass
class DailyReport:
    """Every figure of one UTC day's production report.

    Output (distinct assets that entered the state that day; re-entries from failed excluded):
      submitted, generated, approved, delivered, rejected.
      minutes_delivered: Σ over assets delivered that day of the speech duration recorded by
        preprocessing, `asset.details["audio"]["duration_s"]` (the muxed video is cut to the
        speech, so this is the video's length), else the `verified.duration_s` stored in the
        config of the asset's latest generation attempt that has one; / 60.
        delivered_without_duration counts delivered assets with neither (they add 0 minutes).
      backlog: per non-terminal state (failed included), the assets in it at the end of the
        covered window (the `to_state` of each asset's last transition before then) and their
        age in that state; backlog_total sums them.
    Quality:
      qc_decisions: transitions generated → qc_passed / qc_failed / review_pending that day (each
        QC run counts, so a regenerated video is judged again); qc_passed, qc_failed and
        qc_borderline (→ review_pending) split them; qc_pass_rate = qc_passed / qc_decisions.
        Sampling a passed video for review (qc_passed → review_pending) is not a QC decision.
      lip_sync: see ScoreDistribution (QC results created that day).
      failures: moves into failed that day by (stage, kind). stage: the event's
        data["failed_stage"], else the asset's failed_stage while that move is still its latest
        transition, else the state it failed from (STAGE_FAILED_FROM). kind: the event's
        data["failure_kind"] / ["kind"] / ["code"], else for generate the failure_kind of the
        asset's latest attempt started before the move, else "unspecified".
      attempt_failures: generation attempts that ended that day with a failure_kind, by kind
        (some were retried without the asset ever failing).
      regenerations: see Regenerations.
      review_decisions: Review rows decided that day, by decision; rejection_reasons: their
        reason_code ("unspecified" when empty) for decisions reject/rejected.
      reviewers: decisions per reviewer that day (approve/approved and reject/rejected split out).
    Time and cost:
      stage_durations: per stage in STAGES, the durations of the stage intervals that ended that
        day: the time between an asset's transition into the stage's state and its next
        transition, when that next transition goes where the stage leads. Intervals that began
        on an earlier day count in full (the day they finished).
      submission_to_delivery: for assets delivered that day, delivery time − registration time
        (the event with no from_state; the asset's created_at when that is missing).
      gpu_hours: Σ over generation attempts of (hours of the attempt inside the covered window)
        × number of GPUs in the attempt (CPU-engine attempts list no GPUs and add 0).
      gpu_hours_per_delivered_minute: gpu_hours / minutes_delivered of the same day (the GPU time
        spent that day, not the GPU time of the videos delivered that day); None without
        delivered minutes.
      gangs: see GangUse.
    Trend: TrendRow for each of the TREND_DAYS days ending with this one, oldest first.
    """

    date: dt.date
    window_start: dt.datetime
    window_end: dt.datetime
    generated_at: dt.datetime
    # output
    submitted: int
    generated: int
    approved: int
    delivered: int
    rejected: int
    minutes_delivered: float
    delivered_without_duration: int
    backlog: list[BacklogState]
    backlog_total: int
    # quality
    qc_decisions: int
    qc_passed: int
    qc_failed: int
    qc_borderline: int
    qc_pass_rate: float | None
    lip_sync: ScoreDistribution
    failures: list[FailureCount]
    attempt_failures: dict[str, int]
    regenerations: Regenerations
    review_decisions: dict[str, int]
    rejection_reasons: dict[str, int]
    reviewers: list[ReviewerThroughput]
    # time and cost
    stage_durations: dict[str, Spread]
    submission_to_delivery: Spread
    gpu_hours: float
    gpu_hours_per_delivered_minute: float | None
    gangs: list[GangUse]
    trend: list[TrendRow] = field(default_factory=list)

    def trend_row(self) -> TrendRow:
        return TrendRow(self.date, self.submitted, self.generated, self.approved, self.delivered,
                        self.rejected, self.minutes_delivered, self.qc_pass_rate, self.gpu_hours,
                        self.backlog_total)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], percent: int) -> float | None:
    """Nearest rank: the value at rank ceil(percent/100 · n) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))  # integer ceil: no float rounding at n·0.95
    return ordered[rank - 1]


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# --- reading the database ---------------------------------------------------------------------

def _is_transition() -> Any:
    return and_(Event.to_state.is_not(None),
                or_(Event.from_state.is_(None), Event.from_state != Event.to_state))


def _in_window(column: Any, window: Window) -> Any:
    return and_(column >= window.start, column < window.end)


def _history(session: Session, window: Window) -> tuple[dict[int, list[Event]], dict[int, Asset]]:
    """Every transition (all time, oldest first) of the assets that had one in the window."""
    touched = (select(Event.asset_id)
               .where(_in_window(Event.at, window), _is_transition())
               .distinct())
    history: dict[int, list[Event]] = defaultdict(list)
    for event in session.scalars(select(Event)
                                 .where(Event.asset_id.in_(touched), _is_transition())
                                 .order_by(Event.asset_id, Event.at, Event.id)):
        history[event.asset_id].append(event)
    assets = {a.id: a for a in session.scalars(select(Asset).where(Asset.id.in_(touched)))}
    return history, assets


def _attempts_by_asset(session: Session, asset_ids: Iterable[int]) -> dict[int, list[GenerationAttempt]]:
    ids = sorted(set(asset_ids))
    found: dict[int, list[GenerationAttempt]] = defaultdict(list)
    if not ids:
        return found
    for attempt in session.scalars(select(GenerationAttempt)
                                   .where(GenerationAttempt.asset_id.in_(ids))
                                   .order_by(GenerationAttempt.asset_id, GenerationAttempt.number)):
        found[attempt.asset_id].append(attempt)
    return found


def _entries(history: dict[int, list[Event]], window: Window) -> dict[str, dict[int, Event]]:
    """state → {asset id → the first transition into it that day}, re-runs from failed excluded."""
    entered: dict[str, dict[int, Event]] = defaultdict(dict)
    for asset_id, events in history.items():
        for event in events:
            if window.start <= event.at < window.end and event.from_state != S.FAILED:
                entered[event.to_state].setdefault(asset_id, event)
    return entered


def delivered_duration_s(asset: Asset, attempts: Sequence[GenerationAttempt]) -> float | None:
    """The delivered video's length: the preprocessed speech, else the verified generator output."""
    audio = (asset.details or {}).get("audio") or {}
    if isinstance(audio.get("duration_s"), (int, float)):
        return float(audio["duration_s"])
    for attempt in sorted(attempts, key=lambda a: a.number, reverse=True):
        verified = (attempt.config or {}).get("verified") or {}
        if isinstance(verified.get("duration_s"), (int, float)):
            return float(verified["duration_s"])
    return None


def _backlog(session: Session, window: Window) -> list[BacklogState]:
    """Each asset's state at the end of the window: its last transition before then."""
    ranked = (select(Event.asset_id, Event.to_state, Event.at,
                     func.row_number().over(partition_by=Event.asset_id,
                                            order_by=(Event.at.desc(), Event.id.desc())).label("rn"))
              .where(Event.at < window.until, _is_transition())
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


def _failures(window: Window, history: dict[int, list[Event]],
              assets: dict[int, Asset], attempts: dict[int, list[GenerationAttempt]]) -> list[FailureCount]:
    counts: Counter[tuple[str, str]] = Counter()
    for asset_id, events in history.items():
        for event in events:
            if event.to_state != S.FAILED or not window.start <= event.at < window.end:
                continue
            data = event.data or {}
            asset = assets[asset_id]
            stage = data.get("failed_stage")
            if not stage and asset.state == S.FAILED and events[-1] is event:
                stage = asset.failed_stage
            stage = stage or STAGE_FAILED_FROM.get(event.from_state or "", event.from_state or "unknown")
            kind = data.get("failure_kind") or data.get("kind") or data.get("code")
            if not kind and stage in ("generate", "verify"):
                earlier = [a for a in attempts.get(asset_id, []) if a.started_at <= event.at]
                kind = earlier[-1].failure_kind if earlier else None
            counts[(str(stage), str(kind or "unspecified"))] += 1
    return [FailureCount(stage, kind, n) for (stage, kind), n in sorted(counts.items())]


def _lip_sync(session: Session, window: Window) -> ScoreDistribution:
    rows = session.execute(select(QCResult.score, QCResult.gate)
                           .where(_in_window(QCResult.created_at, window), QCResult.score.is_not(None))
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


def _reviews(session: Session, window: Window) -> tuple[dict[str, int], dict[str, int], list[ReviewerThroughput]]:
    rows = session.execute(select(Review.decision, Review.reason_code, Reviewer.username)
                           .join(Reviewer, Review.reviewer_id == Reviewer.id)
                           .where(_in_window(Review.decided_at, window))).tuples().all()
    decisions = Counter(decision for decision, _, _ in rows)
    reasons = Counter(reason or "unspecified" for decision, reason, _ in rows
                      if decision.lower() in REJECTIONS)
    per_reviewer: dict[str, list[str]] = defaultdict(list)
    for decision, _, username in rows:
        per_reviewer[username].append(decision.lower())
    reviewers = [ReviewerThroughput(name, len(d), sum(x in APPROVALS for x in d),
                                    sum(x in REJECTIONS for x in d))
                 for name, d in sorted(per_reviewer.items(), key=lambda item: (-len(item[1]), item[0]))]
    return dict(sorted(decisions.items())), dict(sorted(reasons.items())), reviewers


def _stage_durations(history: dict[int, list[Event]], window: Window) -> dict[str, Spread]:
    durations: dict[str, list[float]] = {name: [] for name in STAGES}
    for events in history.values():
        for previous, current in pairwise(events):
            if not window.start <= current.at < window.end or current.from_state != previous.to_state:
                continue
            for name, (_label, sources, targets) in STAGES.items():
                if previous.to_state in sources and current.to_state in targets:
                    durations[name].append((current.at - previous.at).total_seconds())
    return {name: Spread.of(values) for name, values in durations.items()}


def _gpu_use(session: Session, window: Window) -> tuple[float, list[GangUse], dict[str, int]]:
    """GPU-hours, per-gang use, and failed attempts by kind for the window."""
    overlapping = session.scalars(
        select(GenerationAttempt)
        .where(GenerationAttempt.started_at < window.until,
               or_(GenerationAttempt.ended_at.is_(None), GenerationAttempt.ended_at > window.start))
        .order_by(GenerationAttempt.started_at, GenerationAttempt.id)).all()
    intervals: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    gpu_hours: dict[str, float] = defaultdict(float)
    gpus: dict[str, set[Any]] = defaultdict(set)
    for attempt in overlapping:
        gang = attempt.gang or "(no gang)"
        begin = max(attempt.started_at, window.start)
        end = min(attempt.ended_at or window.until, window.until)
        if end <= begin:
            continue
        intervals[gang].append((begin, end))
        gpu_hours[gang] += (end - begin).total_seconds() / 3600 * len(attempt.gpus or [])
        gpus[gang].update(attempt.gpus or [])
    gangs = []
    for gang in sorted(intervals):
        busy = _union_hours(intervals[gang])
        gangs.append(GangUse(gang, len(gpus[gang]), len(intervals[gang]), busy, gpu_hours[gang],
                             busy / window.hours if window.hours else 0.0))
    failed_kinds = Counter(
        kind for kind in session.scalars(
            select(GenerationAttempt.failure_kind)
            .where(_in_window(GenerationAttempt.ended_at, window),
                   GenerationAttempt.failure_kind.is_not(None))))
    return sum(gpu_hours.values()), gangs, dict(sorted(failed_kinds.items()))


def _union_hours(intervals: list[tuple[dt.datetime, dt.datetime]]) -> float:
    total = 0.0
    current_start: dt.datetime | None = None
    current_end: dt.datetime | None = None
    for begin, end in sorted(intervals):
        if current_end is None or begin > current_end:
            if current_end is not None and current_start is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = begin, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += (current_end - current_start).total_seconds()
    return total / 3600


def compute_day(session: Session, day: dt.date, *, now: dt.datetime | None = None) -> DailyReport:
    """All of one day's figures (DailyReport documents each), without the trend."""
    window = Window.for_day(day, now)
    history, assets = _history(session, window)
    entered = _entries(history, window)
    delivered = entered.get(S.DELIVERED, {})
    attempts = _attempts_by_asset(session, history.keys())

    durations = {asset_id: delivered_duration_s(assets[asset_id], attempts.get(asset_id, []))
                 for asset_id in delivered}
    seconds_delivered = sum(d for d in durations.values() if d is not None)
    minutes_delivered = seconds_delivered / 60

    qc_moves = [e for events in history.values() for e in events
                if window.start <= e.at < window.end and e.from_state == S.GENERATED
                and e.to_state in (S.QC_PASSED, S.QC_FAILED, S.REVIEW_PENDING)]
    qc_by_outcome = Counter(e.to_state for e in qc_moves)

    regens = [max(len(attempts.get(asset_id, [])) - 1, 0) for asset_id in delivered]

    submitted_at: dict[int, dt.datetime] = {}
    for asset_id in delivered:
        first = next((e for e in history[asset_id] if e.from_state is None), None)
        submitted_at[asset_id] = first.at if first else assets[asset_id].created_at

    backlog = _backlog(session, window)
    decisions, reasons, reviewers = _reviews(session, window)
    gpu_hours, gangs, attempt_failures = _gpu_use(session, window)
    return DailyReport(
        date=day, window_start=window.start, window_end=window.until, generated_at=utcnow(),
        submitted=len(entered.get(S.SUBMITTED, {})), generated=len(entered.get(S.GENERATED, {})),
        approved=len(entered.get(S.APPROVED, {})), delivered=len(delivered),
        rejected=len(entered.get(S.REJECTED, {})),
        minutes_delivered=minutes_delivered,
        delivered_without_duration=sum(d is None for d in durations.values()),
        backlog=backlog, backlog_total=sum(b.count for b in backlog),
        qc_decisions=len(qc_moves), qc_passed=qc_by_outcome[S.QC_PASSED],
        qc_failed=qc_by_outcome[S.QC_FAILED], qc_borderline=qc_by_outcome[S.REVIEW_PENDING],
        qc_pass_rate=ratio(qc_by_outcome[S.QC_PASSED], len(qc_moves)),
        lip_sync=_lip_sync(session, window),
        failures=_failures(window, history, assets, attempts),
        attempt_failures=attempt_failures,
        regenerations=Regenerations(sum(regens), ratio(sum(regens), len(regens)),
                                    max(regens) if regens else None,
                                    dict(sorted(Counter(regens).items()))),
        review_decisions=decisions, rejection_reasons=reasons, reviewers=reviewers,
        stage_durations=_stage_durations(history, window),
        submission_to_delivery=Spread.of([(event.at - submitted_at[asset_id]).total_seconds()
                                          for asset_id, event in delivered.items()]),
        gpu_hours=gpu_hours,
        gpu_hours_per_delivered_minute=ratio(gpu_hours, minutes_delivered),
        gangs=gangs,
    )


def build_report(session: Session, day: dt.date, *, now: dt.datetime | None = None,
                 trend_days: int = TREND_DAYS) -> DailyReport:
    """The day's report with its trend: the main figures of the `trend_days` days ending with it.

    Each trend day is computed exactly as a report of its own, so a trend row always equals the
    figures of that day's report.
    """
    report = compute_day(session, day, now=now)
    for back in range(trend_days - 1, 0, -1):
        report.trend.append(compute_day(session, day - dt.timedelta(days=back), now=now).trend_row())
    report.trend.append(report.trend_row())
    return report


def parse_day(text: str | None, *, now: dt.datetime | None = None) -> dt.date:
    """`YYYY-MM-DD`, or yesterday (UTC) when not given."""
    if not text:
        return ((now or utcnow()).astimezone(UTC) - dt.timedelta(days=1)).date()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise AvatarflowError(f"a report date is YYYY-MM-DD (a UTC day), not {text!r}") from None


# --- presentation helpers ---------------------------------------------------------------------

def fmt_duration(seconds: float | None) -> str:
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


def _bin_label(edges: Sequence[float], index: int) -> str:
    return f"{edges[index]:.2f}–{edges[index + 1]:.2f}"


# --- CSV --------------------------------------------------------------------------------------

def report_rows(report: DailyReport) -> list[tuple[str, str, str, Any, str]]:
    """Every figure as (section, figure, key, value, unit); None values stay None."""
    rows: list[tuple[str, str, str, Any, str]] = []
    add = rows.append
    for name in ("submitted", "generated", "approved", "delivered", "rejected"):
        add(("output", name, "", getattr(report, name), "assets"))
    add(("output", "minutes_delivered", "", report.minutes_delivered, "min"))
    add(("output", "delivered_without_duration", "", report.delivered_without_duration, "assets"))
    add(("backlog", "total", "", report.backlog_total, "assets"))
    for b in report.backlog:
        add(("backlog", "assets", b.state, b.count, "assets"))
        add(("backlog", "oldest_age", b.state, b.oldest_age_s, "s"))
        add(("backlog", "median_age", b.state, b.median_age_s, "s"))
    for name in ("qc_decisions", "qc_passed", "qc_failed", "qc_borderline"):
        add(("quality", name, "", getattr(report, name), "videos"))
    add(("quality", "qc_pass_rate", "", report.qc_pass_rate, "ratio"))
    ls = report.lip_sync
    add(("lip_sync", "scored", "", ls.scored, "videos"))
    add(("lip_sync", "gate", "", ls.gate, "score"))
    add(("lip_sync", "median_score", "", ls.median_score, "score"))
    add(("lip_sync", "at_or_above_gate", "", ls.at_or_above_gate, "videos"))
    add(("lip_sync", "share_at_or_above_gate", "", ls.share_at_or_above_gate, "ratio"))
    for i, count in enumerate(ls.counts):
        add(("lip_sync", "histogram", _bin_label(ls.edges, i), count, "videos"))
    for f in report.failures:
        add(("failures", "assets_failed", f"{f.stage}/{f.kind}", f.count, "assets"))
    for kind, count in report.attempt_failures.items():
        add(("failures", "attempts_failed", kind, count, "attempts"))
    rg = report.regenerations
    add(("regenerations", "total", "", rg.total, "attempts"))
    add(("regenerations", "mean_per_delivered", "", rg.mean, "attempts"))
    add(("regenerations", "max", "", rg.max, "attempts"))
    for n, count in rg.by_count.items():
        add(("regenerations", "delivered_videos", str(n), count, "videos"))
    for decision, count in report.review_decisions.items():
        add(("reviews", "decisions", decision, count, "reviews"))
    for reason, count in report.rejection_reasons.items():
        add(("reviews", "rejection_reasons", reason, count, "reviews"))
    for r in report.reviewers:
        add(("reviewers", "decisions", r.reviewer, r.decisions, "reviews"))
        add(("reviewers", "approved", r.reviewer, r.approved, "reviews"))
        add(("reviewers", "rejected", r.reviewer, r.rejected, "reviews"))
    for name, spread in report.stage_durations.items():
        add(("stages", "count", name, spread.count, "intervals"))
        add(("stages", "median", name, spread.median_s, "s"))
        add(("stages", "p95", name, spread.p95_s, "s"))
    sd = report.submission_to_delivery
    add(("time", "submission_to_delivery_count", "", sd.count, "videos"))
    add(("time", "submission_to_delivery_median", "", sd.median_s, "s"))
    add(("time", "submission_to_delivery_p95", "", sd.p95_s, "s"))
    add(("cost", "gpu_hours", "", report.gpu_hours, "GPU-h"))
    add(("cost", "gpu_hours_per_delivered_minute", "", report.gpu_hours_per_delivered_minute, "GPU-h/min"))
    for g in report.gangs:
        add(("gangs", "gpus", g.gang, g.gpus, "GPUs"))
        add(("gangs", "attempts", g.gang, g.attempts, "attempts"))
        add(("gangs", "busy_hours", g.gang, g.busy_hours, "h"))
        add(("gangs", "gpu_hours", g.gang, g.gpu_hours, "GPU-h"))
        add(("gangs", "utilisation", g.gang, g.utilisation, "ratio"))
    for t in report.trend:
        for name in ("submitted", "generated", "approved", "delivered", "rejected",
                     "minutes_delivered", "qc_pass_rate", "gpu_hours", "backlog"):
            add(("trend", name, t.date.isoformat(), getattr(t, name), ""))
    return rows


def render_csv(report: DailyReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "section", "figure", "key", "value", "unit"])
    for section, figure, key, value, unit in report_rows(report):
        writer.writerow([report.date.isoformat(), section, figure, key, "" if value is None else value, unit])
    return out.getvalue()


# --- markdown ---------------------------------------------------------------------------------

def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: DailyReport) -> str:
    r = report
    ls = r.lip_sync
    parts = [
        f"# Daily production report — {r.date.isoformat()} (UTC)",
        (f"Covered {r.window_start:%Y-%m-%d %H:%M} → {r.window_end:%Y-%m-%d %H:%M} UTC · "
         f"built {r.generated_at:%Y-%m-%d %H:%M} UTC"),
        "## Output",
        _md_table(["submitted", "generated", "approved", "delivered", "rejected", "minutes delivered"],
                  [[r.submitted, r.generated, r.approved, r.delivered, r.rejected,
                    fmt_num(r.minutes_delivered, 1)]]),
        f"**Backlog at end of day: {r.backlog_total} asset(s)**"
        + (f" ({r.delivered_without_duration} delivered video(s) had no recorded duration)"
           if r.delivered_without_duration else ""),
        _md_table(["state", "assets", "oldest", "median age"],
                  [[b.state, b.count, fmt_duration(b.oldest_age_s), fmt_duration(b.median_age_s)]
                   for b in r.backlog if b.count]) if r.backlog_total else "_No backlog._",
        "## Quality",
        (f"QC pass rate **{fmt_pct(r.qc_pass_rate)}**: {r.qc_passed} passed, {r.qc_failed} "
         f"failed, {r.qc_borderline} borderline of {r.qc_decisions} QC decision(s)."),
        (f"Lip-sync: {ls.scored} scored video(s), median {fmt_num(ls.median_score)}, "
         f"**{fmt_pct(ls.share_at_or_above_gate)}** at or above the gate {fmt_num(ls.gate)}."),
    ]
    if ls.scored:
        parts.append(_md_table(["score", "videos"], [[_bin_label(ls.edges, i), c]
                                                    for i, c in enumerate(ls.counts) if c]))
    parts.append("**Failures** (assets moved to failed)")
    parts.append(_md_table(["stage", "kind", "assets"], [[f.stage, f.kind, f.count] for f in r.failures])
                 if r.failures else "_None._")
    if r.attempt_failures:
        parts.append("Failed generation attempts: " + ", ".join(
            f"{kind} × {count}" for kind, count in r.attempt_failures.items()))
    rg = r.regenerations
    parts.append(f"Regenerations per delivered video: mean {fmt_num(rg.mean)}, max "
                 f"{rg.max if rg.max is not None else '–'}, total {rg.total}.")
    parts.append("**Reviews**: " + (", ".join(f"{d} {n}" for d, n in r.review_decisions.items())
                                    or "none") + (" · rejection reasons: " + ", ".join(
        f"{reason} {n}" for reason, n in r.rejection_reasons.items()) if r.rejection_reasons else ""))
    if r.reviewers:
        parts.append(_md_table(["reviewer", "decisions", "approved", "rejected"],
                               [[x.reviewer, x.decisions, x.approved, x.rejected] for x in r.reviewers]))
    parts.append("## Time and cost")
    parts.append(_md_table(["stage", "intervals", "median", "p95"],
                           [[STAGES[name][0], s.count, fmt_duration(s.median_s), fmt_duration(s.p95_s)]
                            for name, s in r.stage_durations.items()]
                           + [["submission → delivery", r.submission_to_delivery.count,
                               fmt_duration(r.submission_to_delivery.median_s),
                               fmt_duration(r.submission_to_delivery.p95_s)]]))
    parts.append(f"GPU-hours used **{fmt_num(r.gpu_hours)}** · per delivered minute "
                 f"**{fmt_num(r.gpu_hours_per_delivered_minute)}**")
    if r.gangs:
        parts.append(_md_table(["gang", "GPUs", "jobs", "busy h", "GPU-hours", "utilisation"],
                               [[g.gang, g.gpus, g.attempts, fmt_num(g.busy_hours), fmt_num(g.gpu_hours),
                                 fmt_pct(g.utilisation)] for g in r.gangs]))
    parts.append(f"## Trend (last {len(r.trend)} days)")
    parts.append(_md_table(["date", "submitted", "generated", "approved", "delivered", "rejected",
                            "minutes", "QC pass", "GPU-h", "backlog"],
                           [[t.date.isoformat(), t.submitted, t.generated, t.approved, t.delivered,
                             t.rejected, fmt_num(t.minutes_delivered, 1), fmt_pct(t.qc_pass_rate),
                             fmt_num(t.gpu_hours, 1), t.backlog] for t in r.trend]))
    parts.append("_Figures are defined in the docstring of `flows.report.DailyReport` and at the "
                 "end of the HTML report._")
    return "\n\n".join(parts) + "\n"


# --- HTML with charts -------------------------------------------------------------------------

DEFINITIONS: list[tuple[str, str]] = [
    ("Day", "A UTC calendar day, 00:00 to 24:00 (to now for today)."),
    ("Submitted … rejected",
     ("Distinct assets that entered the state that day; re-runs out of failed do not count "
      "again. Segments of split speech are assets of their own.")),
    ("Minutes delivered",
     ("Speech length recorded by preprocessing (the video is cut to it) of the assets delivered "
      "that day, else the generator's verified duration.")),
    ("Backlog",
     ("Assets whose last transition before the end of the day left them in a non-terminal state "
      "(failed included); age = time since they entered that state.")),
    ("QC pass rate",
     ("QC decisions that passed ÷ all QC decisions (pass, fail, borderline) that day; each QC "
      "run counts.")),
    ("Lip-sync share at gate",
     ("QC results of the day with a score at or above their own gate ÷ all scored results of "
      "the day.")),
    ("Failures",
     ("Moves into failed that day, by stage and kind; failed generation attempts are listed "
      "separately (some were retried without the asset failing).")),
    ("Regenerations", "Generation attempts − 1 for each video delivered that day."),
    ("Stage durations",
     ("Time between an asset's transition into a stage and its next transition, for intervals "
      "that ended that day; median and nearest-rank 95th percentile.")),
    ("GPU-hours", "Σ attempt hours inside the day × GPUs in the attempt."),
    ("GPU utilisation", "Union of a gang's attempt intervals inside the day ÷ hours covered (24)."),
]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330;line-height:1.4}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 12px;border-bottom:2px solid #d8dce3;
 padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px;color:#3b4456}
.sub{color:#5b6475;font-size:13px}
.kpis{display:grid;grid-template-columns:repeat(5,1fr);gap:10px;margin-top:18px}
.kpi{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpi .v{font-size:24px;font-weight:650}.kpi .l{font-size:12px;color:#5b6475;text-transform:uppercase;
 letter-spacing:.03em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:18px;align-items:start}
.card{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:4px 8px;border-bottom:1px solid #e6e8ec;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eef0f4;font-weight:600}
img{max-width:100%;display:block;margin:4px auto}
.muted{color:#8a93a3}dl{font-size:13px;display:grid;grid-template-columns:220px 1fr;gap:4px 14px}
dt{font-weight:600}dd{margin:0}
.card>h3:first-child{margin-top:2px}
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_figure(width: float, height: float) -> Figure:
    # The object API, not pyplot: no global state, no GUI backend, safe in worker threads.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def _no_data(ax: Any, text: str = "no data for this day") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#8a93a3", fontsize=12,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)


def chart_trend(report: DailyReport) -> str:
    fig = _new_figure(10.5, 2.9)
    axes = fig.subplots(1, 3)
    labels = [t.date.strftime("%m-%d") for t in report.trend]
    x = list(range(len(labels)))
    ax = axes[0]
    ax.bar([i - 0.2 for i in x], [t.submitted for t in report.trend], width=0.4, label="submitted",
           color="#9db4d6")
    ax.bar([i + 0.2 for i in x], [t.delivered for t in report.trend], width=0.4, label="delivered",
           color="#2f6db5")
    ax.set_title("assets per day", fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    ax.yaxis.get_major_locator().set_params(integer=True)
    axes[1].plot(x, [t.minutes_delivered for t in report.trend], marker="o", color="#2a9d6f")
    axes[1].set_title("minutes delivered", fontsize=11)
    axes[2].plot(x, [t.gpu_hours for t in report.trend], marker="o", color="#c0603a")
    axes[2].set_title("GPU-hours", fontsize=11)
    tops = [max([max(t.submitted, t.delivered) for t in report.trend] + [0]),
            max([t.minutes_delivered for t in report.trend] + [0]),
            max([t.gpu_hours for t in report.trend] + [0])]
    for ax, top in zip(axes, tops):
        ax.set_xticks(x[::2], labels[::2], rotation=45, fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_ylim(0, max(top, 1) * 1.15)  # an all-zero fortnight still gets a sane axis
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_lip_sync(report: DailyReport) -> str:
    ls = report.lip_sync
    fig = _new_figure(5.2, 2.9)
    ax = fig.subplots()
    if not ls.scored:
        _no_data(ax, "no lip-sync scores this day")
        return _png(fig)
    width = ls.edges[1] - ls.edges[0]
    # Bins wholly at or above the gate pass, wholly below fail; the bin holding the gate is mixed.
    gate = ls.gate if ls.gate is not None else 2.0
    colours = ["#2a9d6f" if left >= gate else "#c9553a" if left + width <= gate else "#e0a43a"
               for left in ls.edges[:-1]]
    ax.bar(ls.edges[:-1], ls.counts, width=width, align="edge", color=colours, edgecolor="white")
    top = max(ls.counts)
    if ls.gate is not None:
        ax.axvline(ls.gate, color="#1d2330", linestyle="--", linewidth=1.2)
        ax.text(ls.gate - 0.01, top * 1.22, f"gate {ls.gate:.2f}", fontsize=9, va="top", ha="right",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    # Zoom on where the scores are (they crowd near 1), but never hide the gate.
    first = next(i for i, c in enumerate(ls.counts) if c)
    left = min(0.5, ls.edges[first], ls.gate if ls.gate is not None else 1.0)
    ax.set_xlim(left, 1)
    ax.set_ylim(0, top * 1.3)
    ax.set_xlabel("lip-sync score (calibrated probability in sync)", fontsize=9)
    ax.set_ylabel("videos", fontsize=9)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_backlog(report: DailyReport) -> str:
    rows = [b for b in report.backlog if b.count]
    fig = _new_figure(5.2, max(1.8, 0.42 * len(rows) + 0.9))
    ax = fig.subplots()
    if not rows:
        _no_data(ax, "no backlog at the end of the day")
        return _png(fig)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [b.count for b in rows], color="#2f6db5")
    ax.set_yticks(y, [b.state for b in rows], fontsize=9)
    top = max(b.count for b in rows)
    for yi, b in zip(y, rows):
        ax.text(b.count + top * 0.02, yi, f"{b.count} · oldest {fmt_duration(b.oldest_age_s)}",
                va="center", fontsize=8)
    ax.set_xlim(0, top * 1.9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("assets", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_stages(report: DailyReport) -> str:
    rows = [(STAGES[name][0], s) for name, s in report.stage_durations.items() if s.count]
    if report.submission_to_delivery.count:
        rows.append(("submission → delivery", report.submission_to_delivery))
    fig = _new_figure(5.2, max(1.8, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    if not rows:
        _no_data(ax, "no stage finished this day")
        return _png(fig)
    # Log scale in minutes: QC takes minutes and a GPU queue can take days; on a linear axis the
    # short stages vanish. Bars start at `low` because a log axis has no zero.
    medians = [(s.median_s or 0) / 60 for _, s in rows]
    p95s = [(s.p95_s or 0) / 60 for _, s in rows]
    low = min([1.0] + [v / 2 for v in medians + p95s if v > 0])
    high = max(p95s + [low * 10]) * 6
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [max(v, low) - low for v in p95s], left=low, color="#c8d6ea", label="95th percentile",
            height=0.7)
    ax.barh(y, [max(v, low) - low for v in medians], left=low, color="#2f6db5", label="median",
            height=0.4)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [(t, label) for t, label in ((1, "1 min"), (10, "10 min"), (60, "1 h"), (360, "6 h"),
                                         (1440, "1 d"), (10080, "1 wk")) if low <= t <= high]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_yticks(y, [label for label, _ in rows], fontsize=9)
    for yi, (_, s), p95 in zip(y, rows, p95s):
        ax.text(max(p95, low) * 1.15, yi, f"{fmt_duration(s.median_s)} / {fmt_duration(s.p95_s)}",
                va="center", fontsize=8)
    ax.set_xlabel("median / 95th percentile (log scale)", fontsize=9)
    fig.legend(fontsize=8, frameon=False, loc="outside upper center", ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_gangs(report: DailyReport) -> str:
    fig = _new_figure(5.2, max(1.8, 0.45 * len(report.gangs) + 1.0))
    ax = fig.subplots()
    if not report.gangs:
        _no_data(ax, "no GPU work this day")
        return _png(fig)
    y = list(range(len(report.gangs)))[::-1]
    ax.barh(y, [100.0] * len(y), color="#eceef2", height=0.6)
    ax.barh(y, [g.utilisation * 100 for g in report.gangs], color="#c0603a", height=0.6)
    ax.set_yticks(y, [f"{g.gang} ({g.gpus} GPU{'s' if g.gpus != 1 else ''})" for g in report.gangs],
                  fontsize=9)
    for yi, g in zip(y, report.gangs):
        ax.text(101, yi, f"{g.utilisation * 100:.1f}% · {g.busy_hours:.1f} h busy", va="center",
                fontsize=8)
    ax.set_xlim(0, 150)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("busy share of the day (%)", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "none") -> str:
    if not rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: DailyReport) -> str:
    """One self-contained page: inline CSS, charts as data URIs, no script, no external resource."""
    r = report
    ls = r.lip_sync
    rg = r.regenerations
    kpis = [
        ("submitted", r.submitted), ("generated", r.generated), ("approved", r.approved),
        ("delivered", r.delivered), ("rejected", r.rejected),
        ("minutes delivered", fmt_num(r.minutes_delivered, 1)), ("QC pass rate", fmt_pct(r.qc_pass_rate)),
        ("GPU-hours", fmt_num(r.gpu_hours, 1)),
        ("GPU-h per delivered min", fmt_num(r.gpu_hours_per_delivered_minute)),
        ("backlog", r.backlog_total),
    ]
    kpi_html = "".join(f'<div class="kpi"><div class="v">{html.escape(str(v))}</div>'
                       f'<div class="l">{html.escape(label)}</div></div>' for label, v in kpis)
    img = '<img alt="{alt}" src="{src}">'
    stage_rows = [[STAGES[name][0], s.count, fmt_duration(s.median_s), fmt_duration(s.p95_s)]
                  for name, s in r.stage_durations.items()]
    stage_rows.append(["submission → delivery", r.submission_to_delivery.count,
                       fmt_duration(r.submission_to_delivery.median_s),
                       fmt_duration(r.submission_to_delivery.p95_s)])
    sections = f"""
<h2>Output</h2>
<div class="grid">
 <div class="card"><h3>Backlog at the end of the day: {r.backlog_total} asset(s)</h3>
  {_html_table(["state", "assets", "oldest", "median age"],
               [[b.state, b.count, fmt_duration(b.oldest_age_s), fmt_duration(b.median_age_s)]
                for b in r.backlog if b.count], "no backlog")}
  {f'<p class="muted">{r.delivered_without_duration} delivered video(s) had no recorded duration.</p>'
   if r.delivered_without_duration else ''}
 </div>
 <div class="card">{img.format(alt="backlog by state", src=chart_backlog(r))}</div>
</div>
<h2>Quality</h2>
<div class="grid">
 <div class="card"><h3>QC pass rate: {fmt_pct(r.qc_pass_rate)}</h3>
  {_html_table(["QC decisions", "passed", "failed", "borderline"],
               [[r.qc_decisions, r.qc_passed, r.qc_failed, r.qc_borderline]])}
  <h3>Lip-sync: {fmt_pct(ls.share_at_or_above_gate)} at or above the gate {fmt_num(ls.gate)}</h3>
  <p class="sub">{ls.scored} scored video(s), median score {fmt_num(ls.median_score)}.</p>
  <h3>Regenerations per delivered video</h3>
  {_html_table(["mean", "max", "total"], [[fmt_num(rg.mean), rg.max if rg.max is not None else "–",
                                           rg.total]])}
 </div>
 <div class="card">{img.format(alt="lip-sync score distribution", src=chart_lip_sync(r))}</div>
 <div class="card"><h3>Failures (assets moved to failed)</h3>
  {_html_table(["stage", "kind", "assets"], [[f.stage, f.kind, f.count] for f in r.failures])}
  <h3>Failed generation attempts</h3>
  {_html_table(["kind", "attempts"], list(r.attempt_failures.items()))}
 </div>
 <div class="card"><h3>Reviews</h3>
  {_html_table(["decision", "reviews"], list(r.review_decisions.items()), "no review decisions")}
  <h3>Rejection reasons</h3>
  {_html_table(["reason", "reviews"], list(r.rejection_reasons.items()))}
  <h3>Reviewers</h3>
  {_html_table(["reviewer", "decisions", "approved", "rejected"],
               [[x.reviewer, x.decisions, x.approved, x.rejected] for x in r.reviewers])}
 </div>
</div>
<h2>Time and cost</h2>
<div class="grid">
 <div class="card"><h3>Stage durations (intervals that ended this day)</h3>
  {_html_table(["stage", "intervals", "median", "p95"], stage_rows)}</div>
 <div class="card">{img.format(alt="stage durations", src=chart_stages(r))}</div>
 <div class="card"><h3>GPU: {fmt_num(r.gpu_hours)} GPU-hours,
  {fmt_num(r.gpu_hours_per_delivered_minute)} per delivered minute</h3>
  {_html_table(["gang", "GPUs", "jobs", "busy h", "GPU-hours", "utilisation"],
               [[g.gang, g.gpus, g.attempts, fmt_num(g.busy_hours), fmt_num(g.gpu_hours),
                 fmt_pct(g.utilisation)] for g in r.gangs], "no GPU work")}</div>
 <div class="card">{img.format(alt="GPU utilisation per gang", src=chart_gangs(r))}</div>
</div>
<h2>Trend: last {len(r.trend)} days</h2>
<div class="card">{img.format(alt="trend", src=chart_trend(r))}
 {_html_table(["date", "submitted", "generated", "approved", "delivered", "rejected", "minutes",
               "QC pass", "GPU-h", "backlog"],
              [[t.date.isoformat(), t.submitted, t.generated, t.approved, t.delivered, t.rejected,
                fmt_num(t.minutes_delivered, 1), fmt_pct(t.qc_pass_rate), fmt_num(t.gpu_hours, 1),
                t.backlog] for t in r.trend])}
</div>
<h2>Definitions</h2>
<dl>{"".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in DEFINITIONS)}</dl>
"""
    title = f"Daily production report — {r.date.isoformat()}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{html.escape(title)} (UTC)</h1>
<div class="sub">covers {r.window_start:%Y-%m-%d %H:%M} → {r.window_end:%Y-%m-%d %H:%M} UTC ·
built {r.generated_at:%Y-%m-%d %H:%M} UTC by avatarflow</div>
<div class="kpis">{kpi_html}</div>
{sections}
</main></body></html>
"""


# --- writing and listing ----------------------------------------------------------------------

@dataclass(frozen=True)
class WrittenReport:
    kind: str
    path: Path
    sha256: str


def report_folder(storage: Storage, day: dt.date) -> Path:
    return storage.reports / day.isoformat()


def write_report(database: Database, report: DailyReport, storage: Storage,
                 *, markdown: str | None = None) -> list[WrittenReport]:
    """Write the markdown, HTML and CSV atomically and list them in the `reports` table.

    Running it again for the same day replaces the files and updates the rows (one row per
    date and kind), so a re-run never leaves duplicates.
    """
    folder = report_folder(storage, report.date)
    stem = f"daily-report-{report.date.isoformat()}"
    contents = {
        "markdown": (folder / f"{stem}.md", (markdown or render_markdown(report)).encode()),
        "html": (folder / f"{stem}.html", render_html(report).encode()),
        "csv": (folder / f"{stem}.csv", render_csv(report).encode()),
    }
    written = []
    for kind, (path, data) in contents.items():
        atomic_write_bytes(path, data)
        written.append(WrittenReport(kind, path, hashlib.sha256(data).hexdigest()))
    with database.session() as session:
        for item in written:
            changed = session.execute(
                update(Report).where(Report.date == report.date, Report.kind == item.kind)
                .values(path=str(item.path), sha256=item.sha256, created_at=utcnow())
                .execution_options(synchronize_session=False))
            if not changed.rowcount:
                session.add(Report(date=report.date, kind=item.kind, path=str(item.path),
                                   sha256=item.sha256))
    return written


def list_reports(session: Session, day: dt.date | None = None) -> list[Report]:
    """Generated reports, newest day first."""
    query = select(Report).order_by(Report.date.desc(), Report.kind)
    if day is not None:
        query = query.where(Report.date == day)
    return list(session.scalars(query))


def make_report(database: Database, storage: Storage, day: dt.date,
                *, now: dt.datetime | None = None) -> tuple[DailyReport, str, list[WrittenReport]]:
    """Compute, render and write one day's report: (report, markdown, files written)."""
    with database.session() as session:
        report = build_report(session, day, now=now)
    markdown = render_markdown(report)
    return report, markdown, write_report(database, report, storage, markdown=markdown)


# --- the flow ---------------------------------------------------------------------------------

@flow(name="daily-report", log_prints=True)
def daily_report(date: str | None = None) -> dict[str, str]:
    """Build the production report for `date` (YYYY-MM-DD, UTC; yesterday by default).

    Publishes the markdown artifact `daily-report` (one version per run, so the UI keeps every
    day) and returns the paths of the files written.
    """
    from prefect.artifacts import create_markdown_artifact

    from avatarflow.settings import get_settings
    from db.session import open_database

    day = parse_day(date)
    settings = get_settings()
    settings.storage.ensure()
    database = open_database(settings)
    try:
        report, markdown, written = make_report(database, settings.storage, day)
    finally:
        database.dispose()
    create_markdown_artifact(
        markdown=markdown, key=ARTIFACT_KEY,
        description=f"Daily production report for {day.isoformat()} (UTC): {report.delivered} "
                    f"delivered, backlog {report.backlog_total}",
    )
    for item in written:
        print(f"{item.kind}: {item.path}")
    return {item.kind: str(item.path) for item in written}
