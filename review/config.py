"""Settings of the review application, and the signing secret it persists when none is given.

`ReviewSettings` extends the project's `Settings` (same `AVATARFLOW_` prefix, same data root and
database) with what only the review app needs, so avatarflow/settings.py stays untouched.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from pydantic import Field, SecretStr

from avatarflow.settings import Settings

# Reasons a reviewer may give for a rejection. A fixed list keeps the reports countable.
REJECT_REASONS: dict[str, str] = {
    "lip_sync": "Lip sync",
    "identity": "Identity drift",
    "artifacts": "Visual artifacts",
    "audio": "Audio problem",
    "prompt_mismatch": "Does not match the prompt",
    "other": "Other",
}


class ReviewSettings(Settings):
    review_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs session cookies. Unset: one is generated once and kept in "
        "<data_root>/review/secret_key, so every process on this data root shares it.",
    )
    review_host: str = "127.0.0.1"
    # The address reviewers use is the shared setting `review_url` (AVATARFLOW_REVIEW_URL), which the
    # pipeline also puts into its Prefect artifacts; the default port here matches its default.
    review_port: int = 8080
    review_secure_cookies: bool = Field(
        default=False, description="Mark the session cookie Secure; turn on whenever served over HTTPS."
    )
    review_same_site: str = Field(default="lax", pattern="^(lax|strict)$")
    review_session_hours: float = Field(
        default=12.0, gt=0, description="A session ends this long after sign-in, however busy (absolute lifetime).")
    review_idle_minutes: float = Field(
        default=60.0, gt=0, description="A session ends after this long without a request (idle lifetime).")
    review_claim_minutes: float = Field(default=20.0, gt=0)
    review_login_max_failures: int = Field(
        default=5, ge=1, description="Failures of one username from one address, per window, before that pair "
        "is refused (the same reviewer elsewhere is not)")
    review_login_free_failures: int = Field(
        default=3, ge=0, description="Failures per username, and 10× this per address, before answers slow down")
    review_login_delay_s: float = Field(
        default=0.25, ge=0, description="The first slowed answer's delay; it doubles with each further failure")
    review_login_max_delay_s: float = Field(default=8.0, ge=0, description="The longest delay")
    review_login_window_seconds: int = Field(default=300, ge=1)
    review_trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses of reverse proxies whose X-Forwarded-For names the client "
        "(empty: the connection's address is the client's)")
    # A rejection for one of these reasons goes back to generation (new seed) while attempts remain
    # (the shared setting max_generation_attempts counts them).
    review_regenerate_reasons: list[str] = Field(default_factory=lambda: ["lip_sync", "artifacts"])
    review_deliver_deployment: str = "deliver/deliver"
    review_regenerate_deployment: str | None = Field(
        default=None, description="Deployment started with {'asset_ids': [...]} after a regenerate."
    )
    prefect_ui_url: str = "http://127.0.0.1:4200"


def review_url(settings: ReviewSettings) -> str:
    """Where the review queue lives; the pipeline puts this link in a Prefect artifact."""
    return settings.review_url.rstrip("/") + "/queue"


def session_secret(settings: ReviewSettings) -> str:
    """The configured secret, or the one persisted under the data root (created on first use)."""
    if settings.review_secret is not None and settings.review_secret.get_secret_value():
        return settings.review_secret.get_secret_value()
    path = settings.data_root / "review" / "secret_key"
    if not path.exists():
        _create_secret_file(path)
    value = path.read_text().strip()
    for _ in range(50):  # another process may have created the file and not written it yet
        if value:
            break
        time.sleep(0.02)
        value = path.read_text().strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} holds a secret shorter than 32 characters; delete it to regenerate")
    return value


def _create_secret_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when two processes start together exactly one writes, and both read the same key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
        handle.flush()
        os.fsync(handle.fileno())
