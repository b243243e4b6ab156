"""topk_search: the canonical stable top-k (distance, then database index) on tie-heavy data."""
import numpy as np
import pytest

from utils.hashing.codes import pack_codes, topk_search


def clustered_codes(rng, n, bits, centres=3, flip=0.04):
    protos = np.where(rng.random((centres, bits)) < 0.5, -1.0, 1.0)
    codes = protos[rng.integers(0, centres, n)] * np.where(rng.random((n, bits)) < flip, -1.0, 1.0)
    return codes.astype(np.float32)


def brute_force(q, db, k):
    bits = db.shape[1]
    dist = (bits - q.astype(np.int64) @ db.T.astype(np.int64)) // 2
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.parametrize("bits", [8, 16, 32, 64, 100])
@pytest.mark.parametrize("n_db", [50, 9000])  # 9000: large enough for the sparse (grouped-minimum) path
@pytest.mark.parametrize("nq", [1, 3, 70])
def test_equals_stable_brute_force(bits, n_db, nq):
    rng = np.random.default_rng(bits * 1000 + n_db + nq)
    db = clustered_codes(rng, n_db, bits)
    q = clustered_codes(rng, nq, bits)
    db_packed = pack_codes(db)
    for k in (1, 5, 10, 33):
        idx, dist = topk_search(pack_codes(q), db_packed, k)
        ref_idx, ref_dist = brute_force(q, db, k)
        assert idx.dtype == np.int64 and idx.shape == (nq, min(k, n_db))
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)


def test_ties_at_the_cut_take_the_lowest_indices():
    # 6 items at distance 0, all tied: the top 4 are items 0..3, in order
    db = np.ones((6, 16), dtype=np.float32)
    idx, dist = topk_search(pack_codes(db[:1]), pack_codes(db), 4)
    assert idx.tolist() == [[0, 1, 2, 3]] and dist.tolist() == [[0, 0, 0, 0]]


def test_sparse_path_with_exact_duplicates_and_a_tail():
    # 64 * 100 + 37 items (a partial last group), many exact duplicates of the query scattered around
    rng = np.random.default_rng(1)
    n, bits = 64 * 100 + 37, 64
    db = np.where(rng.random((n, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    q = db[:2].copy()
    dup = np.array([5, 77, 4000, n - 1, n - 20])
    db[dup] = q[0]
    idx, dist = topk_search(pack_codes(q), pack_codes(db), 8)
    ref_idx, ref_dist = brute_force(q, db, 8)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)
    assert idx[0, :6].tolist() == [0, 5, 77, 4000, n - 20, n - 1]


def test_k_larger_than_database_returns_everything_ranked():
    rng = np.random.default_rng(2)
    db = clustered_codes(rng, 30, 16)
    q = clustered_codes(rng, 4, 16)
    idx, dist = topk_search(q, pack_codes(db), 1000)   # queries given as ±1 codes
    ref_idx, ref_dist = brute_force(q, db, 30)
    assert idx.shape == (4, 30)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_errors():
    db = pack_codes(np.ones((5, 16), dtype=np.float32))
    with pytest.raises(ValueError, match=r"topk_search: k must be a positive integer, got 0"):
        topk_search(db[:, :1], db, 0)
    with pytest.raises(ValueError, match=r"packed as 1 x uint64 planes but database codes as 2 x uint8"):
        topk_search(np.ones((1, 64), dtype=np.float32), db, 3)


def test_wide_sort_keys_for_huge_databases():
    # databases over 2**25 items need uint64 keys; force that layout on a small one via max_dist
    from utils.hashing.codes import _key_layout, _stable_topk_rows
    assert _key_layout(2 ** 25, 64)[1] == np.uint32 and _key_layout(2 ** 25 + 1, 64)[1] == np.uint64
    rng = np.random.default_rng(4)
    dist = rng.integers(0, 5, (6, 300)).astype(np.uint8)
    assert _key_layout(300, 2 ** 40)[1] == np.uint64
    for k in (1, 17, 300):
        idx, d = _stable_topk_rows(dist, k, max_dist=2 ** 40)
        ref = np.argsort(dist, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_array_equal(d, np.take_along_axis(dist, ref, axis=1))
