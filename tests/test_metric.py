"""CalcTopMap (docs/protocol.md#metric): fixture values, the plain loop on tie-heavy data, zero-hit queries, errors."""
from pathlib import Path

import numpy as np
import pytest

from utils.hashing.codes import binarize, hamming_distances, pack_codes, pack_labels
from utils.hashing.metrics import CalcTopMap, CalcTopMap_reference

FIXTURE = Path(__file__).resolve().parent / "data" / "map_at_k.npz"


def tie_heavy_data(rng, bits, n_db, n_q, classes=6, prototypes=4, flip=0.05):
    """Codes near a few prototypes (so many equal distances) and labels tied to the prototype."""
    protos = np.where(rng.random((prototypes, bits)) < 0.5, -1.0, 1.0)
    which = rng.integers(0, prototypes, n_db + n_q)
    codes = protos[which] * np.where(rng.random((n_db + n_q, bits)) < flip, -1.0, 1.0)
    labels = (rng.random((n_db + n_q, classes)) < 0.25).astype(np.float32)
    labels[np.arange(n_db + n_q), which % classes] = 1
    codes = codes.astype(np.float32)
    return codes[:n_db], codes[n_db:], labels[:n_db], labels[n_db:]


def test_matches_fixture_for_every_topk():
    data = np.load(FIXTURE)
    for topk, expected in zip(data["topk"], data["map"]):
        value = CalcTopMap(data["db_codes"], data["query_codes"], data["db_labels"], data["query_labels"],
                           int(topk))
        assert abs(value - expected) <= 1e-9, (int(topk), value, expected)


def test_reference_loop_matches_fixture():
    data = np.load(FIXTURE)
    for topk, expected in zip(data["topk"], data["map"]):
        value = CalcTopMap_reference(data["db_codes"], data["query_codes"], data["db_labels"],
                                     data["query_labels"], int(topk))
        assert abs(value - expected) <= 1e-9


@pytest.mark.parametrize("bits", [8, 16, 32, 48, 64])
def test_equals_plain_loop_with_many_ties(bits):
    rng = np.random.default_rng(bits)
    rB, qB, rL, qL = tie_heavy_data(rng, bits, n_db=400, n_q=45)
    # the tie groups really are large: far fewer distinct distances than items
    assert len(np.unique(0.5 * (bits - qB[0] @ rB.T))) < 40
    for topk in (1, 7, 50, 399, 400, 401, 5000):
        expected = CalcTopMap_reference(rB, qB, rL, qL, topk)
        assert abs(CalcTopMap(rB, qB, rL, qL, topk) - expected) <= 1e-9, topk
    assert abs(CalcTopMap(rB, qB, rL, qL, 60, num_workers=2) - CalcTopMap_reference(rB, qB, rL, qL, 60)) <= 1e-9


def test_chunking_does_not_change_the_value():
    # more queries than one chunk holds (chunks are ~1M pairs / database size rows, at most 64)
    rng = np.random.default_rng(5)
    rB, qB, rL, qL = tie_heavy_data(rng, 16, n_db=300, n_q=150)
    expected = CalcTopMap_reference(rB, qB, rL, qL, 100)
    for workers in (1, 2, 3):
        assert abs(CalcTopMap(rB, qB, rL, qL, 100, num_workers=workers) - expected) <= 1e-9


def test_query_without_relevant_item_counts_zero():
    rB = np.array([[1, 1], [1, -1], [-1, -1]], dtype=np.float32)
    rL = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    qB = np.array([[1, 1], [1, 1]], dtype=np.float32)
    qL = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)  # the second query's class is in no db item
    # query 0 ranks items 0, 1, 2 (distances 0, 1, 2): relevant at positions 1 and 3 -> AP (1/1 + 2/3) / 2
    expected = ((1 + 2 / 3) / 2 + 0.0) / 2
    assert CalcTopMap(rB, qB, rL, qL, 3) == pytest.approx(expected, abs=1e-12)
    assert CalcTopMap_reference(rB, qB, rL, qL, 3) == pytest.approx(expected, abs=1e-12)
    # with K = 1 query 0 has AP 1 and query 1 still counts
    assert CalcTopMap(rB, qB, rL, qL, 1) == pytest.approx(0.5, abs=1e-12)


def test_ties_are_broken_by_database_order():
    # all three items at distance 1; only the last one relevant -> position 3 under the stable order
    rB = np.array([[1, -1], [-1, 1], [1, -1]], dtype=np.float32)
    rL = np.array([[0, 1], [0, 1], [1, 0]], dtype=np.float32)
    qB = np.array([[1, 1]], dtype=np.float32)
    qL = np.array([[1, 0]], dtype=np.float32)
    assert CalcTopMap(rB, qB, rL, qL, 3) == pytest.approx(1 / 3, abs=1e-12)
    assert CalcTopMap(rB, qB, rL, qL, 2) == 0.0


