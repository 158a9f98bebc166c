"""The daily production report, checked figure by figure against a hand-built day of history.

The seed below is a known history around D = 2026-03-10 (UTC). Every expected number in these
tests was worked out by hand from the seed (the arithmetic is written next to it), not by calling
the code under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from avatarflow import records
from avatarflow.errors import AvatarflowError
from avatarflow.records import Speech
from avatarflow.storage import Storage
from db.models import Asset, Batch, Event, GenerationAttempt, QCResult, Review, Reviewer
from db.report_models import Report
from db.session import Database
from qc.verdicts import CheckResult
from tasks.report.csv_rows import render_csv
from tasks.report.day import parse_day
from tasks.report.figures import (
    BACKLOG_STATES,
    BacklogState,
    CheckCount,
    FailureCount,
    QCChecks,
    Regenerations,
    ReviewerThroughput,
    Spread,
    TrendRow,
)
from tasks.report.files import write_report
from tasks.report.html_page import render_html
from tasks.report.markdown_page import render_markdown
from tasks.report.trend import build_report

UTC = dt.UTC
D = dt.date(2026, 3, 10)
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # long after D: the whole day is covered


def at(day: int, hhmm: str) -> dt.datetime:
    """D+day at hh:mm UTC."""
    hours, minutes = map(int, hhmm.split(":"))
    return dt.datetime.combine(D + dt.timedelta(days=day), dt.time(hours, minutes), tzinfo=UTC)


# Each asset: its transitions in order as (to_state, when, event data); from_state is the previous
# entry's to_state (None for the first). "audio" is the duration preprocessing recorded (its Speech record).
SEED: dict[str, dict] = {
    "a1": {"audio": 90.0, "state": "delivered", "moves": [
        ("submitted", at(-1, "22:00")), ("preprocessed", at(-1, "22:10")), ("planned", at(-1, "22:20")),
        ("generating", at(0, "01:00")), ("generated", at(0, "02:00")), ("qc_passed", at(0, "02:10")),
        ("approved", at(0, "02:11")), ("delivered", at(0, "03:00"))]},
    "a2": {"audio": 60.0, "state": "delivered", "moves": [
        ("submitted", at(0, "00:30")), ("preprocessed", at(0, "00:40")), ("planned", at(0, "00:50")),
        ("generating", at(0, "02:00")), ("generated", at(0, "03:00")), ("qc_failed", at(0, "03:10")),
        ("planned", at(0, "03:11")), ("generating", at(0, "04:00")), ("generated", at(0, "05:00")),
        ("qc_passed", at(0, "05:10")), ("review_pending", at(0, "05:11")), ("approved", at(0, "08:00")),
        ("delivered", at(0, "08:30"))]},
    "a3": {"audio": 30.0, "state": "rejected", "moves": [
        ("submitted", at(0, "01:00")), ("preprocessed", at(0, "01:20")), ("planned", at(0, "01:35")),
        ("generating", at(0, "05:00")), ("generated", at(0, "06:00")),
        ("review_pending", at(0, "06:15")), ("rejected", at(0, "09:00"))]},
    "a4": {"audio": 40.0, "state": "failed", "failed_stage": "generate", "moves": [
        ("submitted", at(0, "02:00")), ("preprocessed", at(0, "02:05")), ("planned", at(0, "02:25")),
        ("generating", at(0, "06:00")), ("failed", at(0, "06:30"), {"retryable": True})]},
    "a5": {"audio": None, "state": "failed", "failed_stage": "preprocess", "moves": [
        ("submitted", at(0, "03:00")), ("failed", at(0, "03:05"), {"code": "no_face", "retryable": False})]},
    "a6": {"audio": 25.0, "state": "planned", "moves": [
        ("submitted", at(0, "10:00")), ("preprocessed", at(0, "10:10")), ("planned", at(0, "10:20"))]},
    "a7": {"audio": 50.0, "state": "review_pending", "moves": [
        ("submitted", at(-2, "12:00")), ("preprocessed", at(-2, "12:10")), ("planned", at(-2, "12:20")),
        ("generating", at(-2, "13:00")), ("generated", at(-2, "14:00")), ("qc_passed", at(-2, "14:05")),
        ("review_pending", at(-2, "14:06"))]},
    "a8": {"audio": 70.0, "state": "generated", "moves": [
        ("submitted", at(-1, "10:00")), ("preprocessed", at(-1, "10:05")), ("planned", at(-1, "10:10")),
        ("generating", at(0, "22:00")), ("generated", at(1, "01:00"))]},
    "a9": {"audio": None, "state": "submitted", "moves": [("submitted", at(0, "23:30"))]},
    # No audio details: its minutes come from the latest attempt's verified duration (45 s).
    "a10": {"audio": None, "state": "delivered", "moves": [
        ("submitted", at(-1, "17:00")), ("preprocessed", at(-1, "17:10")), ("planned", at(-1, "17:20")),
        ("generating", at(-1, "18:00")), ("generated", at(-1, "19:00")),
        ("review_pending", at(-1, "19:10")), ("planned", at(0, "11:00")), ("generating", at(0, "12:00")),
        ("generated", at(0, "13:30")), ("qc_passed", at(0, "13:40")), ("approved", at(0, "13:41")),
        ("delivered", at(0, "14:00"))]},
    # Delivery failed on D-1 and was re-run on D: failed → approved is not a new approval.
    "a11": {"audio": 20.0, "state": "delivered", "moves": [
        ("submitted", at(-1, "08:00")), ("preprocessed", at(-1, "08:10")), ("planned", at(-1, "08:20")),
        ("generating", at(-1, "09:00")), ("generated", at(-1, "10:00")), ("qc_passed", at(-1, "10:05")),
        ("approved", at(-1, "10:06")), ("failed", at(-1, "11:00"), {"failure_kind": "copy_failed"}),
        ("approved", at(0, "09:30")), ("delivered", at(0, "09:40"))]},
}

GANG0, GANG1 = [0], [1, 2, 3, 4, 5]
# (asset, number, gang, gpus, started, ended, failure_kind, config)
ATTEMPTS = [
    ("a1", 1, "gang0", GANG0, at(0, "01:00"), at(0, "02:00"), None, {}),
    ("a2", 1, "gang0", GANG0, at(0, "02:00"), at(0, "03:00"), None, {}),
    ("a2", 2, "gang0", GANG0, at(0, "04:00"), at(0, "05:00"), None, {}),
    ("a3", 1, "gang1", GANG1, at(0, "05:00"), at(0, "06:00"), None, {}),
    ("a4", 1, "gang1", GANG1, at(0, "06:00"), at(0, "06:30"), "out_of_memory", {}),
    ("a7", 1, "gang0", GANG0, at(-2, "13:00"), at(-2, "14:00"), None, {}),
    ("a8", 1, "gang1", GANG1, at(0, "22:00"), at(1, "01:00"), None, {}),  # runs past midnight
    ("a10", 1, "gang0", GANG0, at(-1, "18:00"), at(-1, "19:00"), None, {"verified": {"duration_s": 44.0}}),
    ("a10", 2, "gang0", GANG0, at(0, "12:00"), at(0, "13:30"), None, {"verified": {"duration_s": 45.0}}),
    ("a11", 1, "gang0", GANG0, at(-1, "09:00"), at(-1, "10:00"), None, {}),
]
# (asset, created, score, verdict); gate 0.92 everywhere
QC = [
    ("a1", at(0, "02:10"), 0.95, "pass"), ("a2", at(0, "03:10"), 0.80, "fail"),
    ("a2", at(0, "05:10"), 0.93, "pass"), ("a3", at(0, "06:15"), 0.90, "borderline"),
    ("a3", at(0, "06:15"), None, "borderline"),  # a technical-check row without a score
    ("a10", at(0, "13:40"), 0.97, "pass"), ("a7", at(-2, "14:05"), 0.93, "pass"),
    ("a10", at(-1, "19:10"), 0.91, "borderline"), ("a11", at(-1, "10:05"), 0.96, "pass"),
]
# (asset, reviewer, decision, reason, decided)
REVIEWS = [
    ("a2", "alice", "approve", None, at(0, "08:00")),
    ("a3", "bob", "reject", "lip_sync", at(0, "09:00")),
    ("a10", "alice", "reject", "artifacts", at(0, "11:00")),
]


def seed(database: Database) -> None:
    with database.session() as session:
        batch = Batch(name="seed", created_by="test", created_at=at(-2, "12:00"))
        reviewers = {name: Reviewer(username=name, password_hash="x") for name in ("alice", "bob")}
        session.add_all([batch, *reviewers.values()])
        assets: dict[str, Asset] = {}
        for name, spec in SEED.items():
            asset = Asset(key=hashlib.sha256(name.encode()).hexdigest(), batch=batch,
                          image_path=f"/in/{name}.jpg", image_sha256="0" * 64,
                          audio_path=f"/in/{name}.wav", audio_sha256="1" * 64, prompt="A person talks.",
                          preset="standard", state=spec["state"], failed_stage=spec.get("failed_stage"),
                          details=records.write({}, Speech(path=f"/data/{name}.wav", duration_s=spec["audio"]))
                          if spec["audio"] else {},
                          created_at=spec["moves"][0][1])
            session.add(asset)
            previous = None
            for move in spec["moves"]:
                to_state, when, data = (*move, {}) if len(move) == 2 else move
                session.add(Event(asset=asset, at=when, actor="seed", from_state=previous,
                                  to_state=to_state, data=data))
                previous = to_state
            assets[name] = asset
        # A note (a claim) is not a transition and must change nothing.
        session.add(Event(asset=assets["a1"], at=at(0, "00:59"), actor="worker", from_state="planned",
                          to_state="planned", reason="claimed"))
        for name, number, gang, gpus, started, ended, failure, config in ATTEMPTS:
            session.add(GenerationAttempt(
                asset=assets[name], number=number, engine="liveavatar", seed=number, gang=gang,
                gpus=gpus, started_at=started, ended_at=ended, config=config,
                outcome="failed" if failure else "succeeded", failure_kind=failure))
        for name, created, score, verdict in QC:
            session.add(QCResult(asset=assets[name], scorer="landmarks" if score is not None else "technical",
                                 score=score, gate=0.92, verdict=verdict, created_at=created))
        for name, reviewer, decision, reason, decided in REVIEWS:
            session.add(Review(asset=assets[name], reviewer=reviewers[reviewer], decision=decision,
                               reason_code=reason, decided_at=decided))


@pytest.fixture
def seeded(database) -> Database:
    seed(database)
    return database


def report_for(database: Database, day: dt.date = D, now: dt.datetime = NOW):
    with database.session() as session:
        return build_report(session, day, now=now)


def zero_trend_row(day: dt.date) -> TrendRow:
    return TrendRow(day, 0, 0, 0, 0, 0, 0.0, None, 0.0, 0)


def test_output_figures(seeded):
    r = report_for(seeded)
    assert r.window_start == at(0, "00:00") and r.window_end == at(1, "00:00")
    # None → submitted on D: a2 00:30, a3 01:00, a4 02:00, a5 03:00, a6 10:00, a9 23:30.
    assert r.submitted == 6
    # → generated on D: a1, a2 (twice, one asset), a3, a10; a8's is on D+1.
    assert r.generated == 4
    # → approved on D: a1, a2, a10; a11's failed → approved is a re-run and does not count.
    assert r.approved == 3
    # → delivered on D: a1, a2, a10, a11.
    assert r.delivered == 4
    assert r.rejected == 1  # a3
    # 90 + 60 + 45 (a10: latest attempt's verified duration) + 20 = 215 s.
    assert r.minutes_delivered == pytest.approx(215 / 60)
    assert r.delivered_without_duration == 0


def test_backlog_at_the_end_of_the_day(seeded):
    r = report_for(seeded)
    expected = {
        "submitted": BacklogState("submitted", 1, 1800.0, 1800.0),  # a9 since 23:30
        "planned": BacklogState("planned", 1, 49200.0, 49200.0),  # a6 since 10:20: 13 h 40 min
        "generating": BacklogState("generating", 1, 7200.0, 7200.0),  # a8 since 22:00
        # a7 since D-2 14:06: 48 h + 9 h 54 min = 208440 s
        "review_pending": BacklogState("review_pending", 1, 208440.0, 208440.0),
        # a4 since 06:30 (17 h 30 min = 63000 s), a5 since 03:05 (20 h 55 min = 75300 s)
        "failed": BacklogState("failed", 2, 75300.0, 69150.0),
    }
    assert [b.state for b in r.backlog] == ["submitted", "preprocessed", "split", "planned", "generating",
                                           "generated", "qc_passed", "qc_failed", "review_pending",
                                           "approved", "failed"]
    for b in r.backlog:
        assert b == expected.get(b.state, BacklogState(b.state, 0, None, None))
    assert r.backlog_total == 6


def test_quality_figures(seeded):
    r = report_for(seeded)
    # generated → ...: a1 qc_passed, a2 qc_failed, a2 qc_passed, a3 review_pending, a10 qc_passed.
    assert (r.qc_decisions, r.qc_passed, r.qc_failed, r.qc_borderline) == (5, 3, 1, 1)
    assert r.qc_pass_rate == pytest.approx(3 / 5)

    ls = r.lip_sync  # D's scores: 0.95, 0.80, 0.93, 0.90, 0.97 (the None row is left out)
    assert ls.scored == 5 and ls.gate == 0.92
    assert ls.at_or_above_gate == 3 and ls.share_at_or_above_gate == pytest.approx(0.6)
    assert ls.median_score == 0.93
    assert len(ls.counts) == 20 and ls.edges[0] == 0.0 and ls.edges[-1] == 1.0
    assert {i: c for i, c in enumerate(ls.counts) if c} == {16: 1, 18: 2, 19: 2}  # .80-.85, .90-.95, .95-1

    # a4: generating → failed, still failed (stage generate), kind from its attempt (OOM);
    # a5: submitted → failed with code no_face, stage preprocess.
    assert r.failures == [FailureCount("generate", "out_of_memory", 1),
                          FailureCount("preprocess", "no_face", 1)]
    assert r.attempt_failures == {"out_of_memory": 1}
    # Delivered a1 (1 attempt), a2 (2), a10 (2), a11 (1): 0 + 1 + 1 + 0.
    assert r.regenerations == Regenerations(total=2, mean=0.5, max=1, by_count={0: 2, 1: 2})
    assert r.review_decisions == {"approve": 1, "reject": 2}
    assert r.rejection_reasons == {"artifacts": 1, "lip_sync": 1}
    assert r.reviewers == [ReviewerThroughput("alice", 2, 1, 1), ReviewerThroughput("bob", 1, 0, 1)]


def check(name: str, verdict: str, reason: str, ranges=()) -> dict:
    """A check as the QC stage stores it in QCResult.checks."""
    return CheckResult(name, None, "", verdict, reason, ranges=list(ranges), worst_s=ranges[0][0] if ranges else None
                       ).to_dict()


# (asset, created, checks) of QC results that recorded their checks; each row is one video judged.
QC_WITH_CHECKS = [
    ("a1", at(0, "02:10"), [check("lipsync_windows", "fail", "2 windows below the gate", [(1.0, 2.0)]),
                            check("flicker", "warn", "brightness jumps"), check("frame_rate", "pass", "25 fps")]),
    ("a2", at(0, "03:10"), [check("lipsync_windows", "fail", "2 windows below the gate"),  # fails, says nowhere
                            check("flicker", "pass", ""), check("frame_rate", "pass", "25 fps")]),
    ("a3", at(0, "06:15"), [check("lipsync_windows", "warn", "1 window below the gate"),
                            check("flicker", "fail", "brightness jumps", [(3.0, 4.0)]),
                            {"check": "not a QC check"}]),
    # Stored before checks kept time ranges: no "ranges", no "worst_s".
    ("a10", at(0, "13:40"), [{"name": "black_frames", "value": 0.3, "threshold": "≤ 0.2 s", "verdict": "fail",
                              "reason": "black for 0.3 s"}]),
    ("a7", at(-1, "14:05"), [check("lipsync_windows", "fail", "another day", [(0.0, 1.0)])]),  # D-1: not counted
]


def test_qc_checks_are_counted_check_by_check(seeded):
    with seeded.session() as session:
        assets = {a.image_path.removeprefix("/in/").removesuffix(".jpg"): a for a in session.scalars(select(Asset))}
        for name, created, checks in QC_WITH_CHECKS:
            session.add(QCResult(asset=assets[name], scorer="landmarks", score=None, gate=0.92, verdict="borderline",
                                 checks=checks, created_at=created))
    r = report_for(seeded)
    qc = r.qc_checks
    # D's QC results: the seed's six (no checks recorded) and the four above.
    assert qc.results == 10
    assert qc.unreadable == 1  # a3's {"check": ...}
    # a1 (lipsync_windows fails at 1-2 s) and a3 (flicker fails at 3-4 s); a2 fails without saying
    # where and a10's row predates ranges.
    assert qc.with_failing_ranges == 2
    # Most failures first, then most warnings, then by name.
    assert qc.checks == [
        CheckCount("lipsync_windows", 3, 2, 1, "2 windows below the gate", 2),
        CheckCount("flicker", 3, 1, 1, "brightness jumps", 2),  # a1's warning and a3's failure
        CheckCount("black_frames", 1, 1, 0, "black for 0.3 s", 1),
        CheckCount("frame_rate", 2, 0, 0, None, 0),
    ]
    # The day before holds a7's row only.
    before = report_for(seeded, D - dt.timedelta(days=1)).qc_checks
    assert before.checks == [CheckCount("lipsync_windows", 1, 1, 0, "another day", 1)]
    assert before.with_failing_ranges == 1

    markdown = render_markdown(r)
    assert "**QC checks** (10 QC result(s); 2 video(s) with at least one failing time range; " \
           "1 stored check(s) unreadable)" in markdown
    assert "| lipsync_windows | 3 | 2 | 1 | 2 windows below the gate (×2) |" in markdown
    assert "| frame_rate | 2 | 0 | 0 | – |" in markdown
    page = render_html(r)
    assert "<h3>QC checks: 10 QC result(s)</h3>" in page
    assert "<tr><td>flicker</td><td>3</td><td>1</td><td>1</td><td>brightness jumps (×2)</td></tr>" in page
    assert "2 video(s) with at least one failing time range" in page
    rows = list(csv.DictReader(io.StringIO(render_csv(r))))
    value = {(row["section"], row["figure"], row["key"]): row["value"] for row in rows}
    assert value[("qc_checks", "with_failing_ranges", "")] == "2"
    assert value[("qc_checks", "failed", "lipsync_windows")] == "2"
    assert value[("qc_checks", "warned", "flicker")] == "1"
    assert value[("qc_checks", "commonest_reason", "black_frames")] == "black for 0.3 s"
    assert value[("qc_checks", "commonest_reason", "frame_rate")] == ""


def test_failure_stage_falls_back_to_the_state_it_failed_from(seeded):
    # D-1: a11 approved → failed, since re-run (so the asset no longer says): stage deliver.
    r = report_for(seeded, D - dt.timedelta(days=1))
    assert r.failures == [FailureCount("deliver", "copy_failed", 1)]
    assert r.attempt_failures == {}


def test_time_and_cost_figures(seeded):
    r = report_for(seeded)
    assert r.stage_durations == {
        # a2 600, a3 1200, a4 300, a6 600 → [300, 600, 600, 1200]
        "preprocess": Spread(4, 600.0, 1200.0),
        # a2 600, a3 900, a4 1200, a6 600 → median (600 + 900) / 2
        "plan": Spread(4, 750.0, 1200.0),
        # a1 9600 (from D-1 22:20), a2 4200 and 2940, a3 12300, a4 12900, a10 3600,
        # a8 D-1 10:10 → D 22:00 = 35 h 50 min = 129000; p95 rank ceil(0.95 · 7) = 7
        "gpu_queue": Spread(7, 9600.0, 129000.0),
        # a1, a2, a2, a3 3600 each, a10 5400 (a8 finishes on D+1)
        "generate": Spread(5, 3600.0, 5400.0),
        # 600 each, a3 900
        "qc": Spread(5, 600.0, 900.0),
        # a2 05:11→08:00 10140, a3 06:15→09:00 9900, a10 D-1 19:10→11:00 57000
        "review_wait": Spread(3, 10140.0, 57000.0),
        # a1 2940, a2 1800, a10 1140, a11 600 (from its re-entry at 09:30)
        "deliver": Spread(4, 1470.0, 2940.0),
    }
    # a1 5 h, a2 8 h, a10 21 h, a11 25 h 40 min
    assert r.submission_to_delivery == Spread(4, 52200.0, 92400.0)
    # gang0: 1 + 1 + 1 + 1.5 GPU-h on 1 GPU; gang1: (1 + 0.5 + 2 before midnight) h × 5 GPUs
    assert r.gpu_hours == pytest.approx(22.0)
    assert r.gpu_hours_per_delivered_minute == pytest.approx(22.0 / (215 / 60))
    assert [(g.gang, g.gpus, g.attempts) for g in r.gangs] == [("gang0", 1, 4), ("gang1", 5, 3)]
    gang0, gang1 = r.gangs
    # gang0 busy 01-03 (touching intervals merge), 04-05, 12-13:30 = 4.5 h; gang1 05-06:30, 22-24
    assert gang0.busy_hours == pytest.approx(4.5) and gang0.gpu_hours == pytest.approx(4.5)
    assert gang0.utilisation == pytest.approx(4.5 / 24)
    assert gang1.busy_hours == pytest.approx(3.5) and gang1.gpu_hours == pytest.approx(17.5)
    assert gang1.utilisation == pytest.approx(3.5 / 24)
    assert gang0.worker_hours is None and gang0.busy_share is None  # no long-lived gang workers


def test_gang_busy_share_comes_from_the_gang_workers_records(seeded):
    """A gang worker up from 00:30 to 14:30 (its row) made gang0's 4.5 busy hours: 4.5 / 14."""
    from db.worker_models import GangWorkerRecord

    with seeded.session() as session:
        session.add(GangWorkerRecord(name="gang0@h#1", host="h", gang="gang0", devices="0", engine="cpu", pid=1,
                                     state="stopped", started_at=at(0, "00:30"), heartbeat_at=at(0, "14:30"),
                                     stopped_at=at(0, "14:30")))
        session.add(GangWorkerRecord(name="gang0@h#2", host="h", gang="gang0", devices="0", engine="cpu", pid=2,
                                     state="busy", started_at=at(0, "14:00"), heartbeat_at=at(0, "14:20")))
    gang0 = report_for(seeded).gangs[0]
    assert gang0.worker_hours == pytest.approx(14.0)  # the overlapping second worker is not counted twice
    assert gang0.busy_share == pytest.approx(4.5 / 14.0)


