"""Review sessions kept server-side: opened at sign-in, checked on every request, ended for good.

The signed cookie holds only a random token; `db.review_models.ReviewSession` holds what it
is worth. A session ends when its reviewer signs out, is disabled, gets a new password or is
signed out everywhere by an admin, after `review_idle_minutes` without a request, and in any
case `review_session_hours` after sign-in, however busy: a copied cookie is worth nothing then.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import Reviewer, utcnow
from db.review_models import ReviewSession
from review.config import ReviewSettings
from review.security import password_fingerprint

# last_seen_at is written at most this often: a page load is several requests (media, static).
TOUCH_EVERY = timedelta(seconds=30)


def _key(token: str) -> str:
    """The row id: a hash, so a read of the table gives nobody a usable cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, reviewer: Reviewer, ip: str) -> str:
    """A new session for `reviewer`; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    session.add(ReviewSession(id=_key(token), reviewer_id=reviewer.id, ip=ip[:64],
                              password_fp=password_fingerprint(reviewer.password_hash)))
    return token


def reviewer_of(session: Session, settings: ReviewSettings, token: object) -> Reviewer | None:
    """The reviewer a cookie's token stands for now, or None (and the session ended, with why)."""
    if not isinstance(token, str) or not token:
        return None
    row = session.get(ReviewSession, _key(token))
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    reviewer = session.get(Reviewer, row.reviewer_id)
    why = None
    if reviewer is None or not reviewer.active:
        why = "account disabled"
    elif row.password_fp != password_fingerprint(reviewer.password_hash):
        why = "password changed"
    elif now - row.created_at > timedelta(hours=settings.review_session_hours):
        why = "lifetime over"
    elif now - row.last_seen_at > timedelta(minutes=settings.review_idle_minutes):
        why = "idle too long"
    if why is not None:
        row.ended_at, row.ended_why = now, why
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
    return reviewer


def end_session(session: Session, token: object, why: str = "signed out") -> None:
    if isinstance(token, str) and token:
        session.execute(update(ReviewSession).where(ReviewSession.id == _key(token), ReviewSession.ended_at.is_(None))
                        .values(ended_at=utcnow(), ended_why=why))


def end_all(session: Session, reviewer_id: int, why: str) -> int:
    """End every open session of a reviewer ("sign out everywhere"); returns how many."""
    return session.execute(update(ReviewSession).where(ReviewSession.reviewer_id == reviewer_id,
                                                       ReviewSession.ended_at.is_(None))
                           .values(ended_at=utcnow(), ended_why=why)).rowcount
