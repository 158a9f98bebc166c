"""Shared fixtures: the real test media, a data root per test, and both database backends."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import PROMPT, add_assets

# Nothing in the tests may reach for a model hub or phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("AVATARFLOW_TEST_MEDIA", REPO.parent / "shared" / "media"))
ARTIFACTS = REPO / "test-artifacts"  # screenshots, contact sheets: things a person looks at

# The fast tier: the stage functions with their fakes, the rules and the architecture — no
# PostgreSQL server, no Prefect, no browser (seconds to a couple of minutes). Everything else is
# the real-parts tier. scripts/test.sh runs the fast tier first.
UNIT = ("tests/stages/", "tests/test_architecture.py", "tests/inference/test_output_rules.py",
        "tests/inference/test_planner.py", "tests/inference/test_validation.py", "tests/db/test_states.py",
        "tests/qc/test_gate.py", "tests/qc/test_sampling.py")


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    for item in items:
        path = Path(str(item.fspath)).relative_to(REPO).as_posix()
        if path.startswith(UNIT):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def media() -> Path:
    """The real test media in ../shared/media (see its README)."""
    if not (MEDIA / "image").is_dir():
        pytest.skip(f"real test media not found at {MEDIA}; set AVATARFLOW_TEST_MEDIA")
    return MEDIA


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole test session, started from the Debian binaries."""
    from db.pgserver import PostgresServer

    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        server.stop()
        pytest.fail(f"could not start the PostgreSQL test server: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database URL on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'avatarflow.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def database(db_url):
    """A migrated database on each backend in turn."""
    from db.session import Database

    db = Database(db_url)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def settings_env(tmp_path, monkeypatch):
    """Point avatarflow's settings at a fresh data root for one test."""
    from avatarflow.settings import get_settings

    monkeypatch.setenv("AVATARFLOW_DATA_ROOT", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


@pytest.fixture
def make_assets():
    return add_assets


@pytest.fixture
def mixed(media, tmp_path, tmp_path_factory):
    """A manifest folder with 20 rows: 6 good, 14 bad, each bad one for a different reason."""
    folder = tmp_path / "manifest"
    (folder / "portraits").mkdir(parents=True)
    shutil.copy(media / "image/liveavatar_man.png", folder / "portraits/man.png")
    (folder / "folder.jpg").mkdir()
    outside = tmp_path_factory.mktemp("elsewhere") / "stranger.jpg"
    shutil.copy(media / "image/facerec_obama.jpg", outside)
    img, aud = media / "image", media / "audio"
    rows = [
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT, "external_id": "r1", "tags": "news;en"},
        {"image": str(img / "skimage_astronaut.png"), "audio": str(aud / "retalking_audio1.wav"), "template": "default", "vars": {"subject": "an astronaut"}, "external_id": "r2"},
        {"image": str(img / "liveavatar_boy.jpg"), "audio": str(aud / "latentsync_demo1_audio.wav"), "prompt": PROMPT, "preset": "preview", "priority": "3"},
        {"image": str(img / "no_such_file.jpg"), "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT},
        {"image": str(img / "liveavatar_boy.jpg"), "audio": "", "prompt": PROMPT},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT, "preset": "ultra"},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "retalking_audio2.wav"), "prompt": ""},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT, "priority": "9", "tags": "other"},
        {"image": str(outside), "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT},
        {"image": "folder.jpg", "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "musetalk_eng.wav"), "template": "nope"},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "musetalk_eng.wav"), "template": "presenter"},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "pyannote_sample.wav"), "prompt": PROMPT, "priority": "high"},
        {"image": "portraits/man.png", "audio": str(aud / "liveavatar_cyclops_baker.wav"), "prompt": PROMPT, "external_id": "relative"},
        {"image": str(img / "liveavatar_fashion_blogger.jpg"), "audio": str(aud / "latentsync_demo2_audio.wav"), "template": "presenter", "vars": {"topic": "the spring collection"}},
        {"image": str(aud / "whisper_jfk.flac"), "audio": str(aud / "whisper_jfk.flac"), "prompt": PROMPT},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "latentsync_demo3_audio.wav"), "prompt": PROMPT, "template": "default"},
        {"image": str(img / "musetalk_monalisa.png"), "audio": str(aud / "retalking_audio2.wav"), "prompt": PROMPT, "external_id": "r2"},
        {"image": str(img / "musetalk_monalisa.png"), "audio": str(aud / "latentsync_demo3_audio.wav"), "prompt": "A painted woman smiles and speaks softly."},
        {"imgae": str(img / "facerec_obama.jpg"), "image": str(img / "sadtalker_happy.png"), "audio": str(aud / "latentsync_demo2_audio.wav"), "prompt": PROMPT},
    ]
    expected = {
        4: ("image", "file not found"), 5: ("audio", "missing"), 6: ("preset", "unknown preset 'ultra'"),
        7: ("prompt", "empty prompt"), 8: ("(row)", "duplicate row: same image, audio, prompt and preset as row 1"),
        9: ("image", "outside the allowed input folders"), 10: ("image", "not a regular file"),
        11: ("template", "unknown prompt template 'nope'"), 12: ("template", "needs a value for topic"),
        13: ("priority", "must be a whole number"), 16: ("image", "does not look like an image file"),
        17: ("prompt", "not both"), 18: ("external_id", "first used in row 2"), 20: ("imgae", "unknown field"),
    }
    return folder, rows, expected, [tmp_path, media]


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes 20-25 s to start on this machine)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
