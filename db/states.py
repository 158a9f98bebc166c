"""The asset lifecycle: one explicit state machine, and the only place that defines it.

    submitted → preprocessed → planned → generating → generated → qc_passed / qc_failed /
    review_pending → approved / rejected → delivered

plus `failed`, which carries the failing stage, a reason and whether a retry can help;
`split`, a parent asset whose long audio was cut into child segments; and `joined`, a segment
whose video has been joined into its parent's (the parent carries on from `generated`).
"""

from __future__ import annotations

from enum import StrEnum


class AssetState(StrEnum):
    SUBMITTED = "submitted"
    PREPROCESSED = "preprocessed"
    SPLIT = "split"
    PLANNED = "planned"
    GENERATING = "generating"
    GENERATED = "generated"
    QC_PASSED = "qc_passed"
    QC_FAILED = "qc_failed"
    REVIEW_PENDING = "review_pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    DELIVERED = "delivered"
    FAILED = "failed"
    JOINED = "joined"


S = AssetState

# Each state lists where it may go. `failed` may be entered from any working state, and left only
# back into the stage that failed (a re-run), which `can_retry_into` narrows further.
TRANSITIONS: dict[AssetState, frozenset[AssetState]] = {
    S.SUBMITTED: frozenset({S.PREPROCESSED, S.SPLIT, S.FAILED}),
    S.PREPROCESSED: frozenset({S.PLANNED, S.FAILED}),
    # A split parent waits for its segments, then is assembled into one generated video.
    S.SPLIT: frozenset({S.GENERATED, S.FAILED}),
    S.PLANNED: frozenset({S.GENERATING, S.FAILED}),
    # generating → planned: the GPU job was lost (worker died) and goes back in the queue.
    S.GENERATING: frozenset({S.GENERATED, S.PLANNED, S.FAILED}),
    S.GENERATED: frozenset({S.QC_PASSED, S.QC_FAILED, S.REVIEW_PENDING, S.JOINED, S.FAILED}),
    S.QC_PASSED: frozenset({S.APPROVED, S.REVIEW_PENDING, S.FAILED}),
    # qc_failed → planned: regenerate with a new seed; → rejected when attempts are spent.
    S.QC_FAILED: frozenset({S.PLANNED, S.REJECTED}),
    S.REVIEW_PENDING: frozenset({S.APPROVED, S.REJECTED, S.PLANNED, S.FAILED}),
    S.APPROVED: frozenset({S.DELIVERED, S.FAILED}),
    S.REJECTED: frozenset(),
    S.DELIVERED: frozenset(),
    S.JOINED: frozenset(),
    S.FAILED: frozenset({S.SUBMITTED, S.PREPROCESSED, S.PLANNED, S.GENERATED, S.APPROVED}),
}

TERMINAL: frozenset[AssetState] = frozenset({S.DELIVERED, S.REJECTED, S.JOINED})
# States in which a person, not the pipeline, holds the next move.
WAITING_FOR_PEOPLE: frozenset[AssetState] = frozenset({S.REVIEW_PENDING})

# The state a failed asset returns to when its failed stage is re-run.
RETRY_ENTRY: dict[str, AssetState] = {
    "preprocess": S.SUBMITTED,
    "plan": S.PREPROCESSED,
    "generate": S.PLANNED,
    "verify": S.PLANNED,
    "qc": S.GENERATED,
    "transcode": S.GENERATED,
    "deliver": S.APPROVED,
}


def allowed(current: AssetState | str, target: AssetState | str) -> bool:
    return AssetState(target) in TRANSITIONS[AssetState(current)]


def next_states(current: AssetState | str) -> frozenset[AssetState]:
    return TRANSITIONS[AssetState(current)]
