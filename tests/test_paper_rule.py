"""map_paper_rule, the authors' Caffe evaluation rule (utils/hashing/paper_rule.py; docs/protocol.md#paper-recipe),
against brute
force: inner-product ranking of codes that keep their zeros, ties in database order, queries without a relevant item
in the database left out; its tie-aware expectation against every order of the database; the retrieval_metrics keys."""
import itertools

import numpy as np
import pytest

from utils.hashing.codes import binarize, sign_codes
from utils.hashing.metrics import retrieval_metrics
from utils.hashing.paper_rule import map_paper_rule


def paper_rule_ap(ranked_relevance, R):
    """AP of predict_parallel.py: sum of precision@i * rel_i over the top R, over the relevant items in the top R."""
    top = ranked_relevance[:R].astype(float)
    precision = np.cumsum(top) / np.arange(1, len(top) + 1)
    return float((precision * top).sum() / top.sum()) if top.any() else 0.0


def brute_force(rB, qB, rL, qL, R):
    relevant = qL @ rL.T > 0
    aps = []
    for i in range(len(qB)):
        if not relevant[i].any():                   # ground_truth == 0: left out of the mean
            continue
        order = np.argsort(-(rB @ qB[i]), kind="stable")
        aps.append(paper_rule_ap(relevant[i][order], R))
    return float(np.mean(aps)), len(aps)


def brute_force_tie_aware(rB, qB, rL, qL, R):
    """Mean AP over every order of the database, each sorted stably by inner product: all tie orders, equally often."""
    relevant = qL @ rL.T > 0
    aps = []
    for i in range(len(qB)):
        if not relevant[i].any():
            continue
        scores = rB @ qB[i]
        total = count = 0
        for perm in itertools.permutations(range(len(rB))):
            perm = np.array(perm)
            order = perm[np.argsort(-scores[perm], kind="stable")]
            total += paper_rule_ap(relevant[i][order], R)
            count += 1
        aps.append(total / count)
    return float(np.mean(aps))


def data_with_zeros(rng, n_db, n_q, bits, classes=4):
    """Sign codes with many zeros and ties, and a query whose only class no database item carries."""
    outputs = rng.integers(-1, 2, (n_db + n_q, bits)).astype(np.float32) * rng.random((n_db + n_q, bits))
    codes = sign_codes(outputs)
    labels = (rng.random((n_db + n_q, classes)) < 0.35).astype(np.float32)
    labels[:n_db, -1] = 0
    labels[n_db] = 0
    labels[n_db, -1] = 1                            # query 0: no relevant item in the database
    labels[n_db + 1] = 0                            # query 1: label-less, none either
    return codes[:n_db], codes[n_db:], labels[:n_db], labels[n_db:]


@pytest.mark.parametrize("R", [1, 5, 40, 500])
def test_map_paper_rule_equals_brute_force(R):
    rng = np.random.default_rng(R)
    rB, qB, rL, qL = data_with_zeros(rng, n_db=120, n_q=25, bits=6)
    assert (rB == 0).mean() > 0.2 and (qB == 0).mean() > 0.2
    want, counted = brute_force(rB, qB, rL, qL, R)
    assert counted <= 23
    assert map_paper_rule(rB, qB, rL, qL, R) == pytest.approx(want, abs=1e-12)
    got = retrieval_metrics(rB, qB, rL, qL, topk=R, pn_points=(10,))
    assert got["map_paper_rule"] == pytest.approx(want, abs=1e-12)
    assert got["paper_rule_queries"] == counted
    # the zeros matter: the same outputs binarised (0 -> +1) rank otherwise
    assert brute_force(binarize(rB), binarize(qB), rL, qL, R)[0] != pytest.approx(want, abs=1e-6)
    # and the Hamming metrics of sign codes are those of their binarised codes
    hamming = retrieval_metrics(binarize(rB), binarize(qB), rL, qL, topk=R, pn_points=(10,))
    for key in ("map", "map_nonzero", "map_tie_aware", "precision_radius2", "precision_at_n"):
        assert got[key] == hamming[key], key


def test_a_query_with_relevant_items_only_beyond_R_counts_zero():
    rB = np.array([[1, 1], [1, 1], [-1, -1], [-1, 0]], dtype=np.float32)
    rL = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    qB = np.array([[1, 1], [1, 1], [1, 1]], dtype=np.float32)
    qL = np.array([[0, 1], [1, 0], [0, 0]], dtype=np.float32)
    # query 0: its relevant items rank 3rd and 4th, beyond R = 2: AP 0, counted; query 1: AP 1; query 2: left out
    assert map_paper_rule(rB, qB, rL, qL, 2) == pytest.approx(0.5)
    got = retrieval_metrics(rB, qB, rL, qL, topk=2, pn_points=(1,))
    assert (got["map_paper_rule"], got["paper_rule_queries"]) == (pytest.approx(0.5), 2)
    assert got["map_nonzero"] == 1.0                 # thuml's PyTorch rule drops query 0 instead
    assert got["map"] == pytest.approx(1 / 3)        # the seed's rule counts query 2 as 0


