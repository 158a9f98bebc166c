"""A batch through a 30-second PostgreSQL outage and a Prefect server restart, both mid-batch.

Real parts: a PostgreSQL server of its own (stopped and started again on the same data), a real
`prefect server start`, the batch flow in its own process with the CPU engine. The batch must
finish by itself with every asset where it would have got anyway, no generation made twice
(no interrupted or lost attempt), and each video checked and transcoded once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from db.models import Asset, Event, QCResult, Rendition

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FINAL = {"approved", "review_pending", "rejected"}


def manifest(media: Path, tmp_path: Path, count: int) -> Path:
    images = ["skimage_astronaut.png", "facerec_obama.jpg", "liveavatar_boy.jpg", "liveavatar_man.png"]
    rows = []
    for i in range(count):
        audio = tmp_path / f"speech-{i}.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(0.5 * i), "-t", "3", "-i",
                        str(media / "audio" / "retalking_audio1.wav"), str(audio)], check=True, timeout=60)
        rows.append({"image": str(media / "image" / images[i % len(images)]), "audio": str(audio),
                     "external_id": f"a{i}", "template": "default"})
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if found := check():
                return found
        except Exception:  # noqa: BLE001 - the database may be the thing that is down
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_batch_rides_out_a_postgres_outage_and_a_prefect_restart(prefect_server, settings_env, media, tmp_path,
                                                                    monkeypatch):
    from db.pgserver import PostgresServer

    pg = PostgresServer().start()
    try:
        url = pg.create_database("outage")
        env = dict(os.environ, PREFECT_API_URL=prefect_server, AVATARFLOW_DATABASE_URL=url,
                   AVATARFLOW_ENGINE="cpu", AVATARFLOW_GANGS="cpu", AVATARFLOW_GANG_LOCK="process",
                   AVATARFLOW_INPUT_ROOTS=json.dumps([str(media), str(tmp_path)]),
                   AVATARFLOW_DB_RETRY_SECONDS="120",
                   # Prefect's client retries its API calls; a restart of a few seconds is inside that.
                   PREFECT_CLIENT_MAX_RETRIES="12", PREFECT_CLIENT_RETRY_JITTER_FACTOR="0.2")
        batch = manifest(media, tmp_path, 4)
        log = tmp_path / "flow.log"
        code = f"from flows.batch import batch_flow; batch_flow(manifest={str(batch)!r})"
        flow = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log.open("ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        engine = create_engine(url)

        def generated() -> int:
            with Session(engine) as session:
                return int(session.scalar(select(func.count(Event.id)).where(Event.to_state == "generated")) or 0)

        try:
            wait_for(lambda: generated() >= 1, 300, "a first video generated")
            engine.dispose()
            pg.pause()  # 30 s without the database, mid-batch
            time.sleep(30)
            pg.resume()
            before = generated()
            wait_for(lambda: generated() > before or flow.poll() is not None, 300, "generation going on")
            prefect_server.stop()  # then the Prefect server restarts
            time.sleep(3)
            prefect_server.start()
            assert flow.wait(timeout=600) == 0, log.read_text()[-4000:]
        finally:
            if flow.poll() is None:
                os.killpg(flow.pid, signal.SIGKILL)

        with Session(engine) as session:
            assets = session.scalars(select(Asset)).all()
            assert len(assets) == 4
            assert all(a.state in FINAL for a in assets), [(a.external_id, a.state, a.failure_reason) for a in assets]
            for asset in assets:
                attempts = asset.attempts
                # No GPU job lost or repeated: every attempt ended with its own outcome, none interrupted.
                assert all(a.ended_at is not None and a.outcome in ("ok", "failed") for a in attempts), \
                    [(a.number, a.outcome) for a in attempts]
                ok = [a for a in attempts if a.outcome == "ok"]
                moves = [e for e in asset.events if (e.from_state, e.to_state) == ("generating", "generated")]
                assert len(ok) == len(moves) >= 1
                qc_rows = session.scalar(select(func.count(QCResult.id)).where(QCResult.asset_id == asset.id))
                assert qc_rows == len(ok), (asset.external_id, qc_rows, len(ok))  # each video checked once
                kinds = session.scalars(select(Rendition.kind).where(Rendition.asset_id == asset.id)).all()
                assert len(kinds) == len(set(kinds)), kinds  # no rendition twice
        # The outage was real: the flow waited it out (its log says so) rather than never meeting it.
        flow_log = log.read_text()
        assert "the database is unavailable" in flow_log, flow_log[-3000:]
        engine.dispose()
    finally:
        pg.stop()
