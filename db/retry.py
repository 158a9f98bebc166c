"""Riding out a database outage: bounded retries with backoff for work that can simply run again.

A PostgreSQL restart or a network blip surfaces as `sqlalchemy.exc.OperationalError` (or
`InterfaceError`, or `DisconnectionError`) from whatever touched the database at that moment.
Everything avatarflow does against the database is either a read or a transaction that commits
whole or not at all, so after such an error the same call can be made again; `retry_transient`
does that with exponential backoff until `within_s` has passed, then lets the error through.
Anything else (a constraint, a bug) is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

log = logging.getLogger("avatarflow.db")
T = TypeVar("T")

# An outage of a minute must cost only time (issue: "survives what production throws at it").
DEFAULT_WITHIN_S = 180.0


def is_transient(error: BaseException) -> bool:
    """True for the database being unreachable or restarting, not for a wrong statement."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
        text = str(error).lower()
        # SQLite reports a busy file as OperationalError too: waiting helps there as well.
        return not any(word in text for word in ("syntax error", "no such table", "no such column"))
    return False


def retry_transient(fn: Callable[[], T], *, what: str, within_s: float = DEFAULT_WITHIN_S,
                    first_delay_s: float = 0.5, max_delay_s: float = 10.0) -> T:
    """`fn()`, called again after transient database errors until `within_s` has passed."""
    deadline = time.monotonic() + within_s
    delay = first_delay_s
    while True:
        try:
            return fn()
        except Exception as error:
            if not is_transient(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: the database is unavailable (%s); trying again in %.1f s",
                        what, type(error).__name__, delay)
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)
