"""Attacks on the review app, each shown to fail: on SQLite and on PostgreSQL where it touches the DB."""

from __future__ import annotations

import http.client
import os
from datetime import timedelta

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from avatarflow import records
from avatarflow.records import Crop
from db.models import Asset, Event, Rendition, Review, utcnow
from db.review_models import LoginAttempt, ReviewClaim

PUBLIC = {("/sign-in", "GET"), ("/sign-in", "POST")}


def count(database, model, *where) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def state_of(database, asset_id: int) -> str:
    with database.session() as session:
        return session.get(Asset, asset_id).state


# ---- authentication ---------------------------------------------------------------------------


def api_routes(routes) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI >= 0.150 wraps them)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            found += api_routes(inner.routes)
    return found


def test_every_route_but_sign_in_and_static_needs_a_session(app_factory, reviewers, pending, database):
    asset_id = pending("a")
    app, _ = app_factory()
    client = TestClient(app)
    routes = [(r.path, m) for r in api_routes(app.routes) for m in sorted(r.methods)]
    # The list is read from the app, so a route added later is covered without editing this test.
    assert {p for p, _ in routes} >= {"/", "/queue", "/next", "/assets/{asset_id:int}", "/assets/{asset_id:int}/decision",
                                      "/assets/{asset_id:int}/skip", "/media/{asset_id:int}/{kind}", "/audit",
                                      "/sign-out"}
    for path, method in routes:
        if (path, method) in PUBLIC:
            continue
        url = path.replace("{asset_id:int}", str(asset_id)).replace("{kind}", "web")
        response = client.request(method, url, data={"decision": "approve"}, follow_redirects=False)
        if method == "GET" and not path.startswith("/media/"):
            assert response.status_code == 303, (method, url)
            assert response.headers["location"].startswith("/sign-in?next="), (method, url)
        else:
            assert response.status_code == 401, (method, url, response.status_code)
    assert client.get("/sign-in").status_code == 200
    assert client.get("/static/review.css").status_code == 200
    for hidden in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(hidden).status_code == 404
    assert state_of(database, asset_id) == "review_pending"


def test_forged_or_foreign_session_cookies_are_ignored(app_factory, reviewers, database, review_settings):
    import base64
    import json

    from itsdangerous import TimestampSigner

    app, _ = app_factory()
    client = TestClient(app)
    payload = base64.b64encode(json.dumps({"rid": reviewers["root"], "fp": "x" * 16}).encode())
    for cookie in ("garbage", TimestampSigner("another-secret").sign(payload).decode(),
                   TimestampSigner(review_settings.review_secret.get_secret_value()).sign(payload).decode()):
        client.cookies.set("avatarflow_review", cookie)
        response = client.get("/audit", follow_redirects=False)
        # unsigned, signed with another key, or right key but a stale password fingerprint
        assert response.status_code == 303 and response.headers["location"].startswith("/sign-in")


def test_sign_in_redirects_only_within_the_site(app_factory, reviewers, kit):
    app, _ = app_factory()
    for target, expected in (("/assets/1", "/assets/1"), ("//evil.example/x", "/queue"),
                             ("https://evil.example", "/queue"), ("/\\evil.example", "/queue")):
        client = TestClient(app)
        page = client.get("/sign-in")
        response = client.post("/sign-in", data={"username": "alice", "password": kit.PASSWORD, "next": target,
                                                 "csrf_token": kit.csrf_of(page.text)}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == expected


def test_wrong_password_and_unknown_user_look_the_same(app_factory, reviewers, kit):
    app, _ = app_factory()
    client = TestClient(app)
    token = kit.csrf_of(client.get("/sign-in").text)
    wrong = client.post("/sign-in", data={"username": "alice", "password": "nope", "csrf_token": token})
    unknown = client.post("/sign-in", data={"username": "mallory", "password": "nope", "csrf_token": token})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password" in wrong.text and "Wrong username or password" in unknown.text


# ---- session cookie -----------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
def test_session_cookie_is_httponly_samesite_and_secure_when_configured(database, review_settings, reviewers,
                                                                        kit, secure):
    from review.app import create_app

    settings = review_settings.model_copy(update={"review_secure_cookies": secure})
    client = TestClient(create_app(database, settings), base_url="https://testserver")
    response = kit.sign_in(client, "alice")
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("avatarflow_review=")
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert ("; secure" in cookie) is secure


def test_pages_carry_protective_headers(signed_in):
    response = signed_in("alice").get("/queue")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


# ---- CSRF ---------------------------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused_and_change_nothing(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice = signed_in("alice")
    page = alice.get(f"/assets/{asset_id}")
    token = kit.csrf_of(page.text)
    for bad in ({}, {"csrf_token": ""}, {"csrf_token": "0" * len(token)}, {"csrf_token": token[:-1]}):
        response = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", **bad},
                              follow_redirects=False)
        assert response.status_code == 403, bad
    # a token in the wrong header does not count either
    response = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve"},
                          headers={"X-CSRF-Token": "forged"}, follow_redirects=False)
    assert response.status_code == 403
    assert alice.post("/sign-out", follow_redirects=False).status_code == 403
    assert alice.post(f"/assets/{asset_id}/skip", follow_redirects=False).status_code == 403
    assert state_of(database, asset_id) == "review_pending"
    assert count(database, Review) == 0
    assert alice.get("/queue").status_code == 200  # still signed in: sign-out was refused too
    # the token from the page works (also as a header)
    response = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve"},
                          headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert state_of(database, asset_id) == "approved"


