"""Reviewer accounts, password hashing (Argon2id) and the database-backed sign-in rate limit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from avatarflow.errors import AvatarflowError
from db.models import Reviewer, utcnow
from db.review_models import LoginAttempt
from review.config import ReviewSettings
from review.sessions import end_all

ROLES = ("reviewer", "admin")
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a wrong name costs as long as a wrong
    password and response times do not reveal which accounts exist."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(AvatarflowError):
    """A reviewer account cannot be created as asked."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def normalise_username(username: str) -> str:
    return username.strip().lower()[:100]


def add_reviewer(session: Session, username: str, password: str, role: str = "reviewer") -> Reviewer:
    name = normalise_username(username)
    if not name or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError(f"username {username!r} must be letters, digits and . _ - @ only")
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(Reviewer).where(Reviewer.username == name)) is not None:
        raise AccountError(f"a reviewer named {name!r} already exists")
    reviewer = Reviewer(username=name, password_hash=hash_password(password), role=role, active=True)
    session.add(reviewer)
    session.flush()
    return reviewer


def set_active(session: Session, reviewer: Reviewer, active: bool) -> int:
    """Enable or disable an account; disabling ends its sessions. Returns the sessions ended."""
    reviewer.active = active
    return 0 if active else end_all(session, reviewer.id, "account disabled")


def change_password(session: Session, reviewer: Reviewer, password: str) -> int:
    """A new password; every session opened with the old one ends. Returns the sessions ended."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    reviewer.password_hash = hash_password(password)
    return end_all(session, reviewer.id, "password changed")


class SignIn(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class SignInResult:
    outcome: SignIn
    reviewer: Reviewer | None = None
    delay_s: float = 0.0  # how long to hold the answer back (a guesser is slowed, nobody locked out)


def throttle_delay(by_name: int, by_ip: int, settings: ReviewSettings) -> float:
    """Seconds to hold an answer back after recent failures: doubling past the free ones, capped."""
    over = max(by_name - settings.review_login_free_failures, by_ip - 10 * settings.review_login_free_failures)
    if over <= 0 or settings.review_login_delay_s <= 0:
        return 0.0
    return min(settings.review_login_max_delay_s, settings.review_login_delay_s * 2 ** (over - 1))


def sign_in(session: Session, settings: ReviewSettings, username: str, password: str, ip: str) -> SignInResult:
    """Check a password; refuse one username from one address after repeated failures.

    The refusal is per (username, address) pair and comes before the password check, so a guesser
    at one address learns nothing more there while the reviewer at their own desk still signs in.
    Failures per username (from anywhere) and per address (for any name) only slow the answers
    (`throttle_delay`): behind a shared proxy address nobody is locked out by someone else.
    """
    name = normalise_username(username)
    ip = ip[:64]
    now = utcnow()
    since = now - timedelta(seconds=settings.review_login_window_seconds)
    failures = select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.succeeded.is_(False), LoginAttempt.at >= since
    )
    by_pair = session.scalar(failures.where(LoginAttempt.username == name, LoginAttempt.ip == ip)) or 0
    by_name = session.scalar(failures.where(LoginAttempt.username == name)) or 0
    by_ip = session.scalar(failures.where(LoginAttempt.ip == ip)) or 0
    delay = throttle_delay(by_name, by_ip, settings)
    if by_pair >= settings.review_login_max_failures:
        return SignInResult(SignIn.RATE_LIMITED, delay_s=delay)

    reviewer = session.scalar(select(Reviewer).where(Reviewer.username == name))
    if reviewer is None:
        verify_password(_dummy_hash(), password)
        ok = False
    else:
        ok = verify_password(reviewer.password_hash, password) and reviewer.active
    session.add(LoginAttempt(username=name, ip=ip, at=now, succeeded=ok))
    # Old attempts mean nothing to the limit; drop them so the table stays small.
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=1)))
    if not ok:
        return SignInResult(SignIn.BAD_CREDENTIALS, delay_s=delay)
    assert reviewer is not None
    if _hasher.check_needs_rehash(reviewer.password_hash):
        reviewer.password_hash = hash_password(password)
    return SignInResult(SignIn.OK, reviewer, delay_s=delay)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The client's address: the connection's, or, from a trusted proxy, the nearest untrusted hop
    of X-Forwarded-For (the rightmost: earlier entries are whatever the client claimed)."""
    address = peer or "unknown"
    if address in trusted and forwarded_for:
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            if hop not in trusted:
                return hop[:64]
    return address
