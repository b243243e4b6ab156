"""Search engines (utils/retrieval/engines.py): `linear` and `mih` return the same stable Hamming ranking as a brute
force (ids and distances, knn and within, ties and duplicates included); faiss-flat's distances (knn) and answers
(within) are exact; faiss-hnsw/ivf give valid ids and a recall in [0, 1]; recall_at_k's ties and padding; errors."""
import numpy as np
import pytest

from utils.hashing.codes import pack_rows
from utils.retrieval.engines import build_engine, recall_at_k
from utils.runtime.errors import UsageError

BITS = 32


def clustered_rows(seed, n=300, bits=BITS, centres=4, flip=0.05, copies=40):
    """Row-packed codes near a few centres (many ties) with exact duplicates at scattered ids."""
    rng = np.random.default_rng(seed)
    protos = np.where(rng.random((centres, bits)) < 0.5, -1, 1)
    codes = protos[rng.integers(0, centres, n)] * np.where(rng.random((n, bits)) < flip, -1, 1)
    codes = np.concatenate([codes, codes[rng.integers(0, n, copies)]])
    return pack_rows(codes[rng.permutation(len(codes))])


def query_rows(rows, seed, bits=BITS):
    """Some items themselves, the same items with a few bits flipped, and uniform codes."""
    rng = np.random.default_rng(seed)
    picks = rows[rng.integers(0, len(rows), 4)]
    flipped = np.unpackbits(picks, axis=1, bitorder="little")[:, :bits] ^ (rng.random((4, bits)) < 0.1)
    near = np.packbits(flipped.astype(np.uint8), axis=1, bitorder="little")
    far = pack_rows(np.where(rng.random((2, bits)) < 0.5, -1, 1))
    return np.concatenate([picks, near, far])


def brute_distances(rows, queries, bits=BITS):
    """(nq, n) Hamming distances by unpacking every bit."""
    db = np.unpackbits(rows, axis=1, bitorder="little")[:, :bits]
    q = np.unpackbits(queries, axis=1, bitorder="little")[:, :bits]
    return (q[:, None, :] != db[None, :, :]).sum(axis=2).astype(np.int64)


def brute_ranking(distances):
    """Per query: ids and distances by distance, then id."""
    ids = np.arange(distances.shape[1])
    return [(ids[np.lexsort((ids, row))], row[np.lexsort((ids, row))]) for row in distances]


def brute_knn(rows, queries, k):
    ranked = brute_ranking(brute_distances(rows, queries))
    return np.array([ids[:k] for ids, _ in ranked]), np.array([dist[:k] for _, dist in ranked])


def brute_within(rows, queries, radius):
    return [(ids[dist <= radius], dist[dist <= radius]) for ids, dist in brute_ranking(brute_distances(rows, queries))]


@pytest.fixture(scope="module")
def data():
    rows = clustered_rows(1)
    return rows, query_rows(rows, 2)


@pytest.fixture(scope="module")
def exact_engines(data):
    rows, _ = data
    return [build_engine("linear", rows, BITS), build_engine("mih", rows, BITS)]


@pytest.mark.parametrize("k", [1, 3, 41, 200, 340, 1000])
def test_exact_engines_knn_equal_brute_force(data, exact_engines, k):
    rows, queries = data
    expected_ids, expected_dist = brute_knn(rows, queries, min(k, len(rows)))
    for engine in exact_engines:
        ids, distances = engine.knn(queries, k)
        assert ids.shape == distances.shape == (len(queries), min(k, len(rows))), engine.name
        assert ids.dtype == np.int64 and distances.dtype == np.int64, engine.name
        np.testing.assert_array_equal(distances, expected_dist, err_msg=engine.name)
        np.testing.assert_array_equal(ids, expected_ids, err_msg=engine.name)


@pytest.mark.parametrize("radius", [0, 1, 3, 8, BITS])
def test_exact_engines_within_equal_brute_force(data, exact_engines, radius):
    rows, queries = data
    expected = brute_within(rows, queries, radius)
    for engine in exact_engines:
        found = engine.within(queries, radius)
        assert len(found) == len(queries), engine.name
        for q, ((ids, distances), (exp_ids, exp_dist)) in enumerate(zip(found, expected)):
            np.testing.assert_array_equal(distances, exp_dist, err_msg=f"{engine.name} query {q}")
            np.testing.assert_array_equal(ids, exp_ids, err_msg=f"{engine.name} query {q}")


