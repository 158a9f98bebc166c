"""Manifest intake on real media: every format, every kind of bad row, idempotent re-submits."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import func, select
from support import PROMPT, write_manifest

from avatarflow.errors import ManifestError
from db.models import Asset, Batch, Event
from tasks.intake import default_batch_name, read_manifest, submit


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
        # batch.csv says nothing: the batch takes its folder's name too (the fixture's is "manifest")
        assert session.scalar(select(Batch.name)) == "manifest-batch"

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


def three_rows(media) -> list[tuple[str, str]]:
    img, aud = media / "image", media / "audio"
    return [(str(img / "facerec_obama.jpg"), str(aud / "whisper_jfk.flac")),
            (str(img / "liveavatar_boy.jpg"), str(aud / "retalking_audio1.wav")),
            (str(img / "skimage_astronaut.png"), str(aud / "retalking_audio2.wav"))]


def test_a_misspelt_csv_header_is_one_problem_that_suggests_the_column(database, media, tmp_path):
    manifest = tmp_path / "spring.csv"
    manifest.write_text("imgae,audio,prompt\n" + "".join(f"{i},{a},{PROMPT}\n" for i, a in three_rows(media)))
    result = submit(database, manifest, input_roots=[media], dry_run=True)
    assert [str(p) for p in result.problems] == [
        ("manifest (header), columns: unknown column 'imgae' (did you mean 'image'?); "
         "missing required column: image — all 3 rows rejected")]
    (problem,) = result.problems
    assert problem.row is None and problem.rows == (1, 2, 3)
    assert result.rejected_rows == [1, 2, 3] and result.specs == [] and result.rows == 3

    # No prompt or template column at all: one problem too, with every missing column listed.
    manifest.write_text("Imgae,adio\n" + "".join(f"{i},{a}\n" for i, a in three_rows(media)))
    (problem,) = submit(database, manifest, input_roots=[media], dry_run=True).problems
    assert "unknown column 'Imgae' (did you mean 'image'?)" in problem.reason
    assert "unknown column 'adio' (did you mean 'audio'?)" in problem.reason
    assert "missing required columns: image, audio, prompt or template" in problem.reason

    # An empty misspelt column is named too when it explains a missing one.
    manifest.write_text("image,audio,promt\n" + "".join(f"{i},{a},\n" for i, a in three_rows(media)))
    (problem,) = submit(database, manifest, input_roots=[media], dry_run=True).problems
    assert problem.reason == ("unknown column 'promt' (did you mean 'prompt'?); missing required column: "
                              "prompt or template — all 3 rows rejected")


def test_an_unknown_csv_column_rejects_only_the_rows_that_use_it_and_says_so_once(database, media, tmp_path):
    (img1, aud1), (img2, _), (img3, aud3) = three_rows(media)
    manifest = tmp_path / "spring.csv"
    manifest.write_text("image,audio,prompt,tag,notes\n"
                        f"{img1},{aud1},{PROMPT},news,\n"
                        f"{img2},{media}/audio/missing.wav,{PROMPT},news,\n"
                        f"{img3},{aud3},{PROMPT},,\n")  # `notes` is empty everywhere: harmless
    result = submit(database, manifest, input_roots=[media], actor="test")
    header, missing = result.problems
    assert (header.row, header.location, header.rows) == (None, "header", (1, 2))
    assert "unknown column 'tag' (did you mean 'tags'?)" in header.reason and "rows 1-2 rejected" in header.reason
    assert "notes" not in header.reason
    assert (missing.row, missing.field) == (2, "audio") and "file not found" in missing.reason  # still told
    assert result.rejected_rows == [1, 2] and [row for row, _ in result.created] == [3]


def test_an_unknown_key_repeated_down_a_jsonl_or_yaml_manifest_is_reported_once(database, media, tmp_path):
    rows = [{"imgae": i, "audio": a, "prompt": PROMPT} for i, a in three_rows(media)]
    jsonl = tmp_path / "spring.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = submit(database, jsonl, input_roots=[media], dry_run=True)
    (problem,) = result.problems  # not "imgae: unknown" and "image: missing" on every row
    assert (problem.row, problem.field, problem.location, problem.rows) == (None, "imgae", "all 3 rows", (1, 2, 3))
    assert problem.reason.startswith("unknown field (did you mean 'image'?); the 3 rows with it are rejected")
    assert result.rejected_rows == [1, 2, 3]

    yaml_manifest = tmp_path / "spring.yaml"
    yaml_manifest.write_text(json.dumps({"defaults": {"preset": "preview", "priorty": 3},
                                         "assets": [{"image": i, "audio": a, "prompt": PROMPT}
                                                    for i, a in three_rows(media)]}))
    (problem,) = submit(database, yaml_manifest, input_roots=[media], dry_run=True).problems
    assert (problem.field, problem.rows) == ("priorty", (1, 2, 3)) and "did you mean 'priority'?" in problem.reason

    # On a single row the problem stays that row's own, with the same suggestion.
    rows[1:] = [{"image": i, "audio": a, "prompt": PROMPT} for i, a in three_rows(media)[1:]]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = submit(database, jsonl, input_roots=[media], dry_run=True)
    assert [(p.row, p.field) for p in result.problems] == [(1, "imgae")]
    assert "did you mean 'image'?" in result.problems[0].reason and len(result.specs) == 2


def test_a_generic_manifest_name_takes_its_folders_name(tmp_path):
    assert default_batch_name(tmp_path / "spring-campaign" / "batch.csv") == "spring-campaign-batch"
    assert default_batch_name(tmp_path / "spring" / "Manifest.yaml") == "spring-Manifest"
    assert default_batch_name(tmp_path / "drop" / "inputs") == "drop-inputs"  # a folder manifest
    assert default_batch_name(tmp_path / "spring" / "launch_day.jsonl") == "launch_day"
    assert len(default_batch_name(tmp_path / ("x" * 250) / "assets.csv")) <= 200


def test_a_generic_manifest_name_still_finds_its_batch_when_submitted_again(database, media, tmp_path):
    folder = tmp_path / "spring"
    folder.mkdir()
    manifest = folder / "batch.jsonl"
    manifest.write_text("".join(json.dumps({"image": i, "audio": a, "prompt": PROMPT}) + "\n"
                                for i, a in three_rows(media)[:2]))
    first = submit(database, manifest, input_roots=[media])
    manifest.write_text(manifest.read_text() + json.dumps(
        {"image": three_rows(media)[2][0], "audio": three_rows(media)[2][1], "prompt": PROMPT}) + "\n")
    again = submit(database, manifest, input_roots=[media])
    assert first.batch_name == again.batch_name == "spring-batch" and first.batch_id == again.batch_id
    assert len(again.created) == 1 and len(again.existing) == 2

    # A batch submitted under the bare name before the folder's name was added is still found.
    other = tmp_path / "autumn"
    other.mkdir()
    old = other / "batch.jsonl"
    old.write_text(manifest.read_text())
    with database.session() as session:
        session.add(Batch(name="batch", source=str(old.resolve()), created_by="test"))
    legacy = submit(database, old, input_roots=[media])
    assert legacy.batch_name == "batch"
    with database.session() as session:
        assert session.scalar(select(func.count(Batch.id))) == 2  # spring-batch and batch
