"""Delivery on both database backends, with renditions transcoded from a real clip."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from avatarflow.settings import Settings
from avatarflow.storage import sha256_file
from db.lifecycle import transition
from db.models import Asset, Event, QCResult, Rendition, Review, Reviewer
from db.states import AssetState
from tasks.delivery import (
    MANIFEST_CSV,
    MANIFEST_JSON,
    _copy_renditions,
    _update_manifest,
    deliver_assets,
    delivery_folder,
    read_manifest,
    read_plans,
)
from tasks.transcode import RenditionFile, record_renditions, rendition_stem, transcode

BATCH = "Spring launch+1"
FOLDER_NAME = "Spring_launch_1"
PIPELINE = [
    AssetState.PREPROCESSED,
    AssetState.PLANNED,
    AssetState.GENERATING,
    AssetState.GENERATED,
    AssetState.QC_PASSED,
]


@pytest.fixture(scope="module")
def rendered(media: Path, tmp_path_factory) -> list[RenditionFile]:
    """One real transcode for the whole module; each asset gets its own copy of the files."""
    folder = tmp_path_factory.mktemp("generated")
    clip = folder / "generated.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            "2",
            "-i",
            str(media / "video/infinitetalk_ref_video.mp4"),
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-c:a",
            "aac",
            str(clip),
        ],
        check=True,
        timeout=120,
    )
    # The encoder's speed setting does not matter here; spare the shared machine.
    return transcode(clip, folder / "renditions", name="source", x264_preset="veryfast")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_root=tmp_path / "var")


def give_renditions(
    session,
    asset: Asset,
    rendered: list[RenditionFile],
    root: Path,
    kinds: tuple[str, ...] = ("web", "small", "poster", "thumb"),
) -> None:
    """Copy the rendered files into the asset's folder (as transcode would) and record them."""
    folder = root / "assets" / asset.key[:12]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for file in rendered:
        if file.kind in kinds:
            path = (
                folder
                / f"{rendition_stem(BATCH, asset.key, asset.preset)}_{file.kind}{file.path.suffix}"
            )
            shutil.copyfile(file.path, path)
            files.append(
                RenditionFile(
                    file.kind,
                    path,
                    file.width,
                    file.height,
                    file.bytes,
                    file.sha256,
                    file.duration_s,
                )
            )
    record_renditions(session, asset, files)


def make_approved(
    database,
    make_assets,
    rendered,
    root: Path,
    count: int,
    *,
    batch: str = BATCH,
    kinds: tuple[str, ...] = ("web", "small", "poster", "thumb"),
) -> list[int]:
    """`count` assets taken through the pipeline to approved, with QC scores and renditions.

    The first is approved by a reviewer (review_pending → approved), the others by the QC gate.
    """
    with database.session() as session:
        ids = make_assets(session, count, batch_name=batch)
        reviewer = session.scalar(select(Reviewer).where(Reviewer.username == "rita"))
        if reviewer is None:
            reviewer = Reviewer(username="rita", password_hash="x")
            session.add(reviewer)
            session.flush()
        for n, asset_id in enumerate(ids):
            asset = session.get(Asset, asset_id)
            asset.external_id = f"ext-{batch}-{n}"
            for state in PIPELINE:
                transition(session, asset, state, actor="pipeline")
            session.add(
                QCResult(
                    asset_id=asset.id,
                    scorer="landmarks",
                    score=0.9 + n / 100,
                    gate=0.92,
                    verdict="pass",
                )
            )
            if n == 0:
                transition(session, asset, AssetState.REVIEW_PENDING, actor="qc", reason="sampled")
                transition(
                    session, asset, AssetState.APPROVED, actor="review:rita", reason="looks right"
                )
                session.add(Review(asset_id=asset.id, reviewer_id=reviewer.id, decision="approve"))
            else:
                transition(
                    session, asset, AssetState.APPROVED, actor="qc-gate", reason="score above gate"
                )
            give_renditions(session, asset, rendered, root, kinds)
    return ids


def states(database, ids: list[int]) -> dict[int, str]:
    with database.session() as session:
        return {i: session.get(Asset, i).state for i in ids}


def event_count(database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count(Event.id)))


