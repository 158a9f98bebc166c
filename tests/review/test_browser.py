"""The review app in real headless Chromium: sign in, watch, seek, approve, reject, see delivery.

Real clips from ../shared/media/video, cut short (3 s; 12 s for the one that is seeked), stand in
for generated videos; the pipeline's own transcoder (tasks.transcode) makes their renditions and
its delivery stage (tasks.delivery) runs when an asset is approved.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ACTOR = "review-delivery"


def cut_clip(src: Path, dest: Path, seconds: float = 3.0) -> Path:
    """The first `seconds` of a real clip, re-encoded so the cut is exact."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dest)],
                   check=True, timeout=120)
    return dest


def portrait_of(clip: Path, dest: Path) -> Path:
    """A 512×512 face crop stand-in: the clip's first frame (these clips are square head shots)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-frames:v", "1",
                    "-vf", "scale=512:512", str(dest)], check=True, timeout=60)
    return dest


class SlowMedia:
    """ASGI wrapper that sends video bodies at about 64 KB/s, as over a slow network.

    On localhost Chromium reads a clip whole with its first request before any seek, and the seek
    never needs the server. Chromium keeps waiting on its running download when the bytes a seek
    needs are less than five 32 KB blocks ahead of it; at this rate they are further away, so the
    player opens a new Range request starting there, as it would for a long video in production.
    """

    def __init__(self, app, chunk: int = 16_384, pause_s: float = 0.25) -> None:
        self.app, self.chunk, self.pause_s = app, chunk, pause_s

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        if scope["type"] != "http" or not scope["path"].endswith(("/web", "/small")):
            await self.app(scope, receive, send)
            return

        async def slow_send(message) -> None:
            if message["type"] != "http.response.body" or len(message.get("body", b"")) <= self.chunk:
                await send(message)
                return
            body, more = message["body"], message.get("more_body", False)
            for start in range(0, len(body), self.chunk):
                last = start + self.chunk >= len(body)
                await send({"type": "http.response.body", "body": body[start:start + self.chunk],
                            "more_body": more or not last})
                await asyncio.sleep(self.pause_s)

        await self.app(scope, receive, slow_send)


@pytest.fixture
def three_in_review(database, tmp_path, media, review_settings, kit):
    """Three real clips in review_pending: a borderline one, a sampled pass, a technical warning."""
    from tasks.transcode import transcode

    clips = tmp_path / "clips"
    clips.mkdir()
    root = review_settings.data_root

    def renditions(src: Path, out_dir: Path, name: str):
        return transcode(src, out_dir, name=name, timeout_s=300)

    def spec(name: str, source: str, seconds: float = 3.0, **kw):
        clip = cut_clip(media / "video" / source, clips / f"{name}.mp4", seconds)
        return kit.PendingSpec(name=name, video=clip, crop=portrait_of(clip, clips / f"{name}.png"), **kw)

    windows = [{"start": float(i), "end": i + 1.0, "score": s}
               for i, s in enumerate([0.97, 0.95, 0.94, 0.71, 0.78, 0.93, 0.96, 0.95, 0.97, 0.88, 0.94, 0.96])]
    checks = [
        {"name": "duration matches speech", "value": 3.0, "threshold": 0.08, "verdict": "pass", "reason": "within 1 frame"},
        {"name": "frame rate", "value": 25, "threshold": 25, "verdict": "pass", "reason": ""},
        {"name": "face present", "value": 1.0, "threshold": 0.95, "verdict": "pass", "reason": "face in every frame"},
        {"name": "audio level", "value": -23.1, "threshold": -40, "verdict": "pass", "reason": "not silent, not clipped"},
    ]
    # The clip the browser plays and seeks is 12 s, the others 3 s: the transcoder's default GOP
    # (250 frames) gives a 3-s clip one keyframe, at 0, so any seek decodes from the first bytes
    # and Chromium never needs a new Range request; a 12-s clip has a second keyframe at 10 s.
    borderline = spec(
        "borderline-sync", "infinitetalk_ref_video.mp4", seconds=12.0, priority=5, score=0.9, verdict="borderline", sampled=False,
        attempts=2, reasons=["lip-sync score 0.900 within 0.03 of the gate 0.92"],
        metrics={"windows": windows, "offset_frames": 1, "confidence": 5.42, "distance": 7.91,
                 "face_fraction": 1.0},
        checks=checks, prompt="An older man in a studio speaks clearly and warmly to the viewer.",
        details={"schema": 2, "run": {"flow_run_id": "3f2b6c1e-9a7d-4c55-8a8e-0d1e2f3a4b5c"}})
    sampled = spec(
        "sampled-pass", "retalking_face2.mp4", priority=0, score=0.97, verdict="pass", sampled=True,
        reasons=["sampled 1 in 10"], checks=checks,
        metrics={"windows": [0.96, 0.97, 0.98, 0.95, 0.97, 0.98], "window_seconds": 0.5, "offset_frames": 0},
        prompt="A man in a suit speaks to the camera in a calm, friendly way.")
    technical = spec(
        "frozen-frames", "retalking_face5.mp4", batch="batch-b", priority=0, score=0.96,
        verdict="borderline", sampled=False, reasons=["frozen stretch of 0.6 s"],
        checks=checks + [{"name": "frozen frames", "value": 0.6, "threshold": 0.4, "verdict": "warn",
                          "reason": "frozen for 0.6 s at 1.2 s"}],
        prompt="A woman with glasses explains something with a warm smile.")
    ids = {s.name: kit.put_in_review(database, root, s, renditions) for s in (borderline, sampled, technical)}
    return database, ids


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the browser adds nothing on PostgreSQL
def test_review_in_chromium(three_in_review, review_settings, artifacts, reviewers, kit):
    from playwright.sync_api import sync_playwright

    from db.models import Asset, Event, Review
    from review.actions import DirectDecisionActions
    from review.app import create_app
    from tasks.delivery import deliver_assets

    database, ids = three_in_review
    actions = DirectDecisionActions(lambda asset_ids: deliver_assets(database, review_settings, asset_ids, actor=ACTOR))
    app = create_app(database, review_settings, actions)
    media_log: list[tuple[str, str | None, int, str | None]] = []

    with kit.Server(SlowMedia(app)) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        page.on("response", lambda r: media_log.append(
            (r.url, r.request.headers.get("range"), r.status, r.headers.get("content-range")))
            if "/media/" in r.url and r.url.endswith("/web") else None)

        # Signing in: any page sends us to the form first, then back.
        page.goto(f"{base}/queue")
        assert "/sign-in" in page.url
        page.fill("#username", "alice")
        page.fill("#password", kit.PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/queue")
        assert page.locator("[data-testid=queue-total]").inner_text() == "3"
        rows = page.locator("table.queue tbody tr")
        assert [int(rows.nth(i).get_attribute("data-asset-id")) for i in range(3)][0] == ids["borderline-sync"]
        page.wait_for_function("() => [...document.images].every(img => img.complete)")
        page.screenshot(path=str(artifacts / "review_queue.png"), full_page=True)

        # The most urgent asset opens first: the borderline one (priority 5).
        page.click("#start-reviewing")
        # Not waiting for the load event: the player's download delays it, and the seek below
        # must come while that download is still on its way.
        page.wait_for_url(f"{base}/assets/{ids['borderline-sync']}*", wait_until="commit")
        page.wait_for_selector("#player")
        page.wait_for_function("() => document.getElementById('player').readyState >= 1")
        page.keyboard.press("k")  # play, through the page's own shortcut (a real key press)
        page.wait_for_function("() => document.getElementById('player').currentTime > 0.3", timeout=30_000)
        # Seek past the download: the player asks for the bytes there with a Range request.
        page.evaluate("document.getElementById('player').currentTime = 10.6")
        page.wait_for_function("() => document.getElementById('player').currentTime > 10.7", timeout=30_000)
        page.keyboard.press("k")
        page.evaluate("document.getElementById('player').currentTime = 3.4")
        page.wait_for_function("() => !document.getElementById('player').seeking", timeout=30_000)
        # The seek made the player ask for bytes further in, and the server answered 206 with them.
        seeks = [(rng, cr) for _, rng, status, cr in media_log
                 if status == 206 and rng and not rng.startswith("bytes=0-")]
        assert seeks, f"no Range request for a later part of the video answered 206: {media_log}"
        for rng, content_range in seeks:
            assert content_range.startswith(f"bytes {rng[len('bytes='):].split('-')[0]}-"), (rng, content_range)
        page.wait_for_function("() => [...document.images].every(img => img.complete)")
        page.screenshot(path=str(artifacts / "review_asset.png"), full_page=True)

        # Approve with the keyboard: the next asset in the queue opens by itself.
        page.keyboard.press("a")
        page.wait_for_url(f"{base}/assets/{ids['sampled-pass']}*")
        assert "approved" in page.locator(".flash").inner_text()

        # Reject the next one with notes, a time range and a reason, by keyboard: Escape leaves the
        # text field, 2 picks the second reason (identity), R rejects.
        page.fill("#notes", "The face drifts away from the reference in the second half.")
        page.fill("#time-ranges", "1.5-2.8")
        page.keyboard.press("Escape")
        page.keyboard.press("2")
        assert page.locator("#reason").input_value() == "identity"
        page.keyboard.press("r")
        page.wait_for_url(f"{base}/assets/{ids['frozen-frames']}*")
        assert "rejected (identity)" in page.locator(".flash").inner_text()

        # N skips the last one: nothing else is left, so the queue opens with it still waiting.
        page.keyboard.press("n")
        page.wait_for_url(f"{base}/queue*")
        assert "Only assets you skipped are left" in page.locator(".flash").inner_text()
        assert page.locator("[data-testid=queue-total]").inner_text() == "1"
        left = [int(x) for x in page.locator("table.queue tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.assetId)")]
        assert left == [ids["frozen-frames"]]
        browser.close()

    approved, rejected = ids["borderline-sync"], ids["sampled-pass"]
    with database.session() as session:
        reviews = {r.asset_id: r for r in session.scalars(select(Review))}
        assert reviews[approved].decision == "approve" and reviews[approved].reviewer_id == reviewers["alice"]
        assert (reviews[rejected].decision, reviews[rejected].reason_code) == ("reject", "identity")
        assert reviews[rejected].time_ranges == [{"start": 1.5, "end": 2.8}]
        decided = {e.asset_id: e for e in session.scalars(select(Event).where(
            Event.actor == "reviewer:alice", Event.from_state == "review_pending",
            Event.to_state != "review_pending"))}  # not the "review claimed" notes
        assert set(decided) == {approved, rejected}
        assert decided[approved].to_state == "approved"
        assert decided[rejected].to_state == "rejected"
        assert decided[rejected].data["reason_code"] == "identity"
        assert session.get(Asset, rejected).state == "rejected"

    # Delivery ran as a background task after the response; give it a moment to finish.
    deadline = time.monotonic() + 60
    while True:
        with database.session() as session:
            state = session.get(Asset, approved).state
        if state == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert state == "delivered"
    folder = review_settings.data_root / "deliveries" / "batch-a"
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in manifest["assets"] if e["asset_id"] == approved)
    assert entry["approved_by"] == "alice"
    assert (folder / entry["files"]["web"]["file"]).stat().st_size > 10_000


# Checks as QC stores them: where each fails or warns (ranges) and its worst frame; one from
# before QC kept either.
QC_CHECKS = [
    {"name": "lipsync_windows", "value": 0.41, "threshold": "≥ 0.92", "verdict": "fail",
     "reason": "a window below the gate", "details": {}, "ranges": [[1.0, 2.5]], "worst_s": 1.8},
    {"name": "flicker", "value": 0.2, "threshold": "≤ 0.1", "verdict": "warn", "reason": "brightness jumps",
     "details": {}, "ranges": [[3.2, 4.0]], "worst_s": 3.6},
    {"name": "frame_rate", "value": 25, "threshold": "25 fps", "verdict": "pass", "reason": "25 fps",
     "details": {}, "ranges": [], "worst_s": None},
    {"name": "black_frames", "value": 0, "threshold": "≤ 0.2 s", "verdict": "pass", "reason": "no black frames"},
]


def player_at(page, seconds: float) -> None:
    """Wait until the player has finished seeking to about `seconds`."""
    page.wait_for_function(
        "t => { const v = document.getElementById('player'); return !v.seeking && Math.abs(v.currentTime - t) < 0.05; }",
        arg=seconds, timeout=30_000)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the browser adds nothing on PostgreSQL
def test_qc_ranges_timeline_and_worst_frames_in_chromium(database, tmp_path, media, review_settings, reviewers,
                                                         kit, artifacts):
    from playwright.sync_api import sync_playwright

    from db.models import Review
    from review.app import create_app
    from tasks.transcode import transcode

    clip = media / "video" / "retalking_face2.mp4"  # 5 s, real
    spec = kit.PendingSpec(name="qc-ranges", video=clip, crop=portrait_of(clip, tmp_path / "face.png"),
                           score=0.9, verdict="borderline", sampled=False, checks=QC_CHECKS,
                           reasons=["lip-sync windows below the gate"])
    asset_id = kit.put_in_review(database, review_settings.data_root, spec,
                                 lambda src, out, name: transcode(src, out, name=name, timeout_s=300))
    app = create_app(database, review_settings)

    with kit.Server(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        page.goto(f"{base}/assets/{asset_id}")
        page.fill("#username", "alice")
        page.fill("#password", kit.PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/assets/{asset_id}")
        page.click("#claim")
        page.wait_for_selector("#decide-form")
        page.wait_for_function("() => document.getElementById('player').readyState >= 1")

        # The timeline under the player: one red segment, one amber, each naming its check.
        failing = page.locator("#qc-timeline rect.seg.fail")
        assert failing.count() == 1 and page.locator("#qc-timeline rect.seg.warn").count() == 1
        assert failing.locator("title").text_content() == "lipsync_windows: 1.0–2.5 s (fail)"
        # A range in the table seeks the player to its start (the link's own target is not followed).
        link = page.locator("#qc-checks a.seek", has_text="1.0–2.5 s")
        link.click()
        player_at(page, 1.0)
        assert page.url == f"{base}/assets/{asset_id}"
        # A segment of the timeline does too.
        page.locator("#qc-timeline rect.seg.warn").click()
        player_at(page, 3.2)

        # The worst frames load, cut from the video the player plays.
        page.locator(".frames").scroll_into_view_if_needed()
        page.wait_for_function("() => [...document.querySelectorAll('.frames img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)
        shown = page.eval_on_selector_all(".frames img", "els => els.map(e => [e.alt, e.naturalWidth])")
        assert shown == [["lipsync_windows: worst frame at 1.8 s", 240], ["flicker: worst frame at 3.6 s", 240]]

        # "Use QC ranges" fills the field in the form the server takes.
        assert page.locator("#time-ranges").input_value() == ""
        page.click("#use-qc-ranges")
        assert page.locator("#time-ranges").input_value() == "1-2.5, 3.2-4"
        page.screenshot(path=str(artifacts / "review_qc_ranges.png"), full_page=True)
        page.select_option("#reason", "artifacts")
        page.click("#reject")
        page.wait_for_url(f"{base}/queue*")
        browser.close()

    with database.session() as session:
        review = session.scalars(select(Review).where(Review.asset_id == asset_id)).one()
        assert (review.decision, review.reason_code) == ("reject", "artifacts")
        assert review.time_ranges == [{"start": 1.0, "end": 2.5}, {"start": 3.2, "end": 4.0}]
