"""Attacks on the review app, each shown to fail: on SQLite and on PostgreSQL where it touches the DB."""

from __future__ import annotations

import http.client
import os
import time
from datetime import timedelta

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from avatarflow import records
from avatarflow.records import Crop
from db.models import Asset, Event, Rendition, Review, utcnow
from db.review_models import LoginAttempt, ReviewClaim, ReviewSession

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
    page = kit.claimed(alice, asset_id)
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
    assert alice.post(f"/assets/{asset_id}/claim", follow_redirects=False).status_code == 403
    assert alice.post("/next", follow_redirects=False).status_code == 403
    assert state_of(database, asset_id) == "review_pending"
    assert count(database, Review) == 0
    assert alice.get("/queue").status_code == 200  # still signed in: sign-out was refused too
    # the token from the page works (also as a header)
    response = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve"},
                          headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert response.status_code == 307
    assert state_of(database, asset_id) == "approved"


def test_another_sessions_token_does_not_work(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice, bob = signed_in("alice"), signed_in("bob")
    kit.claimed(alice, asset_id)
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


# The newer security tests exercise the app's own logic, the same on either backend: SQLite only,
# to keep the suite's time (each sign-in hashes with Argon2, about a second here).
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _attempt(client, kit, username, password, headers=None):
    token = kit.csrf_of(client.get("/sign-in", headers=headers).text)
    return client.post("/sign-in", data={"username": username, "password": password, "csrf_token": token},
                       headers=headers, follow_redirects=False)



@SQLITE_ONLY
def test_failures_refuse_one_username_from_one_address_only(app_factory, reviewers, kit, database,
                                                             review_settings):
    review_settings.review_trusted_proxies = ["testclient"]  # TestClient's address: a proxy naming clients
    app, _ = app_factory()
    client = TestClient(app)
    attacker, desk = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(5):
        assert _attempt(client, kit, "alice", "wrong password", attacker).status_code == 401
    blocked = _attempt(client, kit, "alice", kit.PASSWORD, attacker)
    assert blocked.status_code == 429 and "Too many" in blocked.text and blocked.headers["retry-after"]
    assert _attempt(client, kit, "ALICE ", kit.PASSWORD, attacker).status_code == 429  # other spelling
    # the limit lives in the database, so another process (here: another app) enforces it too
    other, _ = app_factory()
    assert _attempt(TestClient(other), kit, "alice", kit.PASSWORD, attacker).status_code == 429
    # alice at her own desk is not locked out by the attacker's failures (on today's main she was)
    assert _attempt(TestClient(app), kit, "alice", kit.PASSWORD, desk).status_code == 303
    # the window passes: the attacker's address may try again
    with database.session() as session:
        session.execute(update(LoginAttempt).values(at=utcnow() - timedelta(minutes=6)))
    assert _attempt(client, kit, "alice", kit.PASSWORD, attacker).status_code == 303


@SQLITE_ONLY
def test_behind_one_proxy_address_failures_slow_answers_but_lock_nobody_out(app_factory, reviewers, kit):
    app, _ = app_factory()
    client = TestClient(app)  # no trusted proxy: every reviewer shares the proxy's one address
    for i in range(25):  # many names from one address: no single name reaches its own limit
        assert _attempt(client, kit, f"guess{i}", "wrong password").status_code == 401
    assert _attempt(client, kit, "bob", kit.PASSWORD).status_code == 303


def test_the_delay_doubles_past_the_free_failures_and_is_capped(review_settings):
    from review.auth import throttle_delay

    settings = review_settings.model_copy(update={"review_login_delay_s": 0.25, "review_login_max_delay_s": 8.0,
                                                  "review_login_free_failures": 3})
    assert [throttle_delay(n, 0, settings) for n in (0, 3, 4, 5, 6, 12)] == [0, 0, 0.25, 0.5, 1.0, 8.0]
    assert throttle_delay(0, 31, settings) == 0.25  # per address: ten times the free failures


@SQLITE_ONLY
def test_the_sign_in_answer_is_held_back_after_failures(app_factory, reviewers, kit, review_settings):
    review_settings.review_login_delay_s = 0.4
    app, _ = app_factory()
    client = TestClient(app)
    for _ in range(4):  # 3 free failures, then the fourth's answer is already held back
        _attempt(client, kit, "alice", "wrong password")
    started = time.monotonic()
    assert _attempt(client, kit, "alice", "wrong password").status_code == 401
    assert time.monotonic() - started >= 0.4


def test_a_forwarded_for_header_counts_only_from_a_trusted_proxy():
    from review.auth import client_address

    assert client_address("10.0.0.2", "1.2.3.4", []) == "10.0.0.2"  # not trusted: the header is the client's word
    assert client_address("10.0.0.2", "6.6.6.6, 1.2.3.4", ["10.0.0.2"]) == "1.2.3.4"  # rightmost untrusted hop
    assert client_address("10.0.0.2", "1.2.3.4, 10.0.0.3", ["10.0.0.2", "10.0.0.3"]) == "1.2.3.4"


# ---- sessions kept server-side --------------------------------------------------------------------


@SQLITE_ONLY
def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(signed_in, kit):
    alice = signed_in("alice")
    copied = TestClient(alice.app, cookies=dict(alice.cookies))
    assert copied.get("/queue", follow_redirects=False).status_code == 200
    token = kit.csrf_of(alice.get("/queue").text)
    assert alice.post("/sign-out", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert copied.get("/queue", follow_redirects=False).status_code == 303  # sent to sign in


@SQLITE_ONLY
def test_disabling_a_reviewer_ends_their_sessions_and_enabling_does_not_revive_them(signed_in, database):
    from db.models import Reviewer
    from review.auth import set_active

    alice = signed_in("alice")
    old = dict(alice.cookies)
    with database.session() as session:
        reviewer = session.scalar(select(Reviewer).where(Reviewer.username == "alice"))
        assert set_active(session, reviewer, False) == 1
    assert alice.get("/queue", follow_redirects=False).status_code == 303
    with database.session() as session:
        set_active(session, session.scalar(select(Reviewer).where(Reviewer.username == "alice")), True)
    revived = TestClient(alice.app, cookies=old)
    assert revived.get("/queue", follow_redirects=False).status_code == 303  # on today's main: 200


@SQLITE_ONLY
def test_a_new_password_and_sign_out_everywhere_end_sessions(signed_in, database):
    from db.models import Reviewer
    from review.auth import change_password
    from review.sessions import end_all

    alice, bob = signed_in("alice"), signed_in("bob")
    with database.session() as session:
        change_password(session, session.scalar(select(Reviewer).where(Reviewer.username == "alice")),
                        "a brand new password")
        assert end_all(session, session.scalar(select(Reviewer.id).where(Reviewer.username == "bob")), "admin") == 1
    assert alice.get("/queue", follow_redirects=False).status_code == 303
    assert bob.get("/queue", follow_redirects=False).status_code == 303


@SQLITE_ONLY
def test_a_session_in_use_still_ends_at_its_absolute_lifetime_and_when_idle(signed_in, database):
    alice = signed_in("alice")
    assert alice.get("/queue", follow_redirects=False).status_code == 200
    with database.session() as session:  # signed in 13 hours ago, busy all along
        session.execute(update(ReviewSession).values(created_at=utcnow() - timedelta(hours=13),
                                                     last_seen_at=utcnow()))
    assert alice.get("/queue", follow_redirects=False).status_code == 303
    bob = signed_in("bob")
    with database.session() as session:
        session.execute(update(ReviewSession).where(ReviewSession.ended_at.is_(None))
                        .values(last_seen_at=utcnow() - timedelta(minutes=61)))
    assert bob.get("/queue", follow_redirects=False).status_code == 303
    with database.session() as session:
        why = sorted(r.ended_why for r in session.scalars(select(ReviewSession)))
    assert why == ["idle too long", "lifetime over"]


# ---- ids, error responses, stored text ------------------------------------------------------------


@SQLITE_ONLY
def test_ids_too_large_or_not_ascii_digits_are_not_found_never_500(signed_in):
    root = signed_in("root")
    for path in ("/media/99999999999999999999999/web", "/assets/99999999999999999999999",
                 "/queue?batch=99999999999999999999999", "/queue?batch=²", "/audit?asset=99999999999999999999999",
                 "/audit?before=²", "/assets/0"):
        response = root.get(path, follow_redirects=False)
        assert response.status_code in (200, 404), (path, response.status_code)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "no-store" in response.headers["cache-control"], path


@SQLITE_ONLY
def test_an_unexpected_error_is_a_500_that_still_carries_the_security_headers(app_factory, reviewers):
    app, _ = app_factory()

    @app.get("/boom")
    def boom():  # noqa: ANN202 - a route that fails the way a bug would
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["cache-control"] == "no-store"


def test_time_ranges_are_finite_and_bounded_when_the_length_is_unknown():
    from review.decisions import InvalidDecision, parse_time_ranges

    with pytest.raises(InvalidDecision):
        parse_time_ranges("1-" + "9" * 400, None)  # would be float("inf")
    with pytest.raises(InvalidDecision):
        parse_time_ranges("0-100000", None)  # longer than any video
    with pytest.raises(InvalidDecision):
        parse_time_ranges("١-٣", None)  # Arabic-Indic digits: re's \d takes them, float() too
    assert parse_time_ranges("1.5-3", None) == [{"start": 1.5, "end": 3.0}]


def test_bidi_and_control_characters_are_not_stored():
    from review.decisions import make_decision
    from tasks.prompts import check_prompt

    notes = make_decision("reject", "other", "mouth \u202eeulb\x00 drifts\tlate\r\nsee 2 s", "", None).notes
    assert notes == "mouth eulb drifts\tlate\nsee 2 s"
    assert check_prompt("A woman \u2066talks\u2069 calmly \x1b[31min a studio") == \
        "A woman talks calmly [31min a studio"


# ---- claims by POST, media by permission ------------------------------------------------------------


@SQLITE_ONLY
def test_viewing_an_asset_claims_nothing_and_claiming_is_a_post(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice, bob = signed_in("alice"), signed_in("bob")
    page = alice.get(f"/assets/{asset_id}")
    assert page.status_code == 200 and 'id="claim"' in page.text
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(ReviewClaim)) == 0  # a GET changed nothing
    claimed = alice.post(f"/assets/{asset_id}/claim", data={"csrf_token": kit.csrf_of(page.text)},
                         follow_redirects=False)
    assert claimed.status_code == 303
    assert "Being reviewed by <strong>alice</strong>" in bob.get(f"/assets/{asset_id}").text
    assert 'id="decide-form"' in alice.get(f"/assets/{asset_id}").text
    # a cross-site GET (a link in a mail) cannot move a claim
    with database.session() as session:
        claims = session.scalars(select(ReviewClaim)).all()
    assert [(c.asset_id, c.reviewer_id) for c in claims] == [(asset_id, claims[0].reviewer_id)]


@SQLITE_ONLY
def test_start_reviewing_claims_the_next_asset_by_post(signed_in, pending, kit):
    asset_id = pending("a")
    alice = signed_in("alice")
    queue = alice.get("/queue")
    opened = alice.post("/next", data={"csrf_token": kit.csrf_of(queue.text)})
    assert opened.url.path == f"/assets/{asset_id}" and 'id="decide-form"' in opened.text


@SQLITE_ONLY
def test_a_reviewer_sees_media_only_of_what_waits_for_review_or_they_decided(signed_in, pending, database, kit):
    waiting, done = pending("a"), pending("b")
    alice, bob, root = signed_in("alice"), signed_in("bob"), signed_in("root")
    page = alice.get(f"/assets/{done}")
    alice.post(f"/assets/{done}/claim", data={"csrf_token": kit.csrf_of(page.text)})
    page = alice.get(f"/assets/{done}")
    alice.post(f"/assets/{done}/decision", data={"csrf_token": kit.csrf_of(page.text), "decision": "approve"})
    assert bob.get(f"/media/{waiting}/web").status_code == 200
    assert bob.get(f"/media/{done}/web").status_code == 404  # approved by alice, not bob's to see
    assert alice.get(f"/media/{done}/web").status_code == 200 and root.get(f"/media/{done}/web").status_code == 200
    head = bob.head(f"/media/{waiting}/web")
    assert head.status_code == 200 and head.headers["content-length"]
    assert "no-store" in bob.get(f"/media/{waiting}/web").headers["cache-control"]
    missing = bob.get("/media/424242/web")
    assert missing.status_code == 404 and "no-store" in missing.headers["cache-control"]
    signed_out = TestClient(bob.app).get(f"/media/{waiting}/web")
    assert signed_out.status_code == 401 and "no-store" in signed_out.headers["cache-control"]


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
    first = pending("a", priority=5)
    pending("b")
    alice, bob = signed_in("alice"), signed_in("bob")
    assert 'id="decide-form"' in kit.claimed(alice, first).text
    # bob opening it is told who holds it; claiming it too is refused with the same news
    page = bob.get(f"/assets/{first}")
    opened = bob.post(f"/assets/{first}/claim", data={"csrf_token": kit.csrf_of(page.text)})
    assert "Being reviewed by <strong>alice</strong>" in opened.text and 'id="decide-form"' not in opened.text
    assert f"Asset {first} is being reviewed by alice" in opened.text
    token = kit.csrf_of(opened.text)
    refused = bob.post(f"/assets/{first}/decision", data={"decision": "reject", "reason_code": "identity",
                                                          "csrf_token": token}, follow_redirects=False)
    assert refused.status_code == 409 and "claimed by alice" in refused.text
    assert state_of(database, first) == "review_pending" and count(database, Review) == 0


def test_two_sessions_never_both_decide_one_asset(signed_in, pending, database, kit):
    asset_id = pending("a")
    alice, bob = signed_in("alice"), signed_in("bob")
    alice_token = kit.csrf_of(kit.claimed(alice, asset_id).text)
    # alice walks away; her claim expires and bob takes the asset over
    with database.session() as session:
        session.execute(update(ReviewClaim).values(expires_at=utcnow() - timedelta(seconds=1)))
    bob_page = kit.claimed(bob, asset_id)
    assert bob_page.url.path == f"/assets/{asset_id}" and "Claimed by you" in bob_page.text
    late = alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": alice_token},
                      follow_redirects=False)
    assert late.status_code == 409
    done = bob.post(f"/assets/{asset_id}/decision", data={"decision": "reject", "reason_code": "audio",
                                                          "csrf_token": kit.csrf_of(bob_page.text)},
                    follow_redirects=False)
    assert done.status_code == 307
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
        client.post(f"/assets/{asset_id}/claim", data={"csrf_token": token})
        response = client.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": token},
                               follow_redirects=False)
        results[name] = response.status_code

    threads = [threading.Thread(target=review, args=(name,)) for name in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results.values()) == [307, 409, 409], results
    assert count(database, Review) == 1
    assert count(database, Event, Event.from_state == "review_pending", Event.to_state == "approved") == 1


