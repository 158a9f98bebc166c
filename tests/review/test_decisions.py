"""Decisions, the queue and the actions that follow a decision."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from sqlalchemy import func, select

from db.models import Asset, Event, QCResult, Review
from qc.record import VideoChecks
from qc.result import LipSyncResult, SyncWindow
from qc.verdicts import CheckResult


def state_of(database, asset_id: int) -> str:
    with database.session() as session:
        return session.get(Asset, asset_id).state


def decide(client, kit, asset_id: int, **form):
    page = kit.claimed(client, asset_id)
    assert page.url.path == f"/assets/{asset_id}", page.url
    return client.post(f"/assets/{asset_id}/decision", data={"csrf_token": kit.csrf_of(page.text), **form},
                       follow_redirects=False)


# ---- what a decision does -----------------------------------------------------------------------


def test_approve_records_review_and_event_then_starts_delivery(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice = signed_in("alice")
    response = decide(alice, kit, asset_id, decision="approve", notes="Looks good.", time_ranges="0.2-0.4")
    # 307: the browser posts the same form to /next, which claims the next asset
    assert response.status_code == 307 and response.headers["location"] == "/next"
    assert alice.actions.calls == [("approved", [asset_id], None)]
    with database.session() as session:
        review = session.scalars(select(Review)).one()
        assert (review.decision, review.reason_code, review.notes) == ("approve", None, "Looks good.")
        assert review.time_ranges == [{"start": 0.2, "end": 0.4}]
        event = session.scalars(select(Event).where(Event.to_state == "approved")).one()
        assert event.actor == "reviewer:alice" and event.from_state == "review_pending"
        assert event.data["review_id"] == review.id
        assert session.get(Asset, asset_id).state == "approved"


@pytest.mark.parametrize(("reason", "attempts", "state", "regenerate"), [
    ("lip_sync", 1, "planned", True),     # regeneration can fix it and attempts remain
    ("artifacts", 2, "planned", True),
    ("lip_sync", 3, "rejected", False),   # attempts spent (max_generation_attempts = 3)
    ("identity", 1, "rejected", False),   # not a reason a new seed fixes
    ("prompt_mismatch", 1, "rejected", False),
])
def test_reject_regenerates_when_it_can_help(signed_in, pending, database, kit, reason, attempts, state,
                                             regenerate):
    asset_id = pending("a", attempts=attempts)
    alice = signed_in("alice")
    assert decide(alice, kit, asset_id, decision="reject", reason_code=reason).status_code == 307
    assert state_of(database, asset_id) == state
    assert alice.actions.calls == [("rejected", asset_id, regenerate)]
    with database.session() as session:
        event = session.scalars(select(Event).where(Event.to_state == state, Event.actor == "reviewer:alice")).one()
        assert event.data["reason_code"] == reason and event.data["regenerate"] is regenerate


@pytest.mark.parametrize(("form", "message"), [
    ({"decision": "reject"}, "needs a reason code"),
    ({"decision": "reject", "reason_code": "bad_hair"}, "needs a reason code"),
    ({"decision": "reject", "reason_code": "other"}, "say in the notes"),
    ({"decision": "maybe"}, "approve or reject"),
    ({"decision": "approve", "time_ranges": "1.5"}, "not START-END"),
    ({"decision": "approve", "time_ranges": "1.5-1.0"}, "ends before it starts"),
    ({"decision": "approve", "time_ranges": "0.5-1, 1.5-9"}, "past the end of the video"),
])
def test_invalid_decisions_are_refused_and_change_nothing(signed_in, pending, database, kit, form, message):
    asset_id = pending("a")  # a 2-second video
    alice = signed_in("alice")
    response = decide(alice, kit, asset_id, **form)
    assert response.status_code == 422 and message in response.text
    assert state_of(database, asset_id) == "review_pending"
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 0
    assert alice.actions.calls == []


def test_after_a_decision_the_next_asset_opens(signed_in, pending, kit):
    first, second = pending("a", priority=2), pending("b", priority=1)
    alice = signed_in("alice")
    response = decide(alice, kit, first, decision="approve")
    landed = alice.get(response.headers["location"])
    assert landed.url.path == f"/assets/{second}"
    assert f"Asset {first} approved" in landed.text
    response = decide(alice, kit, second, decision="reject", reason_code="audio")
    landed = alice.get(response.headers["location"])
    assert landed.url.path == "/queue" and "Nothing is waiting for review" in landed.text


def test_skip_releases_the_claim_and_opens_another(signed_in, pending, kit):
    first, second = pending("a", priority=2), pending("b", priority=1)
    alice, bob = signed_in("alice"), signed_in("bob")
    queue = alice.get("/queue")
    page = alice.post("/next", data={"csrf_token": kit.csrf_of(queue.text)})
    assert page.url.path == f"/assets/{first}" and 'id="decide-form"' in page.text
    skipped = alice.post(f"/assets/{first}/skip", data={"csrf_token": kit.csrf_of(page.text)})
    assert skipped.url.path == f"/assets/{second}" and 'id="decide-form"' in skipped.text  # claimed by the POST
    # the skipped asset is free again: bob gets it
    queue = bob.get("/queue")
    assert bob.post("/next", data={"csrf_token": kit.csrf_of(queue.text)}).url.path == f"/assets/{first}"


def test_a_claim_expires_after_the_configured_minutes(signed_in, pending, database, kit):
    from db.review_models import ReviewClaim

    asset_id = pending("a")
    alice = signed_in("alice")
    kit.claimed(alice, asset_id)
    with database.session() as session:
        claim = session.get(ReviewClaim, asset_id)
        minutes = (claim.expires_at - claim.claimed_at).total_seconds() / 60
    assert minutes == pytest.approx(10, abs=0.1)


def test_claiming_another_asset_gives_up_the_first_claim(signed_in, pending, kit):
    first, second = pending("a"), pending("b")
    alice, bob = signed_in("alice"), signed_in("bob")
    kit.claimed(alice, first)
    assert "Being reviewed by <strong>alice</strong>" in bob.get(f"/assets/{first}").text
    kit.claimed(alice, second)
    assert 'id="decide-form"' in kit.claimed(bob, first).text


def test_sign_out_releases_claims(signed_in, pending, kit):
    asset_id = pending("a")
    alice, bob = signed_in("alice"), signed_in("bob")
    page = kit.claimed(alice, asset_id)
    out = alice.post("/sign-out", data={"csrf_token": kit.csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/sign-in"
    assert alice.get("/queue", follow_redirects=False).status_code == 303
    assert 'id="decide-form"' in kit.claimed(bob, asset_id).text


# ---- the queue ----------------------------------------------------------------------------------


def test_queue_orders_by_priority_then_age_and_says_why(signed_in, pending):
    old_low = pending("old-low", priority=0)
    urgent = pending("urgent", priority=9, verdict="borderline", sampled=False, score=0.91,
                     reasons=["lip-sync score within the margin"])
    warned = pending("warned", priority=0, batch="batch-b", verdict="borderline", sampled=False, score=0.99,
                     checks=[{"name": "frozen", "value": 0.5, "threshold": 0.2, "verdict": "warn"}])
    page = signed_in("alice").get("/queue")
    html = page.text
    order = [html.index(f'data-asset-id="{i}"') for i in (urgent, old_low, warned)]
    assert order == sorted(order)
    assert 'data-testid="queue-total">3<' in html
    row = html[html.index(f'data-asset-id="{warned}"'):]
    row = row[:row.index("</tr>")]
    assert "Technical warning" in row and "Borderline score" not in row
    row = html[html.index(f'data-asset-id="{urgent}"'):]
    assert "Borderline score" in row[:row.index("</tr>")]


def test_queue_filters_by_batch_and_reason(signed_in, pending, database):
    a = pending("a", verdict="borderline", sampled=False, score=0.9)
    b = pending("b", batch="batch-b")
    alice = signed_in("alice")
    by_reason = alice.get("/queue", params={"why": "sampled"}).text
    assert f'data-asset-id="{b}"' in by_reason and f'data-asset-id="{a}"' not in by_reason
    by_batch = alice.get("/queue", params={"batch": "batch-a"}).text
    assert f'data-asset-id="{a}"' in by_batch and f'data-asset-id="{b}"' not in by_batch
    with database.session() as session:
        batch_id = session.get(Asset, b).batch_id
    by_id = alice.get("/queue", params={"batch": str(batch_id)}).text  # the pipeline links by batch id
    assert f'data-asset-id="{b}"' in by_id and f'data-asset-id="{a}"' not in by_id
    # /next keeps to the filter too
    assert alice.get("/next", params={"batch": "batch-b"}).url.path == f"/assets/{b}"


def test_queue_links_each_asset_to_its_flow_run(signed_in, pending, review_settings):
    run = "0b7e9c4e-3d55-4c7a-9f55-2a0d2d7f1c10"
    pending("by-id", details={"schema": 2, "run": {"flow_run_id": run}})
    pending("by-url", details={"schema": 2, "run": {"flow_run_url": "https://prefect.example/runs/flow-run/abc"}})
    pending("bad", details={"schema": 2, "run": {"flow_run_url": "javascript:alert(1)"}})
    html = signed_in("alice").get("/queue").text
    assert f'href="{review_settings.prefect_ui_url}/runs/flow-run/{run}"' in html
    assert 'href="https://prefect.example/runs/flow-run/abc"' in html
    assert "javascript:" not in html


def test_asset_page_shows_qc_chart_checks_attempts(signed_in, pending):
    # The record QC writes (qc.record), with four calibrated 5 s windows, one below the gate.
    windows = [SyncWindow(i * 2.5, i * 2.5 + 5, 0, {}, p) for i, p in enumerate([0.95, 0.5, 0.97, 0.93])]
    lip = LipSyncResult(scorer="landmark-v1", video="v.mp4", audio=None, frames=300, duration_s=12.5,
                        face_fraction=1.0, confidence=6.1, correlation=0.6, distance=None, offset_frames=-2,
                        score=0.9, calibration="test", sync_windows=windows)
    frame_rate = CheckResult("frame rate", 25, "25", "pass", "25 fps")
    record = VideoChecks("v.mp4", lip.scorer, lip, None, [frame_rate]).to_record()
    asset_id = pending("a", verdict="borderline", sampled=False, score=0.9, attempts=2,
                       metrics=record.metrics, checks=record.checks)
    html = signed_in("alice").get(f"/assets/{asset_id}").text
    assert 'id="sync-chart"' in html and html.count('class="pt') == 4 and html.count('class="pt low"') == 1
    assert "offset -2.0 frames" in html and "frame rate" in html and "confidence" in html
    assert html.count("<td>cpu</td>") == 2  # both generation attempts
    assert 'src="/media/%d/web"' % asset_id in html and 'src="/media/%d/portrait"' % asset_id in html


# ---- actions ------------------------------------------------------------------------------------


def test_direct_actions_call_delivery_and_regeneration():
    from review.actions import DirectDecisionActions

    delivered, regenerated = [], []
    actions = DirectDecisionActions(delivered.append, regenerated.append)
    actions.approved([3, 4])
    actions.rejected(5, regenerate=True)
    actions.rejected(6, regenerate=False)
    assert delivered == [[3, 4]] and regenerated == [5]


def test_prefect_actions_fall_back_to_the_schedule_without_a_server(monkeypatch, caplog):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from review.actions import PrefectDecisionActions

    with temporary_settings(updates={PREFECT_API_URL: None}), caplog.at_level(logging.WARNING):
        assert PrefectDecisionActions()._start("deliver/deliver", [1], "deliver") is False
    assert "scheduled flow will pick" in caplog.text
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), caplog.at_level(logging.WARNING):
        PrefectDecisionActions().approved([1])  # unreachable server: logged, never raised


def test_a_failing_action_leaves_the_decision_in_place(signed_in, pending, database, kit, app_factory):
    from fastapi.testclient import TestClient

    class Broken:
        def approved(self, asset_ids):
            raise RuntimeError("delivery is down")

        def rejected(self, asset_id, regenerate):
            raise RuntimeError("delivery is down")

    asset_id = pending("a")
    app, _ = app_factory(Broken())
    client = TestClient(app)
    assert kit.sign_in(client, "alice").status_code == 303
    assert decide(client, kit, asset_id, decision="approve").status_code == 307
    assert state_of(database, asset_id) == "approved"  # the scheduled deliver flow picks it up


# ---- settings -----------------------------------------------------------------------------------


def test_session_secret_is_generated_once_and_kept_private(tmp_path):
    from review.config import ReviewSettings, review_url, session_secret

    settings = ReviewSettings(data_root=tmp_path / "var")
    first = session_secret(settings)
    assert len(first) >= 48 and session_secret(ReviewSettings(data_root=tmp_path / "var")) == first
    path = tmp_path / "var" / "review" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert session_secret(ReviewSettings(data_root=tmp_path / "other")) != first
    assert session_secret(ReviewSettings(data_root=tmp_path / "var", review_secret="s" * 40)) == "s" * 40
    assert review_url(ReviewSettings(review_url="https://review.example/")) == "https://review.example/queue"


def test_review_settings_read_the_environment(monkeypatch, tmp_path):
    from review.config import ReviewSettings

    monkeypatch.setenv("AVATARFLOW_REVIEW_SECRET", "e" * 40)
    monkeypatch.setenv("AVATARFLOW_REVIEW_CLAIM_MINUTES", "7")
    monkeypatch.setenv("AVATARFLOW_REVIEW_SECURE_COOKIES", "true")
    monkeypatch.setenv("AVATARFLOW_PREFECT_UI_URL", "http://prefect.internal:4200")
    settings = ReviewSettings(data_root=tmp_path)
    assert settings.review_secret.get_secret_value() == "e" * 40
    assert settings.review_claim_minutes == 7 and settings.review_secure_cookies is True
    assert settings.prefect_ui_url == "http://prefect.internal:4200"
    assert "e" * 40 not in repr(settings)  # the secret never shows in logs


def test_unscored_assets_still_show_why(pending, database, signed_in):
    asset_id = pending("a")
    with database.session() as session:
        for qc in session.scalars(select(QCResult).where(QCResult.asset_id == asset_id)):
            session.delete(qc)
    assert "No QC result" in signed_in("alice").get("/queue").text
