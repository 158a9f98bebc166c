"""/media/{asset_id}/frame?t=…: a real clip's frame as a 240 px JPEG, cut by ffmpeg once and then
served from the cache, behind the same sign-in and access rule as the rest of the media."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from qc.verdicts import CheckResult
from review.media import frame_cache, frame_ms

CLIP = "retalking_face2.mp4"  # a real 5 s talking-head clip, 25 fps
JPEG_MAGIC = b"\xff\xd8\xff"


@pytest.fixture
def clip_asset(database, review_settings, media, kit):
    """A real clip in review_pending as its generated video, with a failing check that names a
    worst frame (what the asset page shows as a thumbnail)."""

    def make(name: str) -> int:
        check = CheckResult("mouth_motion", 0.1, "≥ 0.3", "fail", "mouth barely moves",
                            ranges=[(1.0, 2.0)], worst_s=1.5).to_dict()
        spec = kit.PendingSpec(name=name, video=media / "video" / CLIP, verdict="borderline", sampled=False,
                               checks=[check])
        return kit.put_in_review(database, review_settings.data_root, spec)

    return make


def jpeg(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.content[:3] == JPEG_MAGIC
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "JPEG"
    return image


def test_frame_is_a_240_px_jpeg_cut_once_then_cached(signed_in, clip_asset, review_settings):
    asset_id = clip_asset("frame")
    alice = signed_in("alice")
    first = alice.get(f"/media/{asset_id}/frame", params={"t": "1.23"})
    image = jpeg(first)
    assert image.width == 240 and image.height == 240  # the clip is square (512 × 512)
    # 1.23 s is on the 25 fps grid at frame 31 (1.24 s): the cache is named by that frame.
    cached = frame_cache(review_settings.data_root, asset_id, 1240)
    assert cached.is_file() and cached.read_bytes() == first.content
    assert cached.parent == review_settings.data_root / "cache" / "frames" / str(asset_id)
    made = cached.stat().st_mtime_ns
    again = alice.get(f"/media/{asset_id}/frame", params={"t": "1.24"})  # the same frame
    assert again.content == first.content and cached.stat().st_mtime_ns == made
    assert sorted(p.name for p in cached.parent.iterdir()) == ["1240.jpg"]  # no partial file left
    head = alice.head(f"/media/{asset_id}/frame", params={"t": "1.24"})
    assert head.status_code == 200 and head.headers["content-type"] == "image/jpeg" and head.content == b""
    # Another time is another picture (the talking head moves), in its own file.
    later = jpeg(alice.get(f"/media/{asset_id}/frame", params={"t": "4"}))
    assert later.tobytes() != image.tobytes()
    assert frame_cache(review_settings.data_root, asset_id, 4000).is_file()
    # The very first and the very last frame exist too (a seek to the end still finds one).
    assert jpeg(alice.get(f"/media/{asset_id}/frame", params={"t": "0"})).width == 240
    assert jpeg(alice.get(f"/media/{asset_id}/frame", params={"t": "5"})).width == 240


def test_a_frame_older_than_the_video_is_cut_again(signed_in, clip_asset, review_settings, database):
    from sqlalchemy import select

    from db.models import Rendition

    asset_id = clip_asset("newer")
    alice = signed_in("alice")
    jpeg(alice.get(f"/media/{asset_id}/frame", params={"t": "2"}))
    cached = frame_cache(review_settings.data_root, asset_id, 2000)
    with database.session() as session:
        video = session.scalar(select(Rendition.path).where(Rendition.asset_id == asset_id, Rendition.kind == "web"))
    # As if the rendition had been replaced (a regenerated video) after the frame was cut.
    stale = os.stat(video).st_mtime_ns - 10_000_000_000
    os.utime(cached, ns=(stale, stale))
    jpeg(alice.get(f"/media/{asset_id}/frame", params={"t": "2"}))
    assert cached.stat().st_mtime_ns > os.stat(video).st_mtime_ns  # cut again, from the current video


BAD_TIMES = ["nan", "NaN", "-1", "1e9", "abc", "inf", "-0.5", "", "86400.5", "1,5",
             "60"]  # the last: a real time, but past the end of the 5 s clip


def test_bad_times_are_not_found(signed_in, clip_asset, review_settings):
    asset_id = clip_asset("bad-t")
    alice = signed_in("alice")
    for t in BAD_TIMES:
        response = alice.get(f"/media/{asset_id}/frame", params={"t": t})
        assert response.status_code == 404, (t, response.status_code)
    assert not (review_settings.data_root / "cache" / "frames").exists()  # nothing cut, nothing kept


def test_a_missing_or_oversized_time_is_refused(signed_in, clip_asset):
    asset_id = clip_asset("no-t")
    alice = signed_in("alice")
    assert alice.get(f"/media/{asset_id}/frame").status_code == 404
    assert alice.get(f"/media/{asset_id}/frame", params={"t": "1" * 40}).status_code == 422


def test_frame_times_are_read_on_the_frame_grid():
    assert frame_ms("1.23") == 1240 and frame_ms("1.219") == 1200 and frame_ms("0") == 0
    assert frame_ms("86400") == 86_400_000 and frame_ms(" 2.5 ") == 2480  # frame 62.5: to the even one, 62
    for bad in ("nan", "-inf", "1e9", "-0.01", "abc", "", None, "0x10"):
        assert frame_ms(bad) is None, bad


def test_frames_follow_the_media_access_rule(signed_in, clip_asset, database, app_factory, reviewers):
    from fastapi.testclient import TestClient

    from db.lifecycle import transition
    from db.models import Asset
    from db.states import AssetState

    asset_id = clip_asset("decided")
    with database.session() as session:  # approved by nobody bob knows of: no longer his to see
        transition(session, session.get(Asset, asset_id), AssetState.APPROVED, actor="test")
    assert signed_in("bob").get(f"/media/{asset_id}/frame", params={"t": "1"}).status_code == 404
    assert signed_in("bob").get(f"/media/{asset_id}/web").status_code == 404  # the same rule as the video
    jpeg(signed_in("root").get(f"/media/{asset_id}/frame", params={"t": "1"}))  # admins see everything
    assert signed_in("alice").get("/media/999999/frame", params={"t": "1"}).status_code == 404
    app, _ = app_factory()
    with TestClient(app) as anonymous:
        assert anonymous.get(f"/media/{asset_id}/frame", params={"t": "1"}).status_code == 401
