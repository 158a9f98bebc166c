"""Tables only the review application writes: who is looking at an asset, and sign-in attempts.

Both live in the shared database (not in process memory) so claims and rate limits hold across
every process and host serving the review pages. Created by migration 0003_review.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.models import Base, Reviewer, utcnow


class ReviewClaim(Base):
    """One reviewer holds an asset while its page is open; the primary key makes it one at most.

    A separate table (not Asset.claimed_by) so a pipeline worker's lease and a reviewer's claim can
    never be mistaken for each other.
    """

    __tablename__ = "review_claims"

    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), primary_key=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"), index=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()

    reviewer: Mapped[Reviewer] = relationship()


class LoginAttempt(Base):
    """One sign-in try; failures within the window are counted per username and per address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)


class ReviewSession(Base):
    """A signed-in browser: the cookie carries only a random token, this row says what it is worth.

    Ending the row (sign-out, a disabled account, a new password, an admin's "sign out
    everywhere") ends the session wherever the cookie was copied to. Created by migration 0007.
    """

    __tablename__ = "review_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie's token
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"), index=True)
    password_fp: Mapped[str] = mapped_column(String(64))  # the password it was opened with
    ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_why: Mapped[str | None] = mapped_column(String(100), default=None)
