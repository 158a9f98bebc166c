"""Review sampling: reproducible from the key, exact over a batch, ±1 while streaming."""

from __future__ import annotations

import random

import pytest

from qc.sampling import (
    StreamingSampler,
    decide_streaming,
    is_sampled,
    sample_hash,
    sample_size,
    select_sample,
)


def keys(n: int, prefix: str = "asset") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


@pytest.mark.parametrize(
    ("n", "expected"), [(10, 1), (95, 10), (200, 20), (3, 1), (0, 0), (100, 10)]
)
def test_exact_count_over_a_batch_is_ceil_of_n_times_rate(n, expected):
    assert sample_size(n) == expected
    assert len(select_sample(keys(n), 0.1, salt="batch-1")) == expected


def test_sample_size_has_no_float_error():
    # 0.1 is stored as a little more than 1/10; naive ceil(200 * 0.1) would give 21.
    assert sample_size(200, 0.1) == 20
    assert sample_size(1000, 0.3) == 300
    assert sample_size(7, 1 / 7) == 1


def test_reproducible_and_independent_of_order():
    batch = keys(95)
    first = select_sample(batch, 0.1, salt="batch-1")
    shuffled = batch[:]
    random.Random(4).shuffle(shuffled)
    assert select_sample(shuffled, 0.1, salt="batch-1") == first
    assert {k for k in batch if is_sampled(k, batch, 0.1, salt="batch-1")} == first
    assert sample_hash("asset-0001", "batch-1") == sample_hash("asset-0001", "batch-1")
    assert 0.0 <= sample_hash("asset-0001", "batch-1") < 1.0


def test_different_salts_and_batches_give_different_samples():
    batch = keys(200)
    samples = [select_sample(batch, 0.1, salt=f"batch-{i}") for i in range(5)]
    assert all(len(s) == 20 for s in samples)
    assert len({frozenset(s) for s in samples}) == 5
    other = select_sample(keys(200, "other"), 0.1, salt="batch-0")
    assert other.isdisjoint(samples[0])


def test_rate_is_configurable():
    batch = keys(200)
    assert len(select_sample(batch, 0.25)) == 50
    assert len(select_sample(batch, 0.0)) == 0
    assert select_sample(batch, 1.0) == set(batch)
    # A bigger rate keeps everything a smaller one picked (same ranking, longer prefix).
    assert select_sample(batch, 0.05) <= select_sample(batch, 0.1)
    with pytest.raises(ValueError):
        sample_size(10, 1.5)
    with pytest.raises(ValueError):
        is_sampled("stranger", batch)


def test_one_more_asset_changes_the_sample_by_at_most_one_key():
    batch = keys(95)
    before = select_sample(batch, 0.1, salt="s")
    after = select_sample([*batch, "late-arrival"], 0.1, salt="s")
    assert len(after - before) <= 1 and len(before - after) <= 1


@pytest.mark.parametrize("n", [10, 95, 200])
@pytest.mark.parametrize("rate", [0.1, 0.25])
def test_streaming_stays_within_one_of_the_exact_count_at_every_step(n, rate):
    for order_seed in range(20):
        batch = keys(n)
        random.Random(order_seed).shuffle(batch)
        sampler = StreamingSampler(rate=rate, salt=f"batch-{order_seed}")
        for m, key in enumerate(batch, start=1):
            sampler.offer(key)
            assert abs(sampler.sampled - sample_size(m, rate)) <= 1, (order_seed, m)
        assert sampler.arrived == n


def test_streaming_is_reproducible_and_keyed_by_the_hash():
    batch = keys(200)
    runs = []
    for _ in range(2):
        sampler = StreamingSampler(rate=0.1, salt="b")
        runs.append([k for k in batch if sampler.offer(k)])
    assert runs[0] == runs[1]
    # Most choices are the key's own (hash below the rate), not forced by the counter.
    own = [k for k in runs[0] if sample_hash(k, "b") < 0.1]
    assert len(own) >= len(runs[0]) // 2
    # Not simply every 10th arrival.
    assert [batch.index(k) % 10 for k in runs[0]] != [0] * len(runs[0])


def test_streaming_resumes_from_stored_counts():
    batch = keys(60)
    whole = StreamingSampler(rate=0.1, salt="b")
    expected = [whole.offer(k) for k in batch]
    first = StreamingSampler(rate=0.1, salt="b")
    got = [first.offer(k) for k in batch[:30]]
    resumed = StreamingSampler(rate=0.1, salt="b", arrived=first.arrived, sampled=first.sampled)
    got += [resumed.offer(k) for k in batch[30:]]
    assert got == expected
    # The pure function gives the same answer from the counts alone.
    assert decide_streaming(batch[30], 30, first.sampled, 0.1, "b") == expected[30]
    with pytest.raises(ValueError):
        decide_streaming("x", 3, 4)
