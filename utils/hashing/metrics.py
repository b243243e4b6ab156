"""Retrieval metrics of Hamming ranking (pure numpy; docs/protocol.md#metric): mAP@K (``CalcTopMap``, the seed's,
and the plain loop it must match) and the paper-style bundle ``retrieval_metrics`` (mAP@K, its tie-aware expectation,
precision within a Hamming radius, P@N, the PR curve and the authors' rule), computed in one pass over the queries.

The pieces: utils/hashing/relevance.py (input checks, relevance, AP, the chunked loop), utils/hashing/tie_aware.py
(the closed-form tie-aware AP), utils/hashing/paper_rule.py (the authors' Caffe rule, ``map_paper_rule``); codes are
packed and ranked by utils/hashing/codes.py.

Paddle is not imported at module level; paddle Tensors are accepted anywhere codes or labels are and
converted with ``.numpy()``.
"""
import numpy as np

from utils.hashing.codes import _check_topk, _stable_topk_rows, binarize, hamming_distances, pack_codes, pack_labels
from utils.hashing.paper_rule import _inner_product_ap, _paper_rule_mean
from utils.hashing.relevance import (
    _average_precision,
    _check_retrieval_inputs,
    _chunks,
    _class_bitmaps,
    _class_lists,
    _default_workers,
    _relevance,
    _relevance_all,
    _run_chunks,
    _show_progress,
)
from utils.hashing.tie_aware import _level_histogram, _tie_aware_ap_rows

__all__ = ["CalcTopMap", "CalcTopMap_reference", "retrieval_metrics"]


def _per_query_ap(rB, qB, retrievalL, queryL, topk, num_workers, progress, caller):
    rB, qB, retrievalL, queryL, topk = _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk, caller)
    db, q = pack_codes(rB), pack_codes(qB)
    db_lab, q_lab = pack_labels(retrievalL), pack_labels(queryL)
    nq, n = qB.shape[0], rB.shape[0]
    k = min(topk, n)
    max_dist = rB.shape[1]
    ap = np.zeros(nq)
    found = np.zeros(nq, dtype=np.int64)

    def chunk(start, stop):
        dist = hamming_distances(q[:, start:stop], db)
        index, _ = _stable_topk_rows(dist, k, max_dist)
        del dist
        rel = _relevance(q_lab, db_lab, np.arange(start, stop), index)
        ap[start:stop], found[start:stop] = _average_precision(rel)

    pairs = nq * n
    _run_chunks(chunk, _chunks(nq, n), _default_workers(num_workers, pairs),
                _show_progress(progress, pairs), f"mAP@{topk}")
    return ap, found


def CalcTopMap(rB, qB, retrievalL, queryL, topk, num_workers=None, progress=None):
    """mAP@topk of Hamming ranking (docs/protocol.md#metric), the seed's function with its argument order.

    rB, qB: database and query ±1 codes (n, bits); retrievalL, queryL: 0/1 multi-hot labels.
    Ranking by Hamming distance with ties in database order; relevant = shares >= 1 label; AP over the
    top K = mean over relevant items r in the top K of (rank of r among relevant / position of r);
    queries without a relevant item in their top K count with AP 0; topk >= database size ranks the
    whole database. num_workers: threads (None: 2 for large inputs, 1 for small ones).
    """
    ap, _ = _per_query_ap(rB, qB, retrievalL, queryL, topk, num_workers, progress, "CalcTopMap")
    return float(ap.mean())


def CalcTopMap_reference(rB, qB, retrievalL, queryL, topk):
    """The plain per-query loop of the seed (with a stable sort): the definition CalcTopMap must match."""
    rB, qB, retrievalL, queryL, topk = _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk,
                                                               "CalcTopMap_reference")
    # float32 as the seed's loop runs it: every product here is a small integer, exact in float32
    rB, qB = rB.astype(np.float32), qB.astype(np.float32)
    retrievalL, queryL = retrievalL.astype(np.float32), queryL.astype(np.float32)
    bits = qB.shape[1]
    total = 0.0
    for i in range(qB.shape[0]):
        relevant = (queryL[i] @ retrievalL.T > 0).astype(np.float32)
        hamming = 0.5 * (bits - rB @ qB[i])
        order = np.argsort(hamming, kind="stable")
        top = relevant[order][:topk]
        hits = int(top.sum())
        if hits == 0:
            continue
        rank = np.linspace(1, hits, hits)
        position = np.flatnonzero(top == 1) + 1.0
        total += np.mean(rank / position)
    return total / qB.shape[0]