def test_another_sessions_token_does_not_work(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice, bob = signed_in("alice"), signed_in("bob")
    alice.get(f"/assets/{asset_id}")
    bobs_token = kit.csrf_of(bob.get("/queue").text)
    response = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": bobs_token},
                          follow_redirects=False)
    assert response.status_code == 403
    assert state_of(database, asset_id) == "review_pending"


def test_sign_in_form_needs_its_csrf_token(app_factory, reviewers, kit):
    app, _ = app_factory()
    client = TestClient(app)
    client.get("/sign-in")
    response = client.post("/sign-in", data={"username": "alice", "password": kit.PASSWORD}, follow_redirects=False)
    assert response.status_code == 403


# ---- media --------------------------------------------------------------------------------------

TRAVERSALS = [
    "/media/%2e%2e/%2e%2e/etc/passwd",
    "/media/..%2F..%2F..%2Fetc%2Fpasswd/web",
    "/media/..%252F..%252Fetc%252Fpasswd/web",
    "/media/{id}/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/media/{id}/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/media/{id}/web%2F..%2F..%2Fetc%2Fpasswd",
    "/media/{id}/web%00",
    "/media/{id}/web.mp4",
    "/media/{id}/WEB",
    "/media/{id}/source",
    "/media/{id}/path",
    "/media/{id}/",
    "/media/999999/web",
    "/media/0/web",
    "/media/-1/web",
    "/media/1e3/web",
    "/media/{id}.0/web",
    "/media/%31/web%20",
    "/media/etc/passwd",
]


def test_media_is_served_by_id_and_kind_only(signed_in, pending, database):
    asset_id = pending("a")
    alice = signed_in("alice")
    assert alice.get(f"/media/{asset_id}/web").status_code == 200
    assert alice.get(f"/media/{asset_id}/portrait").headers["content-type"] == "image/png"
    for url in TRAVERSALS:
        response = alice.get(url.replace("{id}", str(asset_id)))
        assert response.status_code == 404, url
        assert b"root:" not in response.content