def test_the_day_still_going_on_is_covered_up_to_now(seeded):
    r = report_for(seeded, D, now=at(0, "12:00"))
    assert r.window_end == at(0, "12:00")
    # gang0 busy 01-03, 04-05 before noon (the 12:00 attempt has not begun) = 3 h of 12
    assert [(g.gang, g.busy_hours, g.utilisation) for g in r.gangs] == [
        ("gang0", pytest.approx(3.0), pytest.approx(0.25)), ("gang1", pytest.approx(1.5), pytest.approx(0.125))]
    with pytest.raises(AvatarflowError, match="has not begun"):
        report_for(seeded, D + dt.timedelta(days=1), now=at(0, "12:00"))


def test_trend_of_the_last_fourteen_days(seeded):
    r = report_for(seeded)
    assert [t.date for t in r.trend] == [D - dt.timedelta(days=13 - i) for i in range(14)]
    expected_last_three = [
        # D-2: a7 submitted and generated; QC 1 of 1 passed; 1 GPU-h; a7 left in review
        TrendRow(D - dt.timedelta(days=2), 1, 1, 0, 0, 0, 0.0, 1.0, 1.0, 1),
        # D-1: a1, a8, a10, a11 submitted; a10, a11 generated; a11 approved; QC a11 passed, a10
        # borderline; 2 GPU-h (a11, a10 #1); backlog a1, a8 planned, a7, a10 review, a11 failed
        TrendRow(D - dt.timedelta(days=1), 4, 2, 1, 0, 0, 0.0, 0.5, 2.0, 5),
    ]
    assert r.trend[:11] == [zero_trend_row(D - dt.timedelta(days=13 - i)) for i in range(11)]
    assert r.trend[11:13] == expected_last_three
    last = r.trend[13]
    assert (last.date, last.submitted, last.generated, last.approved, last.delivered, last.rejected,
            last.backlog) == (D, 6, 4, 3, 4, 1, 6)
    assert last.minutes_delivered == pytest.approx(215 / 60) and last.qc_pass_rate == pytest.approx(0.6)
    assert last.gpu_hours == pytest.approx(22.0)


