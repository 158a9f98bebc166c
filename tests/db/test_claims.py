"""Claims: two workers never hold the same asset, across real processes, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from db.lifecycle import claim_next, release, try_claim
from db.models import Asset, Event, utcnow

WORKER = Path(__file__).with_name("claim_worker.py")


def test_four_processes_racing_for_200_assets_claim_each_exactly_once(database, make_assets, tmp_path):
    with database.session() as session:
        ids = make_assets(session, 200)
    go = tmp_path / "go"
    outputs = [tmp_path / f"worker{i}.json" for i in range(4)]
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), database.url, f"worker-{i}", str(go), str(out)])
        for i, out in enumerate(outputs)
    ]
    time.sleep(1.0)  # let every process import and connect, then start them together
    go.touch()
    for process in workers:
        assert process.wait(timeout=300) == 0
    claimed = [json.loads(out.read_text()) for out in outputs]
    counts = Counter(asset_id for one in claimed for asset_id in one)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}, "an asset was claimed by more than one worker"
    assert sum(1 for one in claimed if one) >= 2, "the race needs more than one winner to mean anything"
    with database.session() as session:
        assert session.scalar(select(func.count()).where(Asset.state == "preprocessed")) == 200
        claim_events = session.execute(
            select(Event.asset_id, func.count()).where(Event.reason == "claimed").group_by(Event.asset_id)
        ).all()
        assert len(claim_events) == 200 and all(n == 1 for _, n in claim_events)
        # the worker recorded in the database is the one that reported the claim
        owner = {asset_id: f"worker-{i}" for i, one in enumerate(claimed) for asset_id in one}
        for asset in session.scalars(select(Asset)):
            assert asset.claimed_by == owner[asset.id]


def test_claims_follow_priority_then_age_and_expire(database, make_assets):
    with database.session() as session:
        low = make_assets(session, 2, batch_name="low", priority=0)
        high = make_assets(session, 1, batch_name="high", priority=5)
    with database.session() as session:
        first = claim_next(session, "w1", ["submitted"])
        assert first.id == high[0]
        second = claim_next(session, "w1", ["submitted"])
        assert second.id == low[0]
    with database.session() as session:
        # w2 cannot take what w1 holds...
        assert not try_claim(session, low[0], "w2", 60)
        # ...until w1's lease runs out (a worker that died holding it)
        session.execute(update(Asset).where(Asset.id == low[0]).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
        assert try_claim(session, low[0], "w2", 60)
    with database.session() as session:
        asset = session.get(Asset, low[1])
        assert try_claim(session, asset.id, "w3", 60)
        session.refresh(asset)
        release(session, asset, "someone-else")  # not theirs: nothing happens
        assert asset.claimed_by == "w3"
        release(session, asset, "w3")
        assert asset.claimed_by is None
        assert try_claim(session, asset.id, "w4", 60)
