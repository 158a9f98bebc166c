"""The database itself: migrations, SQLite settings, the append-only event log, both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from db.models import AppendOnlyViolation, Asset, Event
from db.session import Database, open_database


def test_migrations_create_every_table_and_are_idempotent(database):
    tables = set(inspect(database.engine).get_table_names())
    assert {"batches", "assets", "events", "generation_attempts", "qc_results", "reviews",
            "reviewers", "renditions", "alembic_version"} <= tables
    assert database.current_revision() == database.head_revision()
    assert database.migrate() is False  # nothing left to apply


def test_first_use_migrates_an_empty_database(db_url, monkeypatch):
    from avatarflow.settings import Settings

    database = open_database(Settings(database_url=db_url))
    try:
        assert database.current_revision() == database.head_revision()
    finally:
        database.dispose()


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'a.db'}", busy_timeout_ms=12_345)
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12_345
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.migrate()
    with pytest.raises(DBAPIError, match="FOREIGN KEY"), database.session() as session:
        session.execute(text(
            "INSERT INTO assets (key, batch_id, image_path, image_sha256, audio_path, audio_sha256,"
            " template_vars, preset, priority, tags, state, details, version, created_at, updated_at)"
            " VALUES ('k', 999, 'i', 'x', 'a', 'y', '{}', 'standard', 0, '[]', 'submitted', '{}', 1,"
            " '2026-01-01', '2026-01-01')"))
    database.dispose()


def test_event_log_is_append_only_in_the_orm_and_in_the_database(database, make_assets):
    with database.session() as session:
        (asset_id,) = make_assets(session, 1)
    with pytest.raises(AppendOnlyViolation), database.session() as session:
        session.get(Asset, asset_id).events[0].reason = "rewritten history"
    with pytest.raises(AppendOnlyViolation), database.session() as session:
        session.delete(session.get(Asset, asset_id).events[0])
    # Even hand-written SQL that bypasses the ORM is refused by the database's own trigger.
    for statement in ("UPDATE events SET reason = 'x'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="append-only"), database.session() as session:
            session.execute(text(statement))
    with database.session() as session:
        events = session.query(Event).all()
        assert len(events) == 1 and events[0].reason is None


def test_timestamps_come_back_timezone_aware(database, make_assets):
    with database.session() as session:
        (asset_id,) = make_assets(session, 1)
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        assert asset.created_at.utcoffset().total_seconds() == 0