def test_an_empty_day_gives_zeros_and_none(database):
    r = report_for(database)
    assert (r.submitted, r.generated, r.approved, r.delivered, r.rejected) == (0, 0, 0, 0, 0)
    assert r.minutes_delivered == 0.0 and r.delivered_without_duration == 0
    assert r.backlog == [BacklogState(s, 0, None, None) for s in BACKLOG_STATES] and r.backlog_total == 0
    assert (r.qc_decisions, r.qc_passed, r.qc_failed, r.qc_borderline, r.qc_pass_rate) == (0, 0, 0, 0, None)
    ls = r.lip_sync
    assert (ls.scored, ls.gate, ls.at_or_above_gate, ls.share_at_or_above_gate, ls.median_score) == (
        0, None, 0, None, None)
    assert ls.counts == [0] * 20
    assert r.qc_checks == QCChecks([], 0, 0, 0)
    assert r.failures == [] and r.attempt_failures == {}
    assert r.regenerations == Regenerations(0, None, None, {})
    assert r.review_decisions == {} and r.rejection_reasons == {} and r.reviewers == []
    assert all(s == Spread(0, None, None) for s in r.stage_durations.values())
    assert r.submission_to_delivery == Spread(0, None, None)
    assert r.gpu_hours == 0.0 and r.gpu_hours_per_delivered_minute is None and r.gangs == []
    assert r.trend == [zero_trend_row(D - dt.timedelta(days=13 - i)) for i in range(14)]
    # Every format renders an empty day.
    assert "No backlog" in render_markdown(r) and "_No QC checks recorded._" in render_markdown(r)
    page = render_html(r)
    assert "no backlog" in page and page.count("<img") == 5
    assert render_csv(r).count("\n") > 50


