"""The stage display's arithmetic and the spelling of pasteable hints."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from db.states import AssetState
from flows import hints
from tasks.progress import STAGES, finished_stages, stage_progress

pytestmark = pytest.mark.unit


def test_every_state_has_a_place_on_the_display():
    for state in AssetState:
        done, failed_at = finished_stages(state.value, "qc" if state == AssetState.FAILED else None, False)
        assert 0 <= done <= len(STAGES)
        assert (failed_at is not None) == (state == AssetState.FAILED)


def test_stage_progress_counts_done_here_and_failed_per_stage():
    rows = [
        ("submitted", None, False),          # at preprocess
        ("failed", "preprocess", False),     # failed at preprocess: never reaches the later stages
        ("generating", None, False),         # at generate
        ("review_pending", None, True),      # QC sent it to review and it has renditions: all done
        ("failed", "verify", False),         # a verify failure belongs to generate
    ]
    by_stage = {p.stage: p for p in stage_progress(rows)}
    assert (by_stage["preprocess"].done, by_stage["preprocess"].here, by_stage["preprocess"].failed,
            by_stage["preprocess"].total) == (3, 1, 1, 5)
    assert (by_stage["plan"].done, by_stage["plan"].total) == (3, 4)
    assert (by_stage["generate"].done, by_stage["generate"].here, by_stage["generate"].failed) == (1, 1, 1)
    assert (by_stage["route"].done, by_stage["route"].total) == (1, 3)
    assert all(p.done + p.failed <= p.total for p in by_stage.values())


def test_review_pending_before_its_renditions_is_still_at_transcode():
    (_, _, _, _, transcode, route) = stage_progress([("review_pending", None, False)])
    assert (transcode.here, route.done) == (1, 0)


def _program(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_hints_spell_the_program_as_it_can_be_pasted(tmp_path, monkeypatch):
    venv_bin = tmp_path / "repo" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    _program(venv_bin, "avatarflow")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.delenv(hints.CALLER_CWD, raising=False)

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path / "repo")
    assert hints.avatarflow_cmd("server stop") == ".venv/bin/avatarflow server stop"
    monkeypatch.chdir(venv_bin)
    assert hints.avatarflow_cmd() == "./avatarflow"  # a bare name would be looked up on PATH
    monkeypatch.chdir("/")
    assert hints.avatarflow_cmd("status") == f"{venv_bin / 'avatarflow'} status"
    # scripts/demo.sh changes folder; the hint follows the folder the operator started it from
    monkeypatch.setenv(hints.CALLER_CWD, str(tmp_path))
    assert hints.avatarflow_cmd() == "repo/.venv/bin/avatarflow"

    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}/usr/bin")
    assert hints.avatarflow_cmd("deliver") == "avatarflow deliver"