def file_times(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_delivers_exactly_the_approved_assets(database, make_assets, rendered, settings, tmp_path):
    ids = make_approved(database, make_assets, rendered, tmp_path, 3)
    with database.session() as session:  # in the same batch, but not approved
        waiting = make_assets(session, 1, batch_name=BATCH, priority=5)[0]
        for state in PIPELINE:
            transition(session, session.get(Asset, waiting), state, actor="pipeline")

    report = deliver_assets(database, settings, actor="deliver-test")

    folder = settings.data_root / "deliveries" / FOLDER_NAME
    assert folder == delivery_folder(settings.storage, BATCH)
    assert sorted(report.delivered) == sorted(ids) and not report.failed and not report.skipped
    assert report.folders == [folder]
    assert states(database, ids) == {i: "delivered" for i in ids}
    assert states(database, [waiting]) == {waiting: "qc_passed"}

    with database.session() as session:
        assets = {i: session.get(Asset, i) for i in ids}
        keys = {i: a.key for i, a in assets.items()}
        for asset in assets.values():
            last = asset.events[-1]
            assert (last.from_state, last.to_state, last.actor) == (
                "approved",
                "delivered",
                "deliver-test",
            )
            assert last.reason and str(folder) in last.reason

    media_files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert (
        len(media_files) == 3 * 4 + 2
        and MANIFEST_JSON in media_files
        and MANIFEST_CSV in media_files
    )

    entries = json.loads((folder / MANIFEST_JSON).read_text())["assets"]
    assert sorted(e["asset_key"] for e in entries) == sorted(keys.values())
    for entry in entries:
        assert entry["batch"] == BATCH and entry["preset"] == "standard"
        assert entry["external_id"].startswith(f"ext-{BATCH}-")
        assert entry["duration_s"] == pytest.approx(3.0, abs=0.05)
        assert entry["delivered_at"] and entry["approved_at"]
        assert set(entry["files"]) == {"web", "small", "poster", "thumb"}
        for file in entry["files"].values():
            delivered = folder / file["file"]
            assert (
                sha256_file(delivered) == file["sha256"]
                and delivered.stat().st_size == file["bytes"]
            )
    by_key = {e["asset_key"]: e for e in entries}
    first = by_key[keys[ids[0]]]
    assert (first["approved_by"], first["qc_score"]) == ("rita", pytest.approx(0.90))
    assert by_key[keys[ids[1]]]["approved_by"] == "qc-gate"
    assert by_key[keys[ids[1]]]["qc_score"] == pytest.approx(0.91)

    with open(folder / MANIFEST_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["asset_key"] for r in rows) == sorted(keys.values())
    assert all(r["web_sha256"] == by_key[r["asset_key"]]["files"]["web"]["sha256"] for r in rows)


def test_rerun_delivers_nothing_new(database, make_assets, rendered, settings, tmp_path):
    ids = make_approved(database, make_assets, rendered, tmp_path, 2)
    deliver_assets(database, settings, actor="deliver-test")
    folder = delivery_folder(settings.storage, BATCH)
    before, events, manifest = (
        file_times(folder),
        event_count(database),
        (folder / MANIFEST_JSON).read_bytes(),
    )

    again = deliver_assets(database, settings, actor="deliver-test")
    named = deliver_assets(database, settings, ids, actor="deliver-test")

    assert again.delivered == [] and again.failed == {} and again.folders == []
    assert named.delivered == [] and named.skipped == {i: "already delivered" for i in ids}
    assert file_times(folder) == before
    assert (folder / MANIFEST_JSON).read_bytes() == manifest
    assert event_count(database) == events


def test_named_ids_skip_what_is_not_approved_and_manifest_merges(
    database, make_assets, rendered, settings, tmp_path
):
    ids = make_approved(database, make_assets, rendered, tmp_path, 3)
    with database.session() as session:
        submitted = make_assets(session, 1, batch_name=BATCH, priority=9)[0]

    first = deliver_assets(database, settings, [ids[0], submitted, 999_999], actor="deliver-test")
    assert first.delivered == [ids[0]]
    assert first.skipped == {
        submitted: "in state submitted, not approved",
        999_999: "no such asset",
    }

    second = deliver_assets(database, settings, ids[1:], actor="deliver-test")
    assert second.delivered == ids[1:]
    folder = delivery_folder(settings.storage, BATCH)
    entries = read_manifest(folder)
    assert [e["asset_id"] for e in entries] == ids  # the first run's entry kept, the others added
    with open(folder / MANIFEST_CSV, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3


def test_missing_rendition_fails_only_that_asset(
    database, make_assets, rendered, settings, tmp_path
):
    good = make_approved(database, make_assets, rendered, tmp_path, 2)
    no_web = make_approved(
        database, make_assets, rendered, tmp_path / "b", 1, batch="other", kinds=("poster", "thumb")
    )[0]
    gone = make_approved(database, make_assets, rendered, tmp_path / "c", 1, batch="third")[0]
    with database.session() as session:
        web = session.scalar(
            select(Rendition).where(Rendition.asset_id == gone, Rendition.kind == "web")
        )
        Path(web.path).unlink()  # the file went missing after transcoding
    changed = make_approved(database, make_assets, rendered, tmp_path / "d", 1, batch="fourth")[0]
    with database.session() as session:
        small = session.scalar(
            select(Rendition).where(Rendition.asset_id == changed, Rendition.kind == "small")
        )
        Path(small.path).write_bytes(b"overwritten after transcoding")

    report = deliver_assets(database, settings, actor="deliver-test")

    assert sorted(report.delivered) == sorted(good)
    assert set(report.failed) == {no_web, gone, changed}
    assert "no web rendition" in report.failed[no_web] and "missing" in report.failed[gone]
    assert "checksum" in report.failed[changed]
    with database.session() as session:
        for asset_id in (no_web, gone, changed):
            asset = session.get(Asset, asset_id)
            assert (asset.state, asset.failed_stage, asset.retryable) == ("failed", "deliver", True)
            assert asset.failure_reason == report.failed[asset_id]
            assert asset.events[-1].from_state == "approved"
    assert not delivery_folder(settings.storage, "other").exists()
    assert not delivery_folder(settings.storage, "third").exists()  # nothing half delivered
    # Its web file was copied before the small one failed, and taken back out.
    assert not [p for p in delivery_folder(settings.storage, "fourth").iterdir() if p.is_file()]
    assert len(read_manifest(delivery_folder(settings.storage, BATCH))) == 2


def test_crash_after_copying_does_not_duplicate(
    database, make_assets, rendered, settings, tmp_path
):
    ids = make_approved(database, make_assets, rendered, tmp_path, 2)
    folder = delivery_folder(settings.storage, BATCH)
    for plan in read_plans(database, ids):  # the first run copied, then died
        assert all(f.copied for f in _copy_renditions(plan, folder))
    copied = file_times(folder)
    assert states(database, ids) == {i: "approved" for i in ids}

    report = deliver_assets(database, settings, actor="deliver-test")

    assert sorted(report.delivered) == sorted(ids)
    after = file_times(folder)
    assert {name: after[name] for name in copied} == copied  # nothing copied twice
    assert len(read_manifest(folder)) == 2
    with database.session() as session:
        for asset_id in ids:
            moves = [e for e in session.get(Asset, asset_id).events if e.to_state == "delivered"]
            assert len(moves) == 1


def test_crash_after_the_manifest_does_not_duplicate(
    database, make_assets, rendered, settings, tmp_path
):
    ids = make_approved(database, make_assets, rendered, tmp_path, 2)
    folder = delivery_folder(settings.storage, BATCH)
    entries = []
    for plan in read_plans(database, ids):  # the first run copied and wrote the manifest, then died
        files = _copy_renditions(plan, folder)
        entries.append(
            {
                "asset_key": plan.key,
                "asset_id": plan.asset_id,
                "delivered_at": "first run",
                "files": {
                    f.kind: {
                        "file": f.path.name,
                        "sha256": f.sha256,
                        "bytes": f.bytes,
                        "width": f.width,
                        "height": f.height,
                    }
                    for f in files
                },
            }
        )
    _update_manifest(folder, BATCH, entries)

    report = deliver_assets(database, settings, actor="deliver-test")

    assert sorted(report.delivered) == sorted(ids)
    manifest = read_manifest(folder)
    assert sorted(e["asset_id"] for e in manifest) == sorted(ids)
    # The files went out in the first run; the entry says so and is now complete.
    assert all(e["delivered_at"] == "first run" and e["duration_s"] for e in manifest)
    with database.session() as session:
        for asset_id in ids:
            assert session.get(Asset, asset_id).events[-1].data["delivered_at"] == "first run"
