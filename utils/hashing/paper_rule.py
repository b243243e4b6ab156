"""mAP@K by the rule of the authors' Caffe evaluation (docs/protocol.md#paper-recipe): inner-product ranking of codes
that may hold 0, and a mean over only the queries with a relevant item in the database."""
import numpy as np

from utils.hashing.codes import _stable_topk_rows
from utils.hashing.relevance import (
    _average_precision,
    _check_retrieval_inputs,
    _chunks,
    _class_bitmaps,
    _class_lists,
    _default_workers,
    _relevance_all,
    _run_chunks,
    _show_progress,
)
from utils.hashing.tie_aware import _level_histogram, _tie_aware_ap_rows

__all__ = ["map_paper_rule"]


def _inner_product_ap(q_signs, db_signs, rel_all, k):
    """AP@k of inner-product ranking (ties in database order) and its tie-aware expectation, per query row.

    Codes in {-1, 0, +1}: bits - q.d, in 0..2 bits, orders the database as -q.d does.
    """
    bits = q_signs.shape[1]
    # small integers: the float32 product is exact
    dist = np.rint(bits - q_signs.astype(np.float32) @ db_signs.astype(np.float32).T).astype(np.uint16)
    index, _ = _stable_topk_rows(dist, k, 2 * bits)
    ap, _ = _average_precision(np.take_along_axis(rel_all, index, axis=1))
    level_n, level_r = _level_histogram(dist, rel_all, 2 * bits + 1)
    return ap, _tie_aware_ap_rows(level_n, level_r, k)


def _has_relevant(retrievalL, queryL):
    """Per query: does any database item share a label with it (a class of the query occurs in the database)?"""
    return (queryL > 0) @ (retrievalL > 0).any(axis=0) > 0


def _paper_rule_mean(ap, has_relevant):
    """The authors' mean: over the queries with a relevant item in the database (0.0 when there is none)."""
    return float(ap[has_relevant].mean()) if has_relevant.any() else 0.0


def map_paper_rule(rB, qB, retrievalL, queryL, topk, tie_aware=False, num_workers=None, progress=None):
    """mAP@topk by the rule of the authors' Caffe evaluation (docs/protocol.md#paper-recipe).

    rB, qB: codes in {-1, 0, +1}, the sign of the outputs with 0 kept (codes.sign_codes; ±1 codes work as they are).
    Database ranked by inner product with the query, ties in database order; relevant = shares >= 1 label;
    AP = sum over the top K of precision@i * rel_i / (relevant items in the top K), 0 when there is none; the mean
    leaves out the queries with no relevant item in the whole database (0.0 when every query is left out).
    tie_aware: the expectation over all orders of equal inner products instead of database order (their
    np.argsort's tie order is unspecified).
    """
    caller = "map_paper_rule"
    rB, qB, retrievalL, queryL, topk = _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk, caller,
                                                               allow_zero=True)
    db_bitmaps, q_classes = _class_bitmaps(retrievalL), _class_lists(queryL)
    nq, n = qB.shape[0], rB.shape[0]
    k = min(topk, n)
    ap = np.zeros(nq)

    def chunk(start, stop):
        rel_all = _relevance_all(db_bitmaps, q_classes[start:stop], n)
        stable, ties = _inner_product_ap(qB[start:stop], rB, rel_all, k)
        ap[start:stop] = ties if tie_aware else stable

    pairs = nq * n
    _run_chunks(chunk, _chunks(nq, n), _default_workers(num_workers, pairs),
                _show_progress(progress, pairs), f"mAP@{topk} (paper rule)")
    return _paper_rule_mean(ap, _has_relevant(retrievalL, queryL))