def test_literal_dot_segments_over_a_real_socket(app_factory, reviewers, pending, kit):
    """httpx would normalise `..` away before sending; http.client sends the bytes as written."""
    asset_id = pending("a")
    app, _ = app_factory()
    with kit.Server(app) as base:
        client = TestClient(app, base_url=base)
        cookie = kit.sign_in(client, "alice").headers["set-cookie"].split(";")[0]
        port = int(base.rsplit(":", 1)[1])
        for raw in ("/media/../../etc/passwd", f"/media/{asset_id}/../../../../etc/passwd",
                    "/media/..%2f..%2fetc%2fpasswd/web", f"/media/{asset_id}/web/../../../../etc/passwd",
                    f"/media/{asset_id}/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.putrequest("GET", raw, skip_accept_encoding=True)
            connection.putheader("Cookie", cookie)
            connection.endheaders()
            response = connection.getresponse()
            body = response.read()
            connection.close()
            assert response.status == 404, raw
            assert b"root:" not in body


def test_rows_pointing_outside_the_data_root_are_not_served(signed_in, pending, database, review_settings, tmp_path):
    asset_id = pending("a")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"secret video outside the data root")
    link = review_settings.data_root / "assets" / "link.mp4"
    os.symlink(outside, link)
    with database.session() as session:
        # a tampered or mistaken row: an absolute path elsewhere, a symlink out, a relative escape
        session.execute(update(Rendition).where(Rendition.asset_id == asset_id, Rendition.kind == "web")
                        .values(path="/etc/passwd"))
        session.add(Rendition(asset_id=asset_id, kind="small", path=str(link), bytes=1, sha256="0" * 64))
        session.add(Rendition(asset_id=asset_id, kind="thumb", path="../../../../etc/hostname.jpg", bytes=1,
                              sha256="0" * 64))
        asset = session.get(Asset, asset_id)
        asset.details = records.write(asset.details, Crop(path="/etc/passwd", source_size=(1, 1),
                                                          face_box=(0, 0, 1, 1), crop_box=(0, 0, 1, 1)))
    alice = signed_in("alice")
    for kind in ("web", "small", "thumb", "portrait", "poster"):
        response = alice.get(f"/media/{asset_id}/{kind}")
        assert response.status_code == 404, kind
        assert b"root:" not in response.content and b"secret" not in response.content


def test_byte_ranges_let_the_player_seek(signed_in, pending, tiny_video):
    asset_id = pending("a")
    alice = signed_in("alice")
    data = tiny_video.read_bytes()
    size = len(data)
    whole = alice.get(f"/media/{asset_id}/web")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes" and whole.content == data
    for header, start, end in (("bytes=0-99", 0, 99), ("bytes=1000-", 1000, size - 1),
                               ("bytes=-500", size - 500, size - 1), (f"bytes=200-{size + 50}", 200, size - 1)):
        part = alice.get(f"/media/{asset_id}/web", headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}", header
        assert part.content == data[start:end + 1]
        assert int(part.headers["content-length"]) == end - start + 1
    beyond = alice.get(f"/media/{asset_id}/web", headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


# ---- sign-in rate limit -------------------------------------------------------------------------


def _attempt(client, kit, username, password):
    token = kit.csrf_of(client.get("/sign-in").text)
    return client.post("/sign-in", data={"username": username, "password": password, "csrf_token": token},
                       follow_redirects=False)


def test_sign_in_is_rate_limited_per_username_even_for_the_right_password(app_factory, reviewers, kit,
                                                                           database):
    app, _ = app_factory()
    client = TestClient(app)
    for _ in range(5):
        assert _attempt(client, kit, "alice", "wrong password").status_code == 401
    blocked = _attempt(client, kit, "alice", kit.PASSWORD)
    assert blocked.status_code == 429 and "Too many" in blocked.text and blocked.headers["retry-after"]
    assert _attempt(client, kit, "ALICE ", kit.PASSWORD).status_code == 429  # same account, other spelling
    # the limit lives in the database, so another process (here: another app) enforces it too
    other, _ = app_factory()
    assert _attempt(TestClient(other), kit, "alice", kit.PASSWORD).status_code == 429
    # other accounts are not locked out by alice's failures
    assert _attempt(client, kit, "bob", kit.PASSWORD).status_code == 303
    # the window passes: alice may sign in again
    with database.session() as session:
        session.execute(update(LoginAttempt).values(at=utcnow() - timedelta(minutes=6)))
    assert _attempt(client, kit, "alice", kit.PASSWORD).status_code == 303


def test_sign_in_is_rate_limited_per_address(app_factory, reviewers, kit):
    app, _ = app_factory()
    client = TestClient(app)
    for i in range(8):  # spread over many usernames, so no single name reaches its own limit
        assert _attempt(client, kit, f"guess{i}", "wrong password").status_code == 401
    assert _attempt(client, kit, "bob", kit.PASSWORD).status_code == 429


# ---- roles and decisions ------------------------------------------------------------------------


def test_audit_log_is_for_admins_only(signed_in, pending):
    asset_id = pending("a")
    assert signed_in("alice").get("/audit").status_code == 403
    root = signed_in("root")
    page = root.get("/audit", params={"asset": str(asset_id), "state": "review_pending"})
    assert page.status_code == 200
    assert "generated → review_pending" in page.text or "qc_passed → review_pending" in page.text
    assert "submitted → preprocessed" not in page.text  # the state filter applies


def test_a_decision_on_an_asset_claimed_by_another_reviewer_is_refused(signed_in, pending, database, kit):
    first, second = pending("a", priority=5), pending("b")
    alice, bob = signed_in("alice"), signed_in("bob")
    assert alice.get(f"/assets/{first}").status_code == 200
    # bob opening it is told who holds it and sent on to the next asset
    opened = bob.get(f"/assets/{first}")
    assert opened.url.path == f"/assets/{second}"
    assert f"Asset {first} is being reviewed by alice" in opened.text
    token = kit.csrf_of(opened.text)
    refused = bob.post(f"/assets/{first}/decision", data={"decision": "reject", "reason_code": "identity",
                                                          "csrf_token": token}, follow_redirects=False)
    assert refused.status_code == 409 and "claimed by alice" in refused.text
    assert state_of(database, first) == "review_pending" and count(database, Review) == 0


def test_two_sessions_never_both_decide_one_asset(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice, bob = signed_in("alice"), signed_in("bob")
    alice_token = kit.csrf_of(alice.get(f"/assets/{asset_id}").text)
    # alice walks away; her claim expires and bob takes the asset over
    with database.session() as session:
        session.execute(update(ReviewClaim).values(expires_at=utcnow() - timedelta(seconds=1)))
    bob_page = bob.get(f"/assets/{asset_id}")
    assert bob_page.url.path == f"/assets/{asset_id}" and "Claimed by you" in bob_page.text
    late = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": alice_token},
                      follow_redirects=False)
    assert late.status_code == 409
    done = bob.post(f"/assets/{asset_id}/decision", data={"decision": "reject", "reason_code": "audio",
                                                          "csrf_token": kit.csrf_of(bob_page.text)},
                    follow_redirects=False)
    assert done.status_code == 303
    again = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": alice_token},
                       follow_redirects=False)
    assert again.status_code == 409
    with database.session() as session:
        reviews = session.scalars(select(Review)).all()
        assert [(r.decision, r.reviewer.username) for r in reviews] == [("reject", "bob")]
        decided = session.scalars(select(Event).where(Event.from_state == "review_pending",
                                                     Event.to_state != "review_pending")).all()
        assert [(e.to_state, e.actor) for e in decided] == [("rejected", "reviewer:bob")]


