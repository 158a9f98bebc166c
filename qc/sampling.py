"""Deterministic 1-in-N review sampling of passed videos.

Every borderline or flagged video goes to a person anyway; this module picks the routine sample
of *passed* videos that a person also watches, so the automatic gate is audited. Requirements:
reproducible from the asset key (a re-run of the pipeline samples the same assets), an exact
rate over a batch, a configurable rate, and usable while the batch is still running.

Every asset gets a rank value `sample_hash(asset_key, salt)`: SHA-256 of (salt, key) read as a
number in [0, 1). It depends on nothing else, so it is stable across runs, processes and
machines; the salt (by default the batch id) makes different batches draw different samples.

Two ways to use it, because exactness needs to know the batch and the pipeline decides assets
one at a time:

1. **Exact over a known set** — `select_sample(keys)` / `is_sampled(key, batch_keys)`: sort the
   keys by rank value and take the first `sample_size(n, rate)`, where
   `sample_size = ceil(n × rate)` (computed without float error: 200 × 0.1 is 20, not 21).
   Ceil, not round: reviewers never see fewer than the rate, and a batch of 3 at 10 % still
   gets one review (round would give none, and Python's round(9.5) is 10 but round(0.5) is 0).
   The answer for one key depends only on the set, never on the order of arrival; adding or
   removing one key lets at most one key into the sample and at most one out. Use it when the set is known up
   front: the batch's keys at submission. An asset sampled that way whose video does not pass
   is reviewed anyway (borderline) or regenerated and, once it passes, still sampled (the key
   does not change between attempts); so the sample of passed videos is exact up to the assets
   that end rejected.

2. **Streaming over passes** — `decide_streaming` / `StreamingSampler`: the decision for the
   m-th passed video of the batch, given how many of the first m−1 were sampled. It keeps the
   sampled count within ±1 of the exact count `sample_size(m, rate)` after every arrival, while
   letting the asset's rank value choose whenever the bound allows: sample when
   `rank < rate`, except that it must sample when skipping would fall more than 1 below the
   exact count and must not when sampling would rise more than 1 above it. So most decisions
   are the key's own (unpredictable to an operator, uncorrelated with manifest order) and the
   counter only steps in at the bounds. The answer depends on the arrival order, which the
   pipeline records (the counts come from the database, inside the transaction that stores the
   route, so two workers cannot both take the same slot).

Systematic sampling (every N-th pass) would also stay within ±1 but is fully predictable and
aliases with any periodic structure of a manifest; plain hash thresholding (`rank < rate`)
is reproducible per key but its count is binomial, not exact (typically ±3 on a batch of 100).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

DEFAULT_RATE = 0.1


def _check_rate(rate: float) -> Fraction:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"the sampling rate must be in [0, 1], not {rate}")
    # Exact arithmetic: 0.1 as a float is slightly more than 1/10, so 200 × 0.1 would ceil to 21.
    return Fraction(rate).limit_denominator(1_000_000)


def sample_hash(asset_key: str, salt: str = "") -> float:
    """The asset's rank value in [0, 1): uniform, stable, salted."""
    digest = hashlib.sha256(f"avatarflow-review\x00{salt}\x00{asset_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sample_size(n: int, rate: float = DEFAULT_RATE) -> int:
    """How many of `n` passed videos are reviewed: ceil(n × rate), exactly."""
    if n < 0:
        raise ValueError(f"n must not be negative, not {n}")
    return math.ceil(n * _check_rate(rate))


def select_sample(keys: Iterable[str], rate: float = DEFAULT_RATE, salt: str = "") -> set[str]:
    """The keys of a known set that are reviewed: exactly sample_size(len(set), rate) of them."""
    unique = set(keys)
    ranked = sorted(unique, key=lambda k: (sample_hash(k, salt), k))
    return set(ranked[: sample_size(len(unique), rate)])


def is_sampled(
    asset_key: str, batch_keys: Sequence[str], rate: float = DEFAULT_RATE, salt: str = ""
) -> bool:
    """Whether `asset_key` is in the exact sample of `batch_keys` (which must contain it)."""
    if asset_key not in batch_keys:
        raise ValueError(f"{asset_key!r} is not one of the batch's keys")
    return asset_key in select_sample(batch_keys, rate, salt)


def decide_streaming(
    asset_key: str,
    arrived_before: int,
    sampled_before: int,
    rate: float = DEFAULT_RATE,
    salt: str = "",
) -> bool:
    """Whether the next passed video is sampled, given the batch's counts so far.

    `arrived_before` passed videos were decided before this one and `sampled_before` of them
    were sampled. Keeps the count within ±1 of sample_size(arrived, rate) at every step.
    """
    if not 0 <= sampled_before <= arrived_before:
        raise ValueError(f"inconsistent counts: {sampled_before} sampled of {arrived_before}")
    exact = math.ceil((arrived_before + 1) * _check_rate(rate))
    if sampled_before < exact - 1:
        return True  # skipping would leave the count more than 1 below the exact count
    if sampled_before + 1 > exact + 1:
        return False  # sampling would put it more than 1 above
    if rate <= 0.0:
        return False
    return sample_hash(asset_key, salt) < rate


@dataclass
class StreamingSampler:
    """`decide_streaming` with the counts kept in memory (resume by passing them back in)."""

    rate: float = DEFAULT_RATE
    salt: str = ""
    arrived: int = 0
    sampled: int = 0

    def __post_init__(self) -> None:
        _check_rate(self.rate)

    def offer(self, asset_key: str) -> bool:
        """Decide one passed video and count it."""
        chosen = decide_streaming(asset_key, self.arrived, self.sampled, self.rate, self.salt)
        self.arrived += 1
        self.sampled += int(chosen)
        return chosen
