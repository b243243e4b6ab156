"""MultiIndex (utils/hashing/multi_index.py) pinned to an independent brute force: knn and within return exactly the
stable Hamming ranking (by distance, then id) on tie-heavy clustered codes, duplicates, uniform codes, every code width
and substring count, and a randomized sweep; plus its probing masks, substring split and bad-input error."""
from math import comb

import numpy as np
import pytest

from utils.hashing.codes import pack_rows
from utils.hashing.multi_index import MAX_SUBSTRING_BITS, MultiIndex, flip_masks, substring_lengths

WIDTHS = (8, 16, 24, 32, 48, 64, 100, 256)


def clustered_codes(rng, n, bits, centres=4, flip=0.05):
    """±1 codes near a few random centres: many items at equal distances from a query (ties)."""
    protos = np.where(rng.random((centres, bits)) < 0.5, -1, 1)
    return protos[rng.integers(0, centres, n)] * np.where(rng.random((n, bits)) < flip, -1, 1)


def uniform_codes(rng, n, bits):
    return np.where(rng.random((n, bits)) < 0.5, -1, 1)


def with_duplicates(rng, codes, copies):
    """codes plus `copies` exact copies of random items, shuffled so the copies sit at scattered ids."""
    extra = codes[rng.integers(0, len(codes), copies)]
    both = np.concatenate([codes, extra])
    return both[rng.permutation(len(both))]


def brute_distances(rows, query, bits):
    """Hamming distances by unpacking every bit: nothing shared with the code under test."""
    unpacked = np.unpackbits(rows, axis=1, bitorder="little")[:, :bits]
    q = np.unpackbits(query[None, :], axis=1, bitorder="little")[0, :bits]
    return (unpacked != q[None, :]).sum(axis=1).astype(np.int64)


def brute_ranking(rows, query, bits):
    distances = brute_distances(rows, query, bits)
    ids = np.arange(len(rows), dtype=np.int64)
    order = np.lexsort((ids, distances))
    return ids[order], distances[order]


def brute_knn(rows, query, bits, k):
    ids, distances = brute_ranking(rows, query, bits)
    return ids[:k], distances[:k]


def brute_within(rows, query, bits, radius):
    ids, distances = brute_ranking(rows, query, bits)
    keep = distances <= radius
    return ids[keep], distances[keep]


def assert_same(got, expected, context):
    got_ids, got_dist = got
    exp_ids, exp_dist = expected
    assert got_ids.dtype == np.int64 and got_dist.dtype == np.int64, (context, got_ids.dtype, got_dist.dtype)
    np.testing.assert_array_equal(got_dist, exp_dist, err_msg=f"distances {context}")
    np.testing.assert_array_equal(got_ids, exp_ids, err_msg=f"ids {context}")


