"""retrieval_metrics against brute force; the tie-aware mAP against enumeration and random tie orders."""
import itertools
import json
from math import comb

import numpy as np
import pytest

from utils.hashing.metrics import CalcTopMap, retrieval_metrics
from utils.hashing.tie_aware import tie_aware_average_precision


def tie_heavy_data(rng, bits, n_db, n_q, classes=5, prototypes=3, flip=0.08):
    protos = np.where(rng.random((prototypes, bits)) < 0.5, -1.0, 1.0)
    which = rng.integers(0, prototypes, n_db + n_q)
    codes = (protos[which] * np.where(rng.random((n_db + n_q, bits)) < flip, -1.0, 1.0)).astype(np.float32)
    labels = (rng.random((n_db + n_q, classes)) < 0.2).astype(np.float32)
    labels[np.arange(n_db + n_q), which] = 1
    return codes[:n_db], codes[n_db:], labels[:n_db], labels[n_db:]


def average_precision(rel_in_rank_order):
    hits = np.flatnonzero(rel_in_rank_order)
    if hits.size == 0:
        return 0.0
    return float(np.mean(np.arange(1, hits.size + 1) / (hits + 1.0)))


def brute_force_metrics(rB, qB, rL, qL, topk, pn_points, radius):
    bits, n = rB.shape[1], rB.shape[0]
    dist = (bits - qB.astype(np.int64) @ rB.T.astype(np.int64)) // 2
    rel = qL @ rL.T > 0
    k = min(topk, n)
    aps, nonzero, prec_r, empty, pn, pr = [], [], [], [], {p: [] for p in pn_points}, []
    for i in range(len(qB)):
        ranked = rel[i][np.argsort(dist[i], kind="stable")]
        ap = average_precision(ranked[:k])
        aps.append(ap)
        if ranked[:k].any():
            nonzero.append(ap)
        inside = dist[i] <= radius
        prec_r.append(rel[i][inside].mean() if inside.any() else 0.0)
        empty.append(not inside.any())
        for p in pn_points:
            pn[p].append(ranked[:min(p, n)].mean())
        row = []
        for r in range(bits + 1):
            inside = dist[i] <= r
            precision = rel[i][inside].mean() if inside.any() else 0.0
            recall = rel[i][inside].sum() / rel[i].sum() if rel[i].any() else 0.0
            row.append((precision, recall))
        pr.append(row)
    pr = np.array(pr)
    return {
        "map": np.mean(aps), "map_nonzero": np.mean(nonzero), "nonzero_queries": len(nonzero),
        f"precision_radius{radius}": np.mean(prec_r), f"radius{radius}_empty_fraction": np.mean(empty),
        "precision_at_n": {p: np.mean(v) for p, v in pn.items()},
        "pr_curve": [{"radius": r, "precision": pr[:, r, 0].mean(), "recall": pr[:, r, 1].mean()}
                     for r in range(bits + 1)],
    }