def test_csv_markdown_and_the_reports_table(seeded, tmp_path):
    r = report_for(seeded)
    rows = list(csv.DictReader(io.StringIO(render_csv(r))))
    value = {(row["section"], row["figure"], row["key"]): row["value"] for row in rows}
    assert all(row["date"] == "2026-03-10" for row in rows)
    assert value[("output", "delivered", "")] == "4"
    assert value[("backlog", "oldest_age", "review_pending")] == "208440.0"
    assert value[("backlog", "median_age", "approved")] == ""
    assert value[("lip_sync", "histogram", "0.90–0.95")] == "2"
    assert value[("failures", "assets_failed", "preprocess/no_face")] == "1"
    assert value[("stages", "p95", "gpu_queue")] == "129000.0"
    assert value[("reviewers", "decisions", "alice")] == "2"
    assert value[("trend", "delivered", "2026-03-10")] == "4"
    assert sum(1 for row in rows if row["section"] == "trend") == 14 * 9

    markdown = render_markdown(r)
    assert "# Daily production report — 2026-03-10 (UTC)" in markdown
    assert "| 6 | 4 | 3 | 4 | 1 | 3.6 |" in markdown
    assert "QC pass rate **60.0%**" in markdown

    storage = Storage(tmp_path / "data")
    for _ in range(2):  # a re-run replaces the files and the rows, never duplicates them
        written = write_report(seeded, r, storage)
    folder = tmp_path / "data" / "reports" / "2026-03-10"
    assert sorted(p.name for p in folder.iterdir()) == [
        "daily-report-2026-03-10.csv", "daily-report-2026-03-10.html", "daily-report-2026-03-10.md"]
    with seeded.session() as session:
        listed = session.scalars(select(Report).order_by(Report.kind)).all()
        assert [(x.date, x.kind) for x in listed] == [(D, "csv"), (D, "html"), (D, "markdown")]
        for row in listed:
            assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256
            assert Path(row.path).parent == folder
    assert {w.kind for w in written} == {"markdown", "html", "csv"}


