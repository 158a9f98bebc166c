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


class SignIn(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class SignInResult:
    outcome: SignIn
    reviewer: Reviewer | None = None


def sign_in(session: Session, settings: ReviewSettings, username: str, password: str, ip: str) -> SignInResult:
    """Check a password, unless recent failures for this username or address exceed the limit.

    The limit is checked before the password, so once it is reached even the right password is
    refused until the window has passed: a guesser learns nothing from further tries.
    """
    name = normalise_username(username)
    ip = ip[:64]
    now = utcnow()
    since = now - timedelta(seconds=settings.review_login_window_seconds)
    failures = select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.succeeded.is_(False), LoginAttempt.at >= since
    )
    by_name = session.scalar(failures.where(LoginAttempt.username == name)) or 0
    by_ip = session.scalar(failures.where(LoginAttempt.ip == ip)) or 0
    if by_name >= settings.review_login_max_failures or by_ip >= settings.review_login_max_failures_per_ip:
        return SignInResult(SignIn.RATE_LIMITED)

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
        return SignInResult(SignIn.BAD_CREDENTIALS)
    assert reviewer is not None
    if _hasher.check_needs_rehash(reviewer.password_hash):
        reviewer.password_hash = hash_password(password)
    return SignInResult(SignIn.OK, reviewer)