@pytest.mark.parametrize("bits", [8, 24, 64, 100])
def test_linear_and_mih_agree_at_other_widths(bits):
    rows = clustered_rows(bits, n=150, bits=bits, copies=20)
    queries = query_rows(rows, bits + 1, bits=bits)
    linear, mih = build_engine("linear", rows, bits), build_engine("mih", rows, bits, substrings=3)
    assert linear.exact and mih.exact and linear.size == mih.size == len(rows)
    assert (linear.name, mih.name) == ("linear", "mih") and linear.nbytes > 0 and mih.nbytes > 0
    for k in (1, 9, 500):
        for a, b in zip(linear.knn(queries, k), mih.knn(queries, k)):
            np.testing.assert_array_equal(a, b)
    for radius in (0, 2, bits // 4):
        for (ids_a, dist_a), (ids_b, dist_b) in zip(linear.within(queries, radius), mih.within(queries, radius)):
            np.testing.assert_array_equal(ids_a, ids_b)
            np.testing.assert_array_equal(dist_a, dist_b)


def test_single_query_row_is_accepted(data, exact_engines):
    rows, queries = data
    for engine in exact_engines:
        ids, distances = engine.knn(queries[0], 5)
        assert ids.shape == (1, 5)
        np.testing.assert_array_equal(ids, brute_knn(rows, queries[:1], 5)[0])


def test_faiss_flat_distances_and_within_are_exact(data):
    pytest.importorskip("faiss")
    rows, queries = data
    engine = build_engine("faiss-flat", rows, BITS)
    assert engine.name == "faiss-flat" and engine.size == len(rows)
    exact = brute_distances(rows, queries)
    for k in (1, 10, 41, 1000):
        ids, distances = engine.knn(queries, k)
        _, expected_dist = brute_knn(rows, queries, min(k, len(rows)))
        # faiss orders ties at the k-th distance its own way: only distances are pinned, and that ids carry them
        np.testing.assert_array_equal(distances, expected_dist)
        np.testing.assert_array_equal(np.take_along_axis(exact, ids, axis=1), distances)
        assert all(len(set(row)) == len(row) for row in ids.tolist())
    for radius in (0, 1, 4, BITS):
        for q, ((ids, distances), (exp_ids, exp_dist)) in enumerate(
                zip(engine.within(queries, radius), brute_within(rows, queries, radius))):
            np.testing.assert_array_equal(distances, exp_dist, err_msg=f"radius {radius} query {q}")
            np.testing.assert_array_equal(ids, exp_ids, err_msg=f"radius {radius} query {q}")


@pytest.mark.parametrize("name", ["faiss-hnsw", "faiss-ivf"])
def test_approximate_faiss_engines_have_valid_ids_and_recall(data, name):
    pytest.importorskip("faiss")
    rows, queries = data
    engine = build_engine(name, rows, BITS)
    assert engine.name == name and not engine.exact
    k = 10
    ids, distances = engine.knn(queries, k)
    assert ids.shape == distances.shape == (len(queries), k)
    valid = ids >= 0
    assert np.all(ids < len(rows)) and np.all(ids >= -1)
    exact = brute_distances(rows, queries)
    np.testing.assert_array_equal(np.take_along_axis(exact, np.where(valid, ids, 0), axis=1)[valid], distances[valid])
    _, exact_dist = brute_knn(rows, queries, k)
    recall = recall_at_k(ids, distances, exact_dist)
    assert 0.0 <= recall <= 1.0
    exact_ids, _ = brute_knn(rows, queries, k)
    assert recall_at_k(exact_ids, exact_dist, exact_dist) == 1.0


@pytest.mark.parametrize("found_ids, found_dist, exact_dist, expected", [
    ([[0, 1, 2]], [[1, 2, 3]], [[1, 2, 2]], 2 / 3),
    ([[0, 1, 2]], [[2, 2, 1]], [[1, 2, 2]], 1.0),  # order of what was found does not matter
    ([[5, 6, 7]], [[2, 2, 2]], [[1, 2, 2]], 2 / 3),  # extra ties cannot stand in for a closer item
    ([[0, -1, -1]], [[1, 0, 0]], [[1, 2, 2]], 1 / 3),  # faiss's padding (id -1) counts for nothing
    ([[0, 1], [2, 3]], [[0, 0], [5, 6]], [[0, 0], [1, 1]], 2 / 4),
    ([[]], [[]], [[]], 1.0),
])
def test_recall_at_k_with_ties_and_padding(found_ids, found_dist, exact_dist, expected):
    assert recall_at_k(np.array(found_ids), np.array(found_dist), np.array(exact_dist)) == pytest.approx(expected)


def test_unknown_engine_names_the_choices(data):
    with pytest.raises(UsageError, match="linear") as error:
        build_engine("nope", data[0], BITS)
    assert "mih" in str(error.value) and "nope" in str(error.value)


@pytest.mark.parametrize("name", ["linear", "mih"])
def test_wrong_query_width_or_dtype_names_the_expected_shape(data, exact_engines, name):
    engine = {e.name: e for e in exact_engines}[name]
    for bad in (data[1][:, :3], np.zeros((2, 5), np.uint8), data[1].astype(np.int64)):
        with pytest.raises(ValueError, match=r"\(n, 4\)"):
            engine.knn(bad, 3)
        with pytest.raises(ValueError, match=r"\(n, 4\)"):
            engine.within(bad, 1)


def test_faiss_query_width_is_checked(data):
    pytest.importorskip("faiss")
    engine = build_engine("faiss-flat", data[0], BITS)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        engine.knn(data[1][:, :3], 3)


def _engine_names():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return ["linear", "mih"]
    return ["linear", "mih", "faiss-flat"]


@pytest.mark.parametrize("name", _engine_names())
def test_every_engine_refuses_k_below_one_and_a_negative_radius_alike(data, name):
    rows, queries = data
    engine = build_engine(name, rows, BITS)
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be a whole number >= 1"):
            engine.knn(queries, k)
    with pytest.raises(ValueError, match="radius must be a whole number >= 0"):
        engine.within(queries, -1)


@pytest.mark.parametrize("name", _engine_names())
def test_an_empty_index_answers_every_query_with_nothing(data, name):
    rows, queries = data
    engine = build_engine(name, rows[:0], BITS)
    ids, distances = engine.knn(queries, 3)
    assert ids.shape == distances.shape == (len(queries), 0)
    assert all(len(found) == 0 for found, _ in engine.within(queries, BITS))


def test_the_engine_flag_offers_exactly_the_engines():
    from utils.config.flags import SEARCH_ENGINES
    from utils.retrieval.engines import ENGINES

    assert SEARCH_ENGINES == ("auto", *ENGINES)