def retrieval_metrics(rB, qB, retrievalL, queryL, topk=5000,
                      pn_points=(100, 500, 1000, 2000, 3000, 4000, 5000), radius=2,
                      num_workers=None, progress=None):
    """Paper-style retrieval metrics of Hamming ranking; JSON-serialisable dict.

    Same inputs and ranking as CalcTopMap (stable: ties in database order; relevant = shares a label), except that the
    codes may also hold 0 (codes.sign_codes): the Hamming metrics count a 0 as +1 (binarize), the paper rule keeps it.
    Keys:
    - ``map``: mAP@topk = CalcTopMap (queries without a relevant item in their top K count 0).
    - ``map_nonzero``: mean AP over only the queries with >= 1 relevant item in their top K (the rule of
      HashNet's official test code); ``nonzero_queries`` is how many there are.
    - ``map_tie_aware``: expected mAP@topk over all orders of equal-distance items (exact closed form,
      see tie_aware_average_precision), i.e. without the database-order tie break.
    - ``precision_radius{radius}`` (default ``precision_radius2``): per query, the precision of the items
      within Hamming distance <= radius, averaged over queries; a query with no item inside the radius
      contributes 0 (the common convention; it penalises long codes, whose radius-2 balls are often
      empty), and ``radius{radius}_empty_fraction`` is the share of such queries.
    - ``precision_at_n``: {N: mean over queries of the precision of the top N in stable Hamming order}, N
      capped at the database size;
      N larger than the database uses the whole database.
    - ``pr_curve``: [{radius, precision, recall}] for radius 0..bits: the items within that radius are
      retrieved; per-query precision and recall, then the mean over queries (macro average, the way
      hashing papers compute their Hamming-radius PR curves). A query with nothing retrieved counts
      precision 0; a query without any relevant item in the database counts recall 0.
    - ``map_paper_rule``: map_paper_rule (inner-product ranking of the codes with their zeros, ties in database
      order, queries without a relevant item in the database left out); ``map_paper_rule_tie_aware``: its expectation
      over the orders of equal inner products; ``paper_rule_queries``: the queries counted. Without zeros the ranking
      is the Hamming ranking, so these are ``map`` and ``map_tie_aware`` over those queries.
    Also ``topk``, ``bits``, ``num_query``, ``num_database``.
    """
    caller = "retrieval_metrics"
    signs_db, signs_q, retrievalL, queryL, topk = _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk, caller,
                                                                          allow_zero=True)
    rB, qB = binarize(signs_db), binarize(signs_q)
    has_zero = not (np.all(signs_db != 0) and np.all(signs_q != 0))
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"{caller}: radius must be a non-negative integer, got {radius!r}")
    radius = int(radius)
    pn_points = [_check_topk(p, f"{caller}: pn_points entry") for p in pn_points]
    db, q = pack_codes(rB), pack_codes(qB)
    db_bitmaps, q_classes = _class_bitmaps(retrievalL), _class_lists(queryL)
    nq, n = qB.shape[0], rB.shape[0]
    # P@N for N beyond the database size is not defined: report those N no further than the database itself
    pn_points = sorted({min(p, n) for p in pn_points})
    bits = rB.shape[1]
    levels = bits + 1
    k = min(topk, n)
    ranked = min(max([k] + pn_points), n)
    ap = np.zeros(nq)
    found = np.zeros(nq, dtype=np.int64)
    ap_ties = np.zeros(nq)
    ap_paper, ap_paper_ties = (np.zeros(nq), np.zeros(nq)) if has_zero else (ap, ap_ties)
    hits_at = np.zeros((nq, len(pn_points)), dtype=np.int64)
    level_n = np.zeros((nq, levels), dtype=np.int64)
    level_r = np.zeros((nq, levels), dtype=np.int64)
    points = np.array([min(p, n) for p in pn_points])

    def chunk(start, stop):
        dist = hamming_distances(q[:, start:stop], db)
        index, _ = _stable_topk_rows(dist, ranked, bits)
        rel_all = _relevance_all(db_bitmaps, q_classes[start:stop], n)
        rel_top = np.take_along_axis(rel_all, index, axis=1)
        ap[start:stop], found[start:stop] = _average_precision(rel_top[:, :k])
        hits_at[start:stop] = np.cumsum(rel_top, axis=1)[:, points - 1]
        level_n[start:stop], level_r[start:stop] = _level_histogram(dist, rel_all, levels)
        ap_ties[start:stop] = _tie_aware_ap_rows(level_n[start:stop], level_r[start:stop], k)
        if has_zero:
            ap_paper[start:stop], ap_paper_ties[start:stop] = _inner_product_ap(signs_q[start:stop], signs_db,
                                                                                rel_all, k)

    pairs = nq * n
    _run_chunks(chunk, _chunks(nq, n), _default_workers(num_workers, pairs),
                _show_progress(progress, pairs), "retrieval metrics")

    within_n = np.cumsum(level_n, axis=1)
    within_r = np.cumsum(level_r, axis=1)
    total_r = within_r[:, -1]
    precision = np.divide(within_r, within_n, out=np.zeros(within_n.shape), where=within_n > 0)
    recall = np.divide(within_r, total_r[:, None], out=np.zeros(within_n.shape), where=total_r[:, None] > 0)
    r = min(radius, bits)
    nonzero = found > 0
    has_relevant = total_r > 0
    return {
        "map": float(ap.mean()),
        "map_nonzero": float(ap[nonzero].mean()) if nonzero.any() else 0.0,
        "nonzero_queries": int(nonzero.sum()),
        "map_tie_aware": float(ap_ties.mean()),
        "map_paper_rule": _paper_rule_mean(ap_paper, has_relevant),
        "map_paper_rule_tie_aware": _paper_rule_mean(ap_paper_ties, has_relevant),
        "paper_rule_queries": int(has_relevant.sum()),
        f"precision_radius{radius}": float(precision[:, r].mean()),
        f"radius{radius}_empty_fraction": float((within_n[:, r] == 0).mean()),
        "precision_at_n": {int(p): float((hits_at[:, j] / points[j]).mean()) for j, p in enumerate(pn_points)},
        "pr_curve": [{"radius": int(d), "precision": float(precision[:, d].mean()),
                      "recall": float(recall[:, d].mean())} for d in range(levels)],
        "topk": int(topk), "bits": int(bits), "num_query": int(nq), "num_database": int(n),
    }
