"""Recording a reviewer's decision: one transaction with the Review row, the transition and events."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from avatarflow.errors import AvatarflowError
from avatarflow.text import clean_text
from db.lifecycle import transition
from db.models import Asset, GenerationAttempt, Review, Reviewer, utcnow
from db.review_models import ReviewClaim
from db.states import AssetState
from review.claims import actor_name
from review.config import REJECT_REASONS, ReviewSettings

MAX_NOTES = 4000
MAX_RANGES = 20
# Seconds a marked range may run past the measured end (players report slightly different ends).
DURATION_SLACK = 0.1


class DecisionRefused(AvatarflowError):
    """The decision cannot be recorded; `status` is the HTTP status that says why."""

    status = 409


class InvalidDecision(DecisionRefused):
    status = 422


@dataclass(frozen=True)
class Decision:
    verdict: str  # "approve" or "reject"
    reason_code: str | None = None
    notes: str = ""
    time_ranges: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class DecisionOutcome:
    asset_id: int
    review_id: int
    to_state: str
    regenerate: bool


# ASCII digits only (re's \d takes any script's), few enough that a value stays finite: a run
# of 400 digits would parse as float("inf"), which is not JSON and PostgreSQL refuses.
_SECONDS = r"([0-9]{1,6}(?:\.[0-9]{1,3})?)"
_RANGE = re.compile(rf"^\s*{_SECONDS}\s*[-–]\s*{_SECONDS}\s*$")
# When the video's length is unknown a range is still bounded: no video is longer than a day.
MAX_SECONDS = 86_400.0


def parse_time_ranges(text: str, duration: float | None) -> list[dict[str, float]]:
    """'1.5-2.25, 4-5' → [{'start': 1.5, 'end': 2.25}, ...], each inside the video."""
    ranges = []
    for part in filter(None, (p.strip() for p in re.split(r"[,;\n]", text or ""))):
        match = _RANGE.match(part)
        if not match:
            raise InvalidDecision(f"time range {part!r} is not START-END in seconds, e.g. 1.5-3")
        start, end = float(match.group(1)), float(match.group(2))
        if end <= start:
            raise InvalidDecision(f"time range {part!r} ends before it starts")
        if duration is not None and end > duration + DURATION_SLACK:
            raise InvalidDecision(f"time range {part!r} runs past the end of the video ({duration:.2f} s)")
        if end > MAX_SECONDS:
            raise InvalidDecision(f"time range {part!r} ends after {MAX_SECONDS:.0f} s, past any video")
        ranges.append({"start": round(start, 3), "end": round(end, 3)})
    if len(ranges) > MAX_RANGES:
        raise InvalidDecision(f"at most {MAX_RANGES} time ranges")
    return sorted(ranges, key=lambda r: r["start"])


def make_decision(verdict: str, reason_code: str | None, notes: str | None, ranges_text: str | None,
                  duration: float | None) -> Decision:
    """Validate the submitted form into a Decision (nothing is written)."""
    notes = clean_text(notes or "").strip()
    if len(notes) > MAX_NOTES:
        raise InvalidDecision(f"notes are limited to {MAX_NOTES} characters")
    ranges = parse_time_ranges(ranges_text or "", duration)
    if verdict == "approve":
        return Decision("approve", None, notes, ranges)
    if verdict != "reject":
        raise InvalidDecision("the decision must be approve or reject")
    if reason_code not in REJECT_REASONS:
        raise InvalidDecision(f"a rejection needs a reason code: one of {', '.join(REJECT_REASONS)}")
    if reason_code == "other" and not notes:
        raise InvalidDecision("say in the notes what is wrong when the reason is 'other'")
    return Decision("reject", reason_code, notes, ranges)


def attempts_used(session: Session, asset_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(GenerationAttempt).where(GenerationAttempt.asset_id == asset_id)
    ) or 0


def decide(session: Session, settings: ReviewSettings, asset_id: int, reviewer: Reviewer,
           decision: Decision) -> DecisionOutcome:
    """Record `decision` on an asset the reviewer holds; refuse anything else.

    Runs inside the caller's transaction: the Review row, the state change and its event commit
    together or not at all. Two reviewers cannot both succeed: only the claim holder gets past the
    claim check, the claim row is locked (PostgreSQL) or writers are serialised (SQLite), and the
    asset's version column fails any write based on a stale read.
    """
    claim_query = select(ReviewClaim).where(ReviewClaim.asset_id == asset_id)
    if session.get_bind().dialect.name == "postgresql":
        claim_query = claim_query.with_for_update()
    held = session.scalars(claim_query).first()
    asset = session.get(Asset, asset_id, populate_existing=True)
    if asset is None:
        raise DecisionRefused(f"asset {asset_id} does not exist")
    if asset.state != AssetState.REVIEW_PENDING.value:
        raise DecisionRefused(f"asset {asset_id} is {asset.state}, not waiting for review: "
                              "it was decided already")
    if held is None or held.reviewer_id != reviewer.id:
        who = held.reviewer.username if held is not None else "nobody"
        raise DecisionRefused(f"asset {asset_id} is claimed by {who}, not by you: open it again "
                              "to claim it before deciding")
    if held.expires_at < utcnow():
        raise DecisionRefused(f"your claim on asset {asset_id} expired: open it again to decide")

    regenerate = False
    if decision.verdict == "approve":
        target = AssetState.APPROVED
    else:
        fixable = decision.reason_code in settings.review_regenerate_reasons
        regenerate = fixable and attempts_used(session, asset_id) < settings.max_generation_attempts
        target = AssetState.PLANNED if regenerate else AssetState.REJECTED

    review = Review(asset=asset, reviewer_id=reviewer.id, decision=decision.verdict,
                    reason_code=decision.reason_code, notes=decision.notes or None,
                    time_ranges=decision.time_ranges)
    session.add(review)
    session.flush()
    data: dict[str, Any] = {"review_id": review.id, "decision": decision.verdict,
                            "reason_code": decision.reason_code, "notes": decision.notes,
                            "time_ranges": decision.time_ranges, "regenerate": regenerate}
    why = "review: approved" if decision.verdict == "approve" else (
        f"review: rejected ({decision.reason_code}){', regenerate' if regenerate else ''}")
    transition(session, asset, target, actor=actor_name(reviewer), reason=why, data=data)
    session.delete(held)
    session.flush()
    return DecisionOutcome(asset_id, review.id, target.value, regenerate)
