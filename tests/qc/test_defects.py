"""The broken-video corpus: each defect `qc.defects` makes from a real clip is caught by its own
check, at the stretch where it is, and the gate keeps the video from automatic approval.

One real clip (512x512, 25 fps H.264: the shape the generator delivers) is broken in every way
once per module; the clean clip itself must pass, so a catch is not a check that fails on
everything. The same corpus over every clip in ../shared/media/video is
`benchmarks/qc_trust.py`, which prints the catch rate per kind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qc.checks import check_video
from qc.defects import KINDS, DefectVideo, make_defect
from qc.gate import decide

CLIP = "edtalk_rd_radio51_000_512.mp4"  # 10 s, 512x512 at 25 fps, clear speech
OTHER = "retalking_face2.mp4"  # the face second_face blends in


@pytest.fixture(scope="module")
def corpus(media: Path, scorer, tmp_path_factory) -> dict[str, DefectVideo]:
    folder = tmp_path_factory.mktemp("defects")
    clean = media / "video" / CLIP
    return {kind: make_defect(clean, kind, folder / f"{kind}.mp4", tracker=scorer.tracker(),
                              other=media / "video" / OTHER) for kind in KINDS}  # fmt: skip


def _checks(video: DefectVideo | Path, reference: Path, seconds: float, scorer):
    path = video.path if isinstance(video, DefectVideo) else video
    return check_video(path, expected_seconds=seconds, expected_size=(512, 512), reference_image=reference,
                       scorer=scorer)  # fmt: skip


def test_the_clean_clip_passes_every_check(media, scorer, corpus):
    reference = corpus["mouth_flat"].reference  # the clean clip's first frame
    result = _checks(media / "video" / CLIP, reference, corpus["mouth_flat"].seconds, scorer)
    flagged = {c.name: c.reason for c in result.checks if c.verdict != "pass"}
    assert flagged == {}
    assert result.score is not None and result.score > 0.92
    assert decide(result.score, result.checks).verdict == "pass"


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_defect_is_caught_by_its_own_check_where_it_is(corpus, scorer, kind):
    made = corpus[kind]
    result = _checks(made, made.reference, made.seconds, scorer)
    decision = decide(result.score, result.checks, lipsync_metrics=result.gate_metrics())
    assert decision.verdict != "pass", decision.reasons
    if made.kind.catches == "lipsync":
        assert result.score is not None and result.score < 0.89  # out of sync: a fail
        assert decision.verdict == "fail" and any("out of sync" in r for r in decision.reasons)
        return
    flagged = [c for c in result.checks if c.name in made.kind.checks and c.verdict != "pass"]
    assert flagged, [(c.name, c.verdict, c.reason) for c in result.checks if c.name in made.kind.checks]
    check = flagged[0]
    start, end = made.span_s
    assert any(a < end and b > start for a, b in check.ranges), (check.ranges, made.span_s)
    assert check.worst_s is not None and start - 1.0 <= check.worst_s <= end + 1.0
    assert check.reason and check.threshold