def queries_for(rng, rows, bits, count=6):
    """Items themselves (distance 0 present), perturbed items, and uniform random codes."""
    third = max(1, count // 3)
    picks = rows[rng.integers(0, len(rows), third)]
    flipped = np.unpackbits(picks, axis=1, bitorder="little")[:, :bits] ^ (rng.random((len(picks), bits)) < 0.1)
    near = np.packbits(flipped.astype(np.uint8), axis=1, bitorder="little")
    far = pack_rows(uniform_codes(rng, max(1, count - 2 * third), bits))
    return np.concatenate([picks, near, far])


def check_index(index, rows, bits, queries, ks, radii, context):
    for qi, query in enumerate(queries):
        for k in ks:
            assert_same(index.knn(query, k), brute_knn(rows, query, bits, k), f"{context} query {qi} k={k}")
        for radius in radii:
            assert_same(index.within(query, radius), brute_within(rows, query, bits, radius),
                        f"{context} query {qi} radius={radius}")


@pytest.mark.parametrize("bits", WIDTHS)
def test_clustered_codes_with_duplicates_every_width(bits):
    rng = np.random.default_rng(bits)
    rows = pack_rows(with_duplicates(rng, clustered_codes(rng, 400, bits), 60))
    index = MultiIndex(rows, bits)
    check_index(index, rows, bits, queries_for(rng, rows, bits), ks=(1, 2, 10, 61, 500, 1000),
                radii=(0, 1, 2, bits // 8, bits // 4, bits), context=f"{bits} bits")


@pytest.mark.parametrize("bits", WIDTHS)
def test_uniform_codes_every_width(bits):
    rng = np.random.default_rng(1000 + bits)
    rows = pack_rows(uniform_codes(rng, 300, bits))
    index = MultiIndex(rows, bits)
    check_index(index, rows, bits, queries_for(rng, rows, bits), ks=(1, 7, 300),
                radii=(0, 1, bits // 4, bits // 2, bits), context=f"uniform {bits} bits")


@pytest.mark.parametrize("substrings", [1, 2, 4, 7])
@pytest.mark.parametrize("bits", [16, 32, 64, 100])
def test_explicit_substring_counts(bits, substrings):
    rng = np.random.default_rng(10 * bits + substrings)
    rows = pack_rows(with_duplicates(rng, clustered_codes(rng, 250, bits), 30))
    index = MultiIndex(rows, bits, substrings=substrings)
    assert sum(index.lengths) == bits and max(index.lengths) <= MAX_SUBSTRING_BITS
    check_index(index, rows, bits, queries_for(rng, rows, bits, count=4), ks=(1, 5, 40, 280),
                radii=(0, 3, bits // 5, bits + 1), context=f"{bits} bits, {substrings} substrings")


def test_small_chunk_builds_the_same_tables():
    rng = np.random.default_rng(3)
    rows = pack_rows(clustered_codes(rng, 200, 32))
    whole, chunked = MultiIndex(rows, 32), MultiIndex(rows, 32, chunk=7)
    for (order_a, starts_a), (order_b, starts_b) in zip(whole.tables, chunked.tables):
        np.testing.assert_array_equal(order_a, order_b)
        np.testing.assert_array_equal(starts_a, starts_b)


def test_all_duplicates_tie_in_id_order():
    rng = np.random.default_rng(4)
    rows = np.repeat(pack_rows(uniform_codes(rng, 1, 32)), 50, axis=0)
    index = MultiIndex(rows, 32)
    ids, distances = index.knn(rows[0], 10)
    np.testing.assert_array_equal(ids, np.arange(10))
    np.testing.assert_array_equal(distances, np.zeros(10))
    ids, distances = index.within(rows[0], 0)
    np.testing.assert_array_equal(ids, np.arange(50))
    assert index.within(rows[0] ^ np.uint8(1), 0)[0].size == 0


def test_query_equal_to_an_item_radius_zero():
    rng = np.random.default_rng(5)
    rows = pack_rows(uniform_codes(rng, 500, 64))
    index = MultiIndex(rows, 64)
    for item in (0, 123, 499):
        ids, distances = index.within(rows[item], 0)
        np.testing.assert_array_equal(ids, [item])
        np.testing.assert_array_equal(distances, [0])
        ids, distances = index.knn(rows[item], 1)
        np.testing.assert_array_equal(ids, [item])


@pytest.mark.parametrize("bits", [8, 32, 100])
def test_single_item_and_k_beyond_size(bits):
    rng = np.random.default_rng(bits)
    rows = pack_rows(uniform_codes(rng, 1, bits))
    index = MultiIndex(rows, bits)
    for query in queries_for(rng, rows, bits, count=4):
        for k in (1, 5):
            assert_same(index.knn(query, k), brute_knn(rows, query, bits, k), f"n=1 k={k}")
        for radius in (0, 1, bits):
            assert_same(index.within(query, radius), brute_within(rows, query, bits, radius), f"n=1 r={radius}")


def test_radius_at_least_bits_returns_everything():
    rng = np.random.default_rng(6)
    rows = pack_rows(with_duplicates(rng, clustered_codes(rng, 300, 48), 20))
    index = MultiIndex(rows, 48)
    query = pack_rows(uniform_codes(rng, 1, 48))[0]
    for radius in (48, 49, 1000):
        ids, distances = index.within(query, radius)
        assert sorted(ids.tolist()) == list(range(len(rows)))
        assert_same((ids, distances), brute_ranking(rows, query, 48), f"radius {radius}")


@pytest.mark.parametrize("seed", range(6))
def test_randomized_sweep(seed):
    rng = np.random.default_rng(20_000 + seed)
    for trial in range(3):
        n = int(rng.integers(1, 3001))
        bits = int(rng.integers(1, 257))
        codes = clustered_codes(rng, n, bits, centres=int(rng.integers(1, 6)), flip=float(rng.uniform(0.0, 0.2))) \
            if rng.random() < 0.7 else uniform_codes(rng, n, bits)
        if rng.random() < 0.5:
            codes = with_duplicates(rng, codes, int(rng.integers(1, n + 1)))
        rows = pack_rows(codes)
        substrings = None if rng.random() < 0.5 else int(rng.integers(1, 12))
        index = MultiIndex(rows, bits, substrings=substrings)
        ks = [1, int(rng.integers(1, len(rows) + 1)), int(rng.integers(1, 2 * len(rows) + 2))]
        radii = [0, int(rng.integers(0, bits + 2)), int(rng.integers(0, max(1, bits // 4)))]
        check_index(index, rows, bits, queries_for(rng, rows, bits, count=4), ks, radii,
                    context=f"seed {seed} trial {trial}: n={len(rows)} bits={bits} substrings={substrings}")


@pytest.mark.parametrize("length, radius", [(1, 0), (1, 1), (8, 0), (8, 1), (8, 3), (8, 8), (12, 2), (16, 3)])
def test_flip_masks_are_every_mask_of_that_weight(length, radius):
    masks = flip_masks(length, radius)
    assert masks.dtype == np.uint64 and len(masks) == comb(length, radius)
    assert len(np.unique(masks)) == len(masks)
    assert all(bin(int(mask)).count("1") == radius for mask in masks)
    assert int(masks.max()) < (1 << length)


@pytest.mark.parametrize("substrings", [None, 1, 3, 7, 300])
def test_substring_lengths_split_the_code(substrings):
    for bits in (1, 7, 8, 24, 25, 32, 48, 64, 100, 256):
        for n_items in (0, 1, 2, 1000, 10**6):
            lengths = substring_lengths(bits, n_items, substrings)
            assert sum(lengths) == bits, (bits, n_items, lengths)
            assert all(1 <= length <= MAX_SUBSTRING_BITS for length in lengths), (bits, n_items, lengths)
            assert lengths == sorted(lengths, reverse=True) and max(lengths) - min(lengths) <= 1, lengths


@pytest.mark.parametrize("rows", [
    np.zeros((5, 3), np.uint8),  # 24 bits in rows meant for 32
    np.zeros((5, 5), np.uint8),
    np.zeros((5, 4), np.int64),
    np.zeros(4, np.uint8),
], ids=["too-narrow", "too-wide", "int64", "1-d"])
def test_bad_rows_raise_naming_the_expected_shape(rows):
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        MultiIndex(rows, 32)
