"""Fixtures for the review app: settings, reviewer accounts, assets waiting for review, clients."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from avatarflow import records
from avatarflow.records import Crop

PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def review_settings(tmp_path):
    from review.config import ReviewSettings

    return ReviewSettings(
        data_root=tmp_path / "var",
        review_secret="test-secret-" + "x" * 40,
        review_claim_minutes=10,
        review_login_max_failures=5,
        review_login_free_failures=3,
        review_login_delay_s=0.0,  # no waiting in tests; the delay itself is tested on its own
        review_login_window_seconds=300,
        review_regenerate_reasons=["lip_sync", "artifacts"],
        max_generation_attempts=3,
    )


@pytest.fixture(scope="session")
def password_hash() -> str:
    # Argon2 takes about a second per hash on this busy machine: hash once, store it for each account.
    from review.auth import hash_password

    return hash_password(PASSWORD)


@pytest.fixture
def reviewers(database, password_hash) -> dict[str, int]:
    """alice and bob (reviewers) and root (admin), all with PASSWORD."""
    from db.models import Reviewer

    with database.session() as session:
        rows = [Reviewer(username=name, password_hash=password_hash, role=role, active=True)
                for name, role in (("alice", "reviewer"), ("bob", "reviewer"), ("root", "admin"))]
        session.add_all(rows)
        session.flush()
        return {row.username: row.id for row in rows}


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory) -> Path:
    """A real 2-second H.264/AAC MP4 (test pattern and a tone), made once per session."""
    out = tmp_path_factory.mktemp("tiny") / "tiny.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(out)],
        check=True, timeout=60,
    )
    return out


@dataclass
class PendingSpec:
    """One asset to put in review_pending: its files and the QC result that sent it there."""

    name: str
    video: Path
    crop: Path | None = None
    poster: Path | None = None
    thumb: Path | None = None
    batch: str = "batch-a"
    priority: int = 0
    prompt: str = "A person speaks calmly to the camera."
    score: float | None = 0.95
    gate: float = 0.92
    verdict: str = "pass"
    sampled: bool = True
    reasons: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    checks: list[Any] | None = None
    attempts: int = 1
    details: dict[str, Any] | None = None


def put_in_review(database, data_root: Path, spec: PendingSpec,
                  renditions: Callable[[Path, Path, str], list[Any]] | None = None) -> int:
    """Register an asset and walk it through the real state machine to review_pending.

    Files are copied under the data root (where the pipeline keeps them). `renditions(src, dir,
    name)` may make real renditions (tasks.transcode); otherwise the files are used as they are.
    """
    from sqlalchemy import select

    from db.lifecycle import transition
    from db.models import Asset, Batch, Event, GenerationAttempt, QCResult, Rendition
    from db.states import AssetState as S

    key = hashlib.sha256(f"{spec.batch}/{spec.name}".encode()).hexdigest()
    folder = data_root / "assets" / key[:2] / key
    folder.mkdir(parents=True, exist_ok=True)
    crop = None
    if spec.crop is not None:
        crop = data_root / "cache" / "faces" / f"{key[:16]}{spec.crop.suffix}"
        crop.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(spec.crop, crop)
    with database.session() as session:
        batch = session.scalar(select(Batch).where(Batch.name == spec.batch))
        if batch is None:
            batch = Batch(name=spec.batch, created_by="test")
            session.add(batch)
            session.flush()
        details = records.write({}, Crop(path=str(crop), source_size=(512, 512), face_box=(0, 0, 1, 1),
                                         crop_box=(0, 0, 512, 512))) if crop else {}
        asset = Asset(key=key, batch=batch, external_id=spec.name, image_path=str(spec.crop or "/in/x.png"),
                      image_sha256="0" * 64, audio_path="/in/x.wav", audio_sha256="1" * 64,
                      prompt=spec.prompt, preset="standard", priority=spec.priority,
                      details={**details, **(spec.details or {})})
        session.add(asset)
        session.add(Event(asset=asset, actor="test", from_state=None, to_state="submitted"))
        session.flush()
        for state in (S.PREPROCESSED, S.PLANNED):
            transition(session, asset, state, actor="test")
        attempt = None
        for number in range(1, spec.attempts + 1):
            transition(session, asset, S.GENERATING, actor="test")
            attempt = GenerationAttempt(asset=asset, number=number, engine="cpu", seed=1000 + number,
                                        outcome="succeeded", output_path=str(spec.video))
            session.add(attempt)
            session.flush()
            transition(session, asset, S.GENERATED, actor="test")
            if number < spec.attempts:  # an earlier attempt that QC failed: regenerated
                session.add(QCResult(asset=asset, attempt_id=attempt.id, scorer="landmarks", score=0.41,
                                     gate=spec.gate, verdict="fail", reasons=["lip-sync score below the gate"]))
                transition(session, asset, S.QC_FAILED, actor="test")
                transition(session, asset, S.PLANNED, actor="test", reason="regenerate with a new seed")
        session.add(QCResult(asset=asset, attempt_id=attempt.id if attempt else None, scorer="landmarks",
                             score=spec.score, gate=spec.gate, verdict=spec.verdict,
                             reasons=spec.reasons or [], metrics=spec.metrics or {}, checks=spec.checks or [],
                             sampled_for_review=spec.sampled))
        if spec.verdict == "pass":
            transition(session, asset, S.QC_PASSED, actor="test")
        transition(session, asset, S.REVIEW_PENDING, actor="test",
                   reason="sampled for review" if spec.sampled else "borderline")
        asset_id, name = asset.id, f"{spec.batch}_{key[:12]}"

    if renditions is not None:
        files = renditions(spec.video, folder / "renditions", name)
        from tasks.transcode import record_renditions

        with database.session() as session:
            record_renditions(session, session.get(Asset, asset_id), files)
        return asset_id
    with database.session() as session:
        for kind, src in (("web", spec.video), ("poster", spec.poster), ("thumb", spec.thumb)):
            if src is None:
                continue
            dest = folder / f"{name}_{kind}{src.suffix}"
            shutil.copy(src, dest)
            session.add(Rendition(asset_id=asset_id, kind=kind, path=str(dest), bytes=dest.stat().st_size,
                                  sha256=hashlib.sha256(dest.read_bytes()).hexdigest()))
    return asset_id


@pytest.fixture
def pending(database, review_settings, tiny_video, media) -> Callable[..., int]:
    """Make one asset in review_pending (tiny real video; a real portrait as its crop)."""
    crop = media / "image" / "sadtalker_happy.png"

    def make(name: str, **overrides: Any) -> int:
        spec = PendingSpec(name=name, video=tiny_video, crop=crop, **overrides)
        return put_in_review(database, review_settings.data_root, spec)

    return make


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture
def app_factory(database, review_settings):
    """create_app with recorded actions (approved / rejected calls are kept in `.calls`)."""
    from review.app import create_app

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any, Any]] = []

        def approved(self, asset_ids):
            self.calls.append(("approved", list(asset_ids), None))

        def rejected(self, asset_id, regenerate):
            self.calls.append(("rejected", asset_id, regenerate))

    def make(actions: Any = None):
        actions = actions if actions is not None else Recorder()
        return create_app(database, review_settings, actions), actions

    return make


def sign_in(client, username: str, password: str = PASSWORD):
    """Sign in through the form, as a browser would; returns the final response."""
    page = client.get("/sign-in")
    return client.post("/sign-in", data={"username": username, "password": password,
                                         "csrf_token": csrf_of(page.text), "next": "/queue"},
                       follow_redirects=False)


@pytest.fixture
def signed_in(app_factory, reviewers):
    """A TestClient signed in as `username` (each call: a separate browser session)."""
    from fastapi.testclient import TestClient

    app, actions = app_factory()
    clients = []

    def make(username: str = "alice") -> Any:
        client = TestClient(app, base_url="http://testserver")
        response = sign_in(client, username)
        assert response.status_code == 303, response.text
        client.actions = actions  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn serving the app on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def claimed(client, asset_id: int, **params: str):
    """Open an asset and claim it with the page's button (a POST, as the browser does); returns the page."""
    page = client.get(f"/assets/{asset_id}", params=params)
    client.post(f"/assets/{asset_id}/claim", data={"csrf_token": csrf_of(page.text), **params})
    return client.get(f"/assets/{asset_id}", params=params)


@pytest.fixture(scope="session")
def kit():
    """The helpers above for test modules (tests/review is not importable as a package)."""
    from types import SimpleNamespace

    return SimpleNamespace(PASSWORD=PASSWORD, PendingSpec=PendingSpec, put_in_review=put_in_review,
                           csrf_of=csrf_of, sign_in=sign_in, Server=Server, claimed=claimed)
