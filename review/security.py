"""Session, CSRF and response-header protections shared by every route of the review app."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("avatarflow.review")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class NotSignedIn(Exception):
    """Raised by the auth dependency; the handler answers 303 to sign-in (pages) or 401 (the rest)."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (also before sign-in: the sign-in form has one)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def require_csrf(request: Request) -> None:
    """Every state-changing request must carry the session's token (form field or header).

    The token lives in the signed session cookie, which another site can neither read nor forge,
    so a cross-site form post cannot know it. Compared in constant time.
    """
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    supplied: Any = request.headers.get("x-csrf-token")
    if supplied is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        supplied = (await request.form()).get("csrf_token")
    if not isinstance(expected, str) or not isinstance(supplied, str) or not hmac.compare_digest(
        expected.encode(), supplied.encode()
    ):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page and try again")


def password_fingerprint(password_hash: str) -> str:
    """Stored in the session: changing a password (new hash) signs out every existing session."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def safe_next(target: str | None, default: str = "/queue") -> str:
    """Only same-site paths: `next=//evil.example` or `https://...` would be an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c in target for c in "\r\n\t\\"):
        return default
    return target


_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the headers above to every response; only static files may be cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _HEADERS if n not in names]
                # Nothing but the static files is stored, errors included (a 401 or 404 for media too).
                if not path.startswith("/static/") and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ErrorPage:
    """Turns an unhandled exception into a plain 500 inside the middleware stack.

    Starlette answers a crash in its outermost layer, outside `SecurityHeaders`, so the 500 would
    carry none of the security headers; caught here, it passes through them like any response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("review app: %s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise  # the response is under way: nothing sane can be sent any more
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"internal error; it has been logged"})
