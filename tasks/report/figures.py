"""The report's typed records (DailyReport and its parts) and the rules that name its stages.

Every figure is defined on DailyReport; the conventions they share are in the package docstring.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from avatarflow.errors import AvatarflowError
from db.models import utcnow
from db.states import TERMINAL, AssetState
from tasks.report.stats import median, percentile

UTC = dt.UTC
S = AssetState

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
class CheckCount:
    """One QC check over the QC results recorded that day (each result is one video judged).

    `checked`: results that hold the check; `failed` / `warned`: those where its verdict was fail /
    warn; `commonest_reason`: the reason it gave most often when it failed or warned (the first
    in alphabetical order on a tie; None when it always passed), given `reason_count` times.
    """

    check: str
    checked: int
    failed: int
    warned: int
    commonest_reason: str | None
    reason_count: int


@dataclass(frozen=True)
class QCChecks:
    """The per-check figures of the day's QC results (`QCResult.checks`, read as QC's own
    `CheckResult`s), and how many videos had a failing check that says where it fails.

    `results`: QC results created that day; `with_failing_ranges`: those with at least one check
    whose verdict is fail and which gives time ranges; `unreadable`: stored checks that are not
    QC check results (left out of every count). Checks are listed most failures first, then
    most warnings, then by name.
    """

    checks: list[CheckCount]
    results: int
    with_failing_ranges: int
    unreadable: int


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
    the covered window. Attempts on different hosts are unioned per host, then added.

    `worker_hours`: how long long-lived gang workers of this gang were up inside the window (from
    their rows: start to stop, or to the last heartbeat); `busy_share`: busy_hours / worker_hours,
    the share of the time a loaded model was generating (None without gang workers).
    """

    gang: str
    gpus: int
    attempts: int
    busy_hours: float
    gpu_hours: float
    utilisation: float
    worker_hours: float | None = None
    busy_share: float | None = None


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
        preprocessing (queries.speech_seconds; the muxed video is cut to the speech, so this is
        the video's length), else the verified duration stored by the asset's latest generation
        attempt that has one (queries.verified_seconds); / 60.
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
      qc_checks: see QCChecks (the same QC results, check by check).
      failures: moves into failed that day by (stage, kind), as queries.event_failure reads
        the event. stage: the event's data["failed_stage"], else the asset's failed_stage while
        that move is still its latest transition, else the state it failed from
        (STAGE_FAILED_FROM). kind: the event's data["failure_kind"] / ["kind"] / ["code"], else
        for generate the failure_kind of the asset's latest attempt started before the move,
        else "unspecified".
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
    qc_checks: QCChecks
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