def test_shape_errors_are_clear():
    rB = np.ones((6, 16), dtype=np.float32)
    rL = np.ones((6, 3), dtype=np.float32)
    qB = np.ones((2, 16), dtype=np.float32)
    qL = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"rB has 16 bits per code but qB has 32"):
        CalcTopMap(rB, np.ones((2, 32), dtype=np.float32), rL, qL, 5)
    with pytest.raises(ValueError, match=r"retrievalL \(database labels\) has 5 rows but rB has 6 codes"):
        CalcTopMap(rB, qB, rL[:5], qL, 5)
    with pytest.raises(ValueError, match=r"queryL \(query labels\) has 3 rows but qB has 2 codes"):
        CalcTopMap(rB, qB, rL, np.ones((3, 3), dtype=np.float32), 5)
    with pytest.raises(ValueError, match=r"retrievalL has 3 classes but queryL has 4"):
        CalcTopMap(rB, qB, rL, np.ones((2, 4), dtype=np.float32), 5)
    with pytest.raises(ValueError, match=r"codes must contain only -1 and \+1 \(found 0\.5\).*binarize"):
        CalcTopMap(rB, np.full((2, 16), 0.5, dtype=np.float32), rL, qL, 5)
    with pytest.raises(ValueError, match=r"expected ±1 codes of shape \(n, bits\), got shape \(16,\)"):
        CalcTopMap(rB, qB[0], rL, qL, 5)
    with pytest.raises(ValueError, match=r"labels must be 0/1 multi-hot \(found 2\.0\)"):
        CalcTopMap(rB, qB, rL * 2, qL, 5)
    with pytest.raises(ValueError, match=r"topk must be a positive integer, got 0"):
        CalcTopMap(rB, qB, rL, qL, 0)
    with pytest.raises(ValueError, match=r"num_workers must be a positive integer or None, got 0"):
        CalcTopMap(rB, qB, rL, qL, 5, num_workers=0)


def test_binarize_maps_zero_to_plus_one():
    out = binarize(np.array([[-0.3, 0.0, 2.0, -0.0]], dtype=np.float64))
    assert out.dtype == np.float32
    assert out.tolist() == [[-1.0, 1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="NaN"):
        binarize(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("bits", [1, 7, 8, 16, 31, 32, 33, 48, 64, 100, 255, 256])
def test_hamming_distances_equal_the_dot_product_formula(bits):
    rng = np.random.default_rng(bits)
    db = np.where(rng.random((50, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    q = np.where(rng.random((7, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    packed_db, packed_q = pack_codes(db), pack_codes(q)
    assert packed_db.dtype == (np.uint8 if bits <= 32 else np.uint64)
    assert packed_db.shape[1] == 50
    dist = hamming_distances(packed_q, packed_db)
    assert dist.dtype == (np.uint8 if bits <= 192 else np.uint16)  # 4 words hold 256 positions
    np.testing.assert_array_equal(dist, (bits - q.astype(np.int64) @ db.T.astype(np.int64)) // 2)
    # a query against itself is at distance 0, against its complement at distance bits
    self_and_complement = hamming_distances(packed_q[:, :1], pack_codes(np.concatenate([q[:1], -q[:1]])))
    assert self_and_complement.tolist() == [[0, bits]]


def test_hamming_distances_rejects_different_code_lengths():
    a = pack_codes(np.ones((2, 16), dtype=np.float32))
    b = pack_codes(np.ones((2, 40), dtype=np.float32))
    with pytest.raises(ValueError, match=r"packed as 2 x uint8 planes but database codes as 1 x uint64"):
        hamming_distances(a, b)


def test_pack_labels_and_shares_a_label():
    labels = np.zeros((4, 80), dtype=np.float32)
    labels[0, [0, 79]] = 1
    labels[1, 79] = 1
    labels[2, 64] = 1
    labels[3, 5] = 1
    packed = pack_labels(labels)
    assert packed.dtype == np.uint64 and packed.shape == (2, 4)
    shares = np.array([[bool(np.any(packed[:, i] & packed[:, j])) for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(shares, labels @ labels.T > 0)


def test_popcount_fallback_for_numpy_1(monkeypatch):
    from utils.hashing import codes
    rng = np.random.default_rng(3)
    for bits in (16, 64, 130):
        db = np.where(rng.random((40, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
        q = np.where(rng.random((5, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
        native = hamming_distances(pack_codes(q), pack_codes(db))
        monkeypatch.setattr(codes, "_popcount", codes._popcount_table)
        np.testing.assert_array_equal(hamming_distances(pack_codes(q), pack_codes(db)), native)
        monkeypatch.undo()


def test_accepts_paddle_tensors():
    paddle = pytest.importorskip("paddle")
    data = np.load(FIXTURE)
    tensors = [paddle.to_tensor(data[key]) for key in ("db_codes", "query_codes", "db_labels", "query_labels")]
    assert abs(CalcTopMap(*tensors, int(data["topk"][2])) - data["map"][2]) <= 1e-9
    np.testing.assert_array_equal(binarize(paddle.to_tensor([[0.0, -2.0]])), [[1.0, -1.0]])


def test_tools_re_exports_the_seed_names_from_codes_and_metrics():
    from utils import tools
    from utils.hashing import codes, metrics, paper_rule, tie_aware
    homes = (codes, metrics, paper_rule, tie_aware)
    assert set(tools.__all__) == set().union(*(home.__all__ for home in homes))
    for name in tools.__all__:
        assert getattr(tools, name) is getattr(next(h for h in homes if name in h.__all__), name), name