@pytest.mark.parametrize("bits,radius", [(8, 2), (16, 2), (48, 3)])
def test_every_key_matches_brute_force(bits, radius):
    rng = np.random.default_rng(bits)
    rB, qB, rL, qL = tie_heavy_data(rng, bits, n_db=300, n_q=40)
    qL[0] = 0
    qL[0, -1] = 1
    rL[:, -1] = 0              # query 0's only class is in no database item: AP 0, recall 0
    pn_points = (1, 10, 100, 500)   # 500 > database size: the whole database
    got = retrieval_metrics(rB, qB, rL, qL, topk=120, pn_points=pn_points, radius=radius)
    want = brute_force_metrics(rB, qB, rL, qL, 120, pn_points, radius)
    json.dumps(got)             # JSON-serialisable as promised
    assert got["map"] == pytest.approx(CalcTopMap(rB, qB, rL, qL, 120), abs=1e-12)
    for key in ("map", "map_nonzero", f"precision_radius{radius}", f"radius{radius}_empty_fraction"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["nonzero_queries"] == want["nonzero_queries"] < 40
    assert set(got["precision_at_n"]) == {1, 10, 100, 300}  # N capped at the database size (300)
    for p in (1, 10, 100):
        assert got["precision_at_n"][p] == pytest.approx(want["precision_at_n"][p], abs=1e-12), p
    assert got["precision_at_n"][300] == pytest.approx(want["precision_at_n"][500], abs=1e-12)  # whole database
    assert [row["radius"] for row in got["pr_curve"]] == list(range(bits + 1))
    for mine, theirs in zip(got["pr_curve"], want["pr_curve"]):
        assert mine["precision"] == pytest.approx(theirs["precision"], abs=1e-12)
        assert mine["recall"] == pytest.approx(theirs["recall"], abs=1e-12)
    assert got["pr_curve"][radius]["precision"] == got[f"precision_radius{radius}"]
    assert got["pr_curve"][-1]["recall"] == pytest.approx(39 / 40)   # all items retrieved; query 0 has none
    assert (got["topk"], got["bits"], got["num_query"], got["num_database"]) == (120, bits, 40, 300)


def enumerate_expected_ap(counts, relevant, k):
    """Exact expected AP@k: every arrangement of relevant items inside each tie group, equally likely."""
    groups = [list(itertools.combinations(range(n), r)) for n, r in zip(counts, relevant)]
    total, orders = 0.0, 0
    for choice in itertools.product(*groups):
        ranking = []
        for n, picked in zip(counts, choice):
            flags = np.zeros(n, dtype=bool)
            flags[list(picked)] = True
            ranking.extend(flags)
        total += average_precision(np.array(ranking[:k]))
        orders += 1
    assert orders == np.prod([comb(n, r) for n, r in zip(counts, relevant)])
    return total / orders


def test_tie_aware_ap_equals_enumeration():
    cases = [
        ([1, 3, 3], [0, 2, 1], 5),          # straddling group of 3, one slot inside
        ([2, 4, 5], [1, 2, 3], 4),          # K falls exactly on a group boundary
        ([3, 6, 2], [0, 3, 2], 7),          # straddle with 4 of 6 slots inside
        ([4, 0, 5], [2, 0, 0], 6),          # empty level and a straddling group without relevant items
        ([5, 3], [0, 2], 2),                # nothing relevant can reach the top K: 0
        ([2, 7], [1, 4], 100),              # K beyond the database
        ([8], [4], 3),
    ]
    for counts, relevant, k in cases:
        exact = enumerate_expected_ap(counts, relevant, k)
        assert tie_aware_average_precision(counts, relevant, k) == pytest.approx(exact, abs=1e-12), counts
    rng = np.random.default_rng(0)
    for _ in range(40):
        counts = rng.integers(0, 7, rng.integers(1, 5))
        relevant = [int(rng.integers(0, c + 1)) for c in counts]
        k = int(rng.integers(1, counts.sum() + 3)) if counts.sum() else 1
        exact = enumerate_expected_ap(counts, relevant, k)
        assert tie_aware_average_precision(counts, relevant, k) == pytest.approx(exact, abs=1e-12)


def test_tie_aware_map_matches_random_tie_orders():
    rng = np.random.default_rng(11)
    bits, k = 6, 60
    rB, qB, rL, qL = tie_heavy_data(rng, bits, n_db=200, n_q=5, prototypes=2, flip=0.15)
    dist = (bits - qB.astype(np.int64) @ rB.T.astype(np.int64)) // 2
    rel = qL @ rL.T > 0
    # the test only means something if tie groups are large and one straddles the cut at K
    straddles = 0
    for i in range(len(qB)):
        cut = np.sort(dist[i])[k - 1]
        straddles += (np.sum(dist[i] < cut) < k) and (np.sum(dist[i] <= cut) > k)
    assert straddles >= 3
    assert max(np.bincount(dist[i]).max() for i in range(len(qB))) >= 40

    samples = []
    for _ in range(3000):
        aps = []
        for i in range(len(qB)):
            perm = rng.permutation(len(rB))
            order = perm[np.argsort(dist[i][perm], kind="stable")]   # uniformly random inside ties
            aps.append(average_precision(rel[i][order][:k]))
        samples.append(np.mean(aps))
    samples = np.array(samples)
    tie_aware = retrieval_metrics(rB, qB, rL, qL, topk=k, pn_points=(10,))["map_tie_aware"]
    stderr = samples.std(ddof=1) / np.sqrt(len(samples))
    assert stderr > 0
    assert abs(samples.mean() - tie_aware) < 4 * stderr
    # and the database-order tie break really is a different number here
    assert abs(CalcTopMap(rB, qB, rL, qL, k) - tie_aware) > 4 * stderr


def test_errors():
    rB = np.ones((4, 8), dtype=np.float32)
    rL = np.ones((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"radius must be a non-negative integer, got -1"):
        retrieval_metrics(rB, rB, rL, rL, topk=2, radius=-1)
    with pytest.raises(ValueError, match=r"pn_points entry must be a positive integer, got 0"):
        retrieval_metrics(rB, rB, rL, rL, topk=2, pn_points=(0,))