@pytest.mark.parametrize("R", [2, 4, 7])
def test_tie_aware_paper_rule_equals_every_database_order(R):
    rng = np.random.default_rng(40)
    rB, qB, rL, qL = data_with_zeros(rng, n_db=7, n_q=6, bits=3, classes=3)
    want = brute_force_tie_aware(rB, qB, rL, qL, R)
    assert map_paper_rule(rB, qB, rL, qL, R, tie_aware=True) == pytest.approx(want, abs=1e-12)
    got = retrieval_metrics(rB, qB, rL, qL, topk=R, pn_points=(1,))
    assert got["map_paper_rule_tie_aware"] == pytest.approx(want, abs=1e-12)
    assert abs(got["map_paper_rule"] - want) > 1e-6   # the ties are real here: database order is another number


def test_without_zeros_the_paper_rule_is_the_hamming_ranking_over_the_counted_queries():
    rng = np.random.default_rng(5)
    rB, qB, rL, qL = data_with_zeros(rng, n_db=150, n_q=30, bits=8)
    rB, qB = binarize(rB), binarize(qB)
    got = retrieval_metrics(rB, qB, rL, qL, topk=50, pn_points=(10,))
    want, counted = brute_force(rB, qB, rL, qL, 50)
    assert got["map_paper_rule"] == pytest.approx(want, abs=1e-12)
    assert got["map_paper_rule"] == pytest.approx(got["map"] * 30 / counted, abs=1e-12)  # left-out queries: AP 0
    assert got["map_paper_rule_tie_aware"] == pytest.approx(map_paper_rule(rB, qB, rL, qL, 50, tie_aware=True),
                                                            abs=1e-12)


def test_no_counted_query_and_bad_codes():
    rB = np.ones((3, 4), dtype=np.float32)
    rL = np.array([[1, 0]] * 3, dtype=np.float32)
    assert map_paper_rule(rB, rB[:1], rL, np.array([[0, 1]], dtype=np.float32), 2) == 0.0
    with pytest.raises(ValueError, match=r"codes must contain only -1, 0 and \+1 \(found 0\.5\).*sign_codes"):
        map_paper_rule(rB * 0.5, rB, rL, rL, 2)
    np.testing.assert_array_equal(sign_codes(np.array([[-0.2, 0.0, 3.0]])), [[-1, 0, 1]])
    with pytest.raises(ValueError, match=r"sign_codes: outputs contain NaN"):
        sign_codes(np.array([[np.nan]]))


class Batches:
    """A loader of one batch (outputs as the 'images', labels, indices) over a dataset of that many items."""

    def __init__(self, outputs, labels):
        import paddle
        self.batch = (paddle.to_tensor(outputs), paddle.to_tensor(labels), paddle.arange(len(outputs)))
        self.dataset = list(range(len(outputs)))

    def __iter__(self):
        return iter([self.batch])

    def __len__(self):
        return 1


def test_evaluate_ranks_the_paper_rule_on_the_outputs_zeros():
    """evaluation.evaluate keeps a 0 output as 0 for the paper rule, and as +1 for every Hamming metric."""
    from types import SimpleNamespace

    import paddle

    from utils.train import evaluation
    rng = np.random.default_rng(8)
    rB, qB, rL, qL = data_with_zeros(rng, n_db=60, n_q=12, bits=5)
    loaders = {"test": Batches(qB * 0.7, qL), "database": Batches(rB * 1.3, rL), "train": Batches(rB[:3], rL[:3])}
    cfg = SimpleNamespace(encoder="dygraph", crop_size=8, map_at=20, seed=0, bit=5)
    metrics, db_codes, _ = evaluation.evaluate(paddle.nn.Identity(), loaders, cfg, return_codes=True)
    assert metrics["map_paper_rule"] == pytest.approx(brute_force(rB, qB, rL, qL, 20)[0], abs=1e-12)
    hamming = retrieval_metrics(binarize(rB), binarize(qB), rL, qL, topk=20)
    assert metrics["map"] == hamming["map"] and metrics["map_paper_rule"] != pytest.approx(hamming["map_paper_rule"])
    np.testing.assert_array_equal(db_codes, binarize(rB))       # the codes a run stores stay ±1