def test_concurrent_claims_and_decisions_let_exactly_one_reviewer_win(signed_in, pending, database, kit):
    import threading

    asset_id = pending("a")
    sessions = {name: signed_in(name) for name in ("alice", "bob", "root")}
    barrier = threading.Barrier(len(sessions))
    results: dict[str, int] = {}

    def review(name: str) -> None:
        client = sessions[name]
        token = kit.csrf_of(client.get("/queue").text)
        barrier.wait()
        client.get(f"/assets/{asset_id}")
        response = client.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": token},
                               follow_redirects=False)
        results[name] = response.status_code

    threads = [threading.Thread(target=review, args=(name,)) for name in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results.values()) == [303, 409, 409], results
    assert count(database, Review) == 1
    assert count(database, Event, Event.from_state == "review_pending", Event.to_state == "approved") == 1


def test_a_decision_on_an_asset_not_waiting_for_review_is_refused(signed_in, pending, database, kit, make_assets):
    asset_id = pending("a")
    alice = signed_in("alice")
    token = kit.csrf_of(alice.get(f"/assets/{asset_id}").text)
    assert alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": token},
                      follow_redirects=False).status_code == 303
    # decided already: approving again (or rejecting) is refused
    for data in ({"decision": "approve"}, {"decision": "reject", "reason_code": "lip_sync"}):
        response = alice.post(f"/assets/{asset_id}/decision", data={**data, "csrf_token": token},
                              follow_redirects=False)
        assert response.status_code == 409 and "not waiting for review" in response.text
    # an asset that never reached review cannot be claimed or decided
    with database.session() as session:
        (fresh,) = make_assets(session, 1, batch_name="other")
    page = alice.get(f"/assets/{fresh}")
    assert page.status_code == 200 and "Not waiting for review" in page.text
    response = alice.post(f"/assets/{fresh}/decision", data={"decision": "approve", "csrf_token": token},
                          follow_redirects=False)
    assert response.status_code == 409
    assert state_of(database, fresh) == "submitted"
    assert count(database, Review) == 1
    assert count(database, ReviewClaim) == 0
    assert alice.get("/assets/999999").status_code == 404