def test_parse_day():
    assert parse_day("2026-03-10") == D
    assert parse_day(None, now=dt.datetime(2026, 3, 11, 0, 30, tzinfo=UTC)) == D
    with pytest.raises(AvatarflowError, match="YYYY-MM-DD"):
        parse_day("10/03/2026")


@pytest.fixture
def seeded_sqlite(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'report.db'}")
    database.migrate()
    seed(database)
    yield database
    database.dispose()


def test_html_report_renders_in_headless_chromium(seeded_sqlite, tmp_path, artifacts):
    from playwright.sync_api import sync_playwright

    page_html = render_html(report_for(seeded_sqlite))
    assert "http://" not in page_html and "https://" not in page_html and "<script" not in page_html
    path = tmp_path / "daily_report.html"
    path.write_text(page_html, encoding="utf-8")
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri())
            assert page.title() == "Daily production report — 2026-03-10"
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.naturalWidth])")
            assert len(images) == 5 and all(width > 200 for _, width in images), images
            assert page.inner_text(".kpis").split()[:2] == ["6", "SUBMITTED"]
            page.screenshot(path=str(artifacts / "daily_report.png"), full_page=True)
        finally:
            browser.close()
    assert outside == []  # self-contained: nothing fetched from anywhere


def test_cli_report_command_prints_a_summary_and_the_paths(seeded_sqlite, settings_env, monkeypatch, capsys):
    from avatarflow.settings import get_settings
    from flows.cli_report import report_command

    monkeypatch.setenv("AVATARFLOW_DATABASE_URL", seeded_sqlite.url)
    get_settings.cache_clear()
    report_command(date="2026-03-10")
    out = capsys.readouterr().out
    assert "daily report 2026-03-10" in out
    cells = {line.split("│")[1].strip(): line.split("│")[2].strip()
             for line in out.splitlines() if line.count("│") == 3}
    assert cells["delivered"] == "4" and cells["backlog at end of day"] == "6"
    assert cells["GPU-hours per delivered minute"] == "6.14"  # 22 GPU-h / 3.583 min
    folder = settings_env / "reports" / "2026-03-10"
    for kind, suffix in (("markdown", "md"), ("html", "html"), ("csv", "csv")):
        assert f"{kind:<9} {folder / f'daily-report-2026-03-10.{suffix}'}" in out
    with pytest.raises(AvatarflowError):
        report_command(date="yesterday")


def test_flow_publishes_the_markdown_artifact(prefect_harness, settings_env):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from avatarflow.settings import get_settings
    from flows.report import daily_report

    database = Database(get_settings().resolved_database_url)
    database.migrate()
    seed(database)
    paths = daily_report(date="2026-03-10")
    assert set(paths) == {"markdown", "html", "csv"} and all(Path(p).is_file() for p in paths.values())
    with database.session() as session:
        assert {r.kind for r in session.scalars(select(Report).where(Report.date == D))} == set(paths)
    database.dispose()

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["daily-report"])))
    assert found, "no artifact with key daily-report"
    latest = max(found, key=lambda a: a.created)
    assert latest.type == "markdown"
    assert "2026-03-10" in (latest.description or "")
    assert "# Daily production report — 2026-03-10 (UTC)" in latest.data
    assert "QC pass rate **60.0%**" in latest.data
