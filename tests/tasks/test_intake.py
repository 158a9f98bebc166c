"""Manifest intake on real media: every format, every kind of bad row, idempotent re-submits."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import func, select
from support import PROMPT, write_manifest

from avatarflow.errors import ManifestError
from db.models import Asset, Batch, Event
from tasks.intake import read_manifest, submit


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "yaml"])
def test_twenty_mixed_rows_report_every_bad_row_and_register_the_good_ones(database, mixed, fmt):
    folder, rows, expected, roots = mixed
    manifest = write_manifest(folder, rows, fmt)
    result = submit(database, manifest, input_roots=roots, actor="test")
    found = {p.row: (p.field, p.reason) for p in result.problems}
    assert sorted(found) == sorted(expected), [str(p) for p in result.problems]
    for row, (field, words) in expected.items():
        assert found[row][0] == field, (row, found[row])
        assert words in found[row][1], (row, found[row])
    assert [row for row, _ in result.created] == [1, 2, 3, 14, 15, 19]
    with database.session() as session:
        assets = session.scalars(select(Asset).order_by(Asset.source_row)).all()
        assert [a.source_row for a in assets] == [1, 2, 3, 14, 15, 19]
        assert all(a.state == "submitted" for a in assets)
        by_row = {a.source_row: a for a in assets}
        assert by_row[1].tags == ["news", "en"] and by_row[3].priority == 3 and by_row[3].preset == "preview"
        assert by_row[14].image_path == str(folder / "portraits/man.png")  # relative to the manifest
        assert by_row[2].prompt.startswith("An astronaut is speaking")
        assert by_row[15].prompt.startswith("A friendly presenter is explaining the spring collection")
        assert session.scalar(select(func.count(Event.id))) == 6
        assert session.scalar(select(Batch.name)) == "batch"

    again = submit(database, manifest, input_roots=roots, actor="test")
    assert again.created == [] and [row for row, *_ in again.existing] == [1, 2, 3, 14, 15, 19]
    with database.session() as session:
        assert session.scalar(select(func.count(Asset.id))) == 6
        assert session.scalar(select(func.count(Event.id))) == 6
        assert session.scalar(select(func.count(Batch.id))) == 1


def test_the_same_inputs_in_another_manifest_are_recognised(database, mixed):
    folder, rows, _, roots = mixed
    submit(database, write_manifest(folder, rows[:3], "csv"), input_roots=roots)
    changed = [dict(rows[0], priority="7", tags="x", external_id="other")] + rows[1:3]
    result = submit(database, write_manifest(folder, changed, "yaml"), input_roots=roots, batch_name="second")
    # priority, tags and ids do not change the video, so these are the same assets
    assert result.created == [] and len(result.existing) == 3


def test_folder_convention_pairs_images_and_audio(database, media, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(media / "image/facerec_obama.jpg", folder / "obama.jpg")
    shutil.copy(media / "audio/whisper_jfk.flac", folder / "obama.flac")
    shutil.copy(media / "image/liveavatar_boy.jpg", folder / "boy.jpg")
    shutil.copy(media / "audio/retalking_audio1.wav", folder / "boy.wav")
    (folder / "boy.txt").write_text("A young boy with curly hair is talking happily in a garden.")
    shutil.copy(media / "image/skimage_astronaut.png", folder / "lonely.png")
    result = submit(database, folder)
    assert [str(p) for p in result.problems] == [
        "row 2 (lonely), audio: image lonely.png has no matching lonely.wav (or .flac/.mp3/…)"]
    with database.session() as session:
        assets = {a.external_id: a for a in session.scalars(select(Asset))}
    assert set(assets) == {"obama", "boy"}
    assert assets["boy"].prompt == "A young boy with curly hair is talking happily in a garden."
    assert assets["obama"].template == "default"


def test_paths_outside_the_manifest_folder_are_refused_by_default(database, media, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(media / "image/facerec_obama.jpg"),
                                    "audio": str(media / "audio/whisper_jfk.flac"), "prompt": PROMPT}) + "\n")
    result = submit(database, manifest)
    assert result.created == []
    assert "outside the allowed input folders" in result.problems[0].reason
    assert "AVATARFLOW_INPUT_ROOTS" in result.problems[0].reason


def test_input_roots_given_through_a_symlink_hold_the_files_behind_it(database, media, tmp_path):
    """Users' folders are symlinks (../shared is one on many machines): roots resolve like files."""
    linked = tmp_path / "shared-link"
    linked.symlink_to(media.parent, target_is_directory=True)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(linked / "media/image/facerec_obama.jpg"),
                                    "audio": str(linked / "media/audio/whisper_jfk.flac"), "prompt": PROMPT}) + "\n")
    result = submit(database, manifest, input_roots=[linked / "media"], dry_run=True)
    assert result.problems == [] and len(result.specs) == 1


def test_dry_run_registers_nothing(database, mixed):
    folder, rows, _, roots = mixed
    result = submit(database, write_manifest(folder, rows, "jsonl"), input_roots=roots, dry_run=True)
    assert len(result.specs) == 6 and result.batch_id is None
    with database.session() as session:
        assert session.scalar(select(func.count(Asset.id))) == 0


def test_unreadable_manifests_fail_as_a_whole_with_a_clear_message(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "missing.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="unknown format .txt"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m.yaml").write_text("assets: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        read_manifest(tmp_path / "m.yaml")


def test_a_broken_jsonl_line_is_one_bad_row_not_a_broken_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"image": "a.jpg"}\n{not json\n\n["a list"]\n')
    rows, problems = read_manifest(path)
    assert [r.number for r in rows] == [1]
    assert [(p.row, p.location) for p in problems] == [(2, "line 2"), (3, "line 4")]
