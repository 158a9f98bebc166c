"""The asset state machine: legal moves, illegal moves, events, failures and retries."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from avatarflow.errors import ClaimConflict, IllegalTransition
from db.lifecycle import transition
from db.models import Asset, Event
from db.states import TERMINAL, TRANSITIONS, AssetState, allowed

HAPPY_PATH = ["preprocessed", "planned", "generating", "generated", "qc_passed", "approved", "delivered"]


def test_every_state_has_an_entry_and_terminal_states_lead_nowhere():
    assert set(TRANSITIONS) == set(AssetState)
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
    # every non-terminal working state can fail
    for state in AssetState:
        if state not in TERMINAL and state not in (AssetState.FAILED, AssetState.QC_FAILED):
            assert allowed(state, "failed"), state


def test_happy_path_writes_one_event_per_move(database, make_assets):
    with database.session() as session:
        (asset_id,) = make_assets(session, 1)
    for target in HAPPY_PATH:
        with database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, target, actor="worker-1", reason=f"to {target}")
    with database.session() as session:
        events = session.scalars(select(Event).where(Event.asset_id == asset_id).order_by(Event.id)).all()
        moves = [(e.from_state, e.to_state) for e in events]
        assert moves == list(zip([None, "submitted", *HAPPY_PATH[:-1]], ["submitted", *HAPPY_PATH]))
        assert all(e.actor == "worker-1" for e in events[1:])
        assert events[-1].reason == "to delivered"
        assert events[-1].at.tzinfo is not None
        asset = session.get(Asset, asset_id)
        assert asset.state == "delivered"
        assert asset.version == 1 + len(HAPPY_PATH)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [([], "generated"), ([], "delivered"), (["preprocessed"], "approved"),
     (HAPPY_PATH, "submitted"), (["preprocessed", "planned", "generating", "generated", "qc_failed", "rejected"], "approved")],
)
def test_illegal_transition_raises_and_writes_nothing(database, make_assets, path, illegal):
    with database.session() as session:
        (asset_id,) = make_assets(session, 1)
        asset = session.get(Asset, asset_id)
        for target in path:
            transition(session, asset, target, actor="t")
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        before = session.query(Event).count()
        with pytest.raises(IllegalTransition, match=f"cannot go from {asset.state} to {illegal}"):
            transition(session, asset, illegal, actor="t")
        assert session.query(Event).count() == before


def test_failure_carries_stage_reason_and_retryability_and_retry_reenters_that_stage(database, make_assets):
    with database.session() as session:
        (asset_id,) = make_assets(session, 1)
        asset = session.get(Asset, asset_id)
        transition(session, asset, "preprocessed", actor="t")
        transition(session, asset, "planned", actor="t")
        transition(session, asset, "generating", actor="t")
        with pytest.raises(ValueError):
            transition(session, asset, "failed", actor="t")  # no reason given
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        transition(session, asset, "failed", actor="gpu-0", reason="CUDA out of memory",
                   failed_stage="generate", retryable=True)
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        assert (asset.state, asset.failed_stage, asset.failure_reason, asset.retryable) == (
            "failed", "generate", "CUDA out of memory", True)
        event = session.scalars(select(Event).order_by(Event.id.desc())).first()
        assert event.data == {"retryable": True}
        with pytest.raises(IllegalTransition, match="restarts it from planned"):
            transition(session, asset, "submitted", actor="operator")
        transition(session, asset, "planned", actor="operator", reason="re-run")
        assert asset.failed_stage is None and asset.failure_reason is None and asset.retryable is None


def test_stale_write_loses_the_race(database, make_assets):
    """A worker holding an old copy of an asset cannot overwrite a newer write: ClaimConflict."""
    with database.session() as session:
        (asset_id,) = make_assets(session, 1)
    slow = database._sessions()  # expire_on_commit=False: keeps its copy after the read ends
    try:
        with slow.begin():
            stale = slow.get(Asset, asset_id)
        with database.session() as fast:
            transition(fast, fast.get(Asset, asset_id), "preprocessed", actor="fast-worker")
        with pytest.raises(ClaimConflict, match="changed by another worker"):
            transition(slow, stale, "failed", actor="slow-worker", reason="x", failed_stage="preprocess")
        slow.rollback()
    finally:
        slow.close()
    with database.session() as session:
        assert session.get(Asset, asset_id).state == "preprocessed"
        assert [e.actor for e in session.get(Asset, asset_id).events] == ["test", "fast-worker"]
