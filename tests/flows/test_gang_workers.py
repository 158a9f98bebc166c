"""Long-lived gang workers in separate processes beside real batch flows and a real Prefect server.

Two `avatarflow gang worker` processes with the same gang layout ("cpu"), told apart only by
AVATARFLOW_GANG_HOST as two hosts would be, serve two batches whose flows run in their own
processes (AVATARFLOW_GENERATION=workers). One worker is SIGKILLed in the middle of a job (and
a new one started on its "host"), then the Prefect server is stopped and started again; at the
end host-b, alive throughout, is drained.
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
from sqlalchemy import func, select

from avatarflow.settings import get_settings
from db.models import Asset, Batch, Event, GenerationAttempt
from db.session import open_database
from db.worker_models import GangWorkerRecord
from tasks.intake import submit

pytestmark = pytest.mark.slow
AVATARFLOW = str(Path(sys.executable).with_name("avatarflow"))


@pytest.fixture
def workers_env(settings_env, monkeypatch, media, tmp_path):
    for name, value in {"AVATARFLOW_INPUT_ROOTS": json.dumps([str(media), str(tmp_path)]),
                        "AVATARFLOW_GENERATION": "workers", "AVATARFLOW_GANGS": "cpu", "AVATARFLOW_ENGINE": "cpu",
                        "AVATARFLOW_WORKER_LEASE_SECONDS": "4", "AVATARFLOW_WORKER_POLL_SECONDS": "0.3"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def manifest(media: Path, tmp_path: Path, name: str, count: int, speech: str) -> Path:
    """`count` portraits with 2.5 s pieces of real speech (short, so the CPU engine is quick)."""
    images = ["skimage_astronaut.png", "facerec_obama.jpg", "liveavatar_boy.jpg", "liveavatar_man.png"]
    rows = []
    for i in range(count):
        audio = tmp_path / f"{name}-{i}.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(0.4 * i), "-t", "2.5", "-i",
                        str(media / "audio" / speech), str(audio)], check=True, timeout=60)
        rows.append({"image": str(media / "image" / images[i % len(images)]), "audio": str(audio),
                     "external_id": f"{name}-{i}", "template": "default"})
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def start_worker(env: dict[str, str], host: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([AVATARFLOW, "gang", "worker", "--gang", "cpu"], env=dict(env, AVATARFLOW_GANG_HOST=host),
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def start_flow(env: dict[str, str], batch: str, log: Path) -> subprocess.Popen[bytes]:
    code = f"from flows.batch import batch_flow; batch_flow(batch={batch!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_gang_workers_share_batches_survive_an_outage_a_kill_and_drain(prefect_server, workers_env, media, tmp_path):
    database = open_database(workers_env)
    for name, count, speech in (("one", 5, "retalking_audio1.wav"), ("two", 3, "retalking_audio2.wav")):
        submit(database, manifest(media, tmp_path, name, count, speech), batch_name=name,
               input_roots=workers_env.input_roots)
    env = dict(os.environ, PREFECT_API_URL=prefect_server)
    logs = tmp_path / "logs"
    logs.mkdir()
    flows = {name: start_flow(env, name, logs / f"flow-{name}.log") for name in ("one", "two")}

    def planned() -> bool:
        with database.session() as session:
            return session.scalar(select(func.count(Asset.id)).where(Asset.state == "planned")) == 8

    # The flows prepare every video before a gang exists, so that the queue holds both batches
    # when the workers start: the older batch first, which both free workers then share.
    wait_for(planned, 240, "both batches planned")
    workers = {host: start_worker(env, host, logs / f"{host}.log") for host in ("host-a", "host-b")}

    def generated() -> int:
        with database.session() as session:
            return int(session.scalar(select(func.count(Event.id)).where(Event.to_state == "generated")) or 0)

    def busy_worker(host: str) -> GangWorkerRecord | None:
        with database.session() as session:
            row = session.scalars(select(GangWorkerRecord).where(GangWorkerRecord.host == host,
                                                                 GangWorkerRecord.current_asset_id.is_not(None))).first()
            if row is not None:
                session.expunge(row)
            return row

    try:
        # host-a is killed in the middle of a job: its claim lapses and host-b generates that video.
        victim = wait_for(lambda: busy_worker("host-a"), 240, "host-a busy with a job")
        os.killpg(workers["host-a"].pid, signal.SIGKILL)
        workers["host-a"].wait(timeout=30)
        workers["host-a"] = start_worker(env, "host-a", logs / "host-a.log")  # a new worker on that host
        # Then the Prefect server goes away for a while: the gang workers do not talk to Prefect,
        # so generation goes on.
        prefect_server.stop()
        during = generated()
        wait_for(lambda: generated() > during, 120, "a video generated while Prefect was down")
        prefect_server.start()
        # The flows may have died with the server (a flow run's API calls outlast its retries only
        # so long): whatever remains is carried on by running the batch again.
        for name, process in flows.items():
            try:
                process.wait(timeout=300)
            except subprocess.TimeoutExpired:
                raise AssertionError((logs / f"flow-{name}.log").read_text()[-3000:]) from None
            if process.returncode != 0:
                flows[name] = start_flow(env, name, logs / f"flow-{name}.log")
                flows[name].wait(timeout=300)
        # Drained, the survivor finishes what it has and exits by itself.
        done = subprocess.run([AVATARFLOW, "gang", "drain", "cpu", "--host", "host-b"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert workers["host-b"].wait(timeout=60) == 0
    finally:
        for process in (*workers.values(), *flows.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)

    with database.session() as session:
        assets = session.scalars(select(Asset)).all()
        # Every asset got to the end (the CPU engine's mouth fails QC now and then: rejected after
        # its regenerations is an end too), each generation recorded once, never two at a time.
        assert all(a.state in ("approved", "review_pending", "rejected") for a in assets), \
            [(a.external_id, a.state, a.failure_reason) for a in assets]
        for asset in assets:
            ok = [a for a in asset.attempts if a.outcome == "ok"]
            moves = [e for e in asset.events if (e.from_state, e.to_state) == ("generating", "generated")]
            assert len(ok) == len(moves) >= 1, (asset.external_id, [(a.outcome, a.host) for a in asset.attempts])
            spans = sorted((a.started_at, a.ended_at) for a in asset.attempts)
            assert all(a.ended_at is not None for a in asset.attempts)
            assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
        batches_by_host: dict[str, set[str]] = {}
        for host, batch in session.execute(select(GenerationAttempt.host, Batch.name).select_from(GenerationAttempt)
                                           .join(Asset, GenerationAttempt.asset_id == Asset.id)
                                           .join(Batch, Asset.batch_id == Batch.id)):
            batches_by_host.setdefault(host, set()).add(batch)
        # Both gangs took jobs of the older batch (both started on it: it is first in the queue), and
        # between them both batches (which gang takes which later video is the queue's business:
        # whoever is free takes the next).
        assert all("one" in batches for batches in batches_by_host.values()), batches_by_host
        assert set(batches_by_host) == {"host-a", "host-b"}
        assert set().union(*batches_by_host.values()) == {"one", "two"}
        # The killed job was finished by another worker (host-b, or host-a's new worker: whichever
        # was free when the claim lapsed), the interrupted attempt kept.
        lost = session.get(Asset, victim.current_asset_id)
        outcomes = [(a.outcome, a.host) for a in sorted(lost.attempts, key=lambda a: a.number)]
        finished_by = [e.actor for e in lost.events if (e.from_state, e.to_state) == ("generating", "generated")]
        assert outcomes[0] == ("interrupted", "host-a") and outcomes[-1][0] == "ok", outcomes
        assert finished_by and victim.name not in finished_by, (victim.name, finished_by)
        rows = session.scalars(select(GangWorkerRecord).order_by(GangWorkerRecord.id)).all()
        b = next(r for r in rows if r.host == "host-b")
        assert b.state == "stopped" and b.jobs_done >= 2
        # One model load per worker, however many jobs and batches it served.
        assert all(r.model_loads == 1 for r in rows if r.jobs_done + r.jobs_failed), \
            [(r.name, r.model_loads, r.jobs_done) for r in rows]
        killed = next(r for r in rows if r.name == victim.name)
        assert killed.state != "stopped"  # it never had the chance to say so; its heartbeat went stale
    database.dispose()