def test_a_decision_on_an_asset_not_waiting_for_review_is_refused(signed_in, pending, database, kit, make_assets):
    asset_id = pending("a")
    alice = signed_in("alice")
    token = kit.csrf_of(kit.claimed(alice, asset_id).text)
    assert alice.post(f"/assets/{asset_id}/decision", data={"decision": "approve", "csrf_token": token},
                      follow_redirects=False).status_code == 307
    # decided already: approving again (or rejecting) is refused
    for data in ({"decision": "approve"}, {"decision": "reject", "reason_code": "lip_sync"}):
        response = alice.post(f"/assets/{asset_id}/decision", data={**data, "csrf_token": token},
                              follow_redirects=False)
        assert response.status_code == 409 and "not waiting for review" in response.text
    # an asset that never reached review cannot be claimed or decided
    with database.session() as session:
        (fresh,) = make_assets(session, 1, batch_name="other")
    page = kit.claimed(alice, fresh)
    assert page.status_code == 200 and "Not waiting for review" in page.text
    response = alice.post(f"/assets/{fresh}/decision", data={"decision": "approve", "csrf_token": token},
                          follow_redirects=False)
    assert response.status_code == 409
    assert state_of(database, fresh) == "submitted"
    assert count(database, Review) == 1
    assert count(database, ReviewClaim) == 0
    assert alice.get("/assets/999999").status_code == 404
