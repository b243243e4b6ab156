"""Retrieval metrics of Hamming ranking (pure numpy; docs/protocol.md#metric): mAP@K (``CalcTopMap`` and the plain
loop it must match), the closed-form tie-aware AP, the authors' Caffe rule (``map_paper_rule``) and the paper-style
``retrieval_metrics``.

Codes are packed and ranked by utils.hashing.codes. mAP looks labels (packed with ``pack_labels``) up only for the
top-K candidates. ``retrieval_metrics`` needs the relevance of every database item and gets it from per-class
item bitmaps instead (OR of the query's classes, byte-sized work).

Paddle is not imported at module level; paddle Tensors are accepted anywhere codes or labels are and
converted with ``.numpy()``.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from utils.hashing.codes import (
    _CHUNK_PAIRS,
    _MAX_CHUNK_ROWS,
    _check_codes,
    _check_topk,
    _stable_topk_rows,
    _to_numpy,
    binarize,
    hamming_distances,
    pack_codes,
    pack_labels,
)

__all__ = ["CalcTopMap", "CalcTopMap_reference", "map_paper_rule", "retrieval_metrics", "tie_aware_average_precision"]

# Below this many query x database pairs a second worker costs more than it saves.
_PARALLEL_MIN_PAIRS = 20_000_000
_PROGRESS_MIN_PAIRS = 200_000_000


# ----------------------------------------------------------------------------------------------- inputs
def _check_labels(labels, name, rows, rows_name):
    labels = _to_numpy(labels, name)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected multi-hot labels of shape (n, classes), got shape {labels.shape}")
    if labels.shape[0] != rows:
        raise ValueError(f"{name} has {labels.shape[0]} rows but {rows_name} has {rows} codes; "
                         "labels and codes must describe the same items in the same order")
    if labels.size and not np.all((labels == 0) | (labels == 1)):
        bad = labels[(labels != 0) & (labels != 1)].ravel()[0].item()
        raise ValueError(f"{name}: labels must be 0/1 multi-hot (found {bad!r})")
    return labels


def _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk, caller, allow_zero=False):
    rB = _check_codes(rB, f"{caller}: rB (database codes)", allow_zero)
    qB = _check_codes(qB, f"{caller}: qB (query codes)", allow_zero)
    if rB.shape[1] != qB.shape[1]:
        raise ValueError(f"{caller}: rB has {rB.shape[1]} bits per code but qB has {qB.shape[1]}; "
                         "database and query codes must come from the same model")
    if rB.shape[0] == 0 or qB.shape[0] == 0:
        raise ValueError(f"{caller}: empty input ({rB.shape[0]} database codes, {qB.shape[0]} query codes)")
    retrievalL = _check_labels(retrievalL, f"{caller}: retrievalL (database labels)", rB.shape[0], "rB")
    queryL = _check_labels(queryL, f"{caller}: queryL (query labels)", qB.shape[0], "qB")
    if retrievalL.shape[1] != queryL.shape[1]:
        raise ValueError(f"{caller}: retrievalL has {retrievalL.shape[1]} classes but queryL has "
                         f"{queryL.shape[1]}")
    topk = _check_topk(topk, f"{caller}: topk")
    return rB, qB, retrievalL, queryL, topk


# ---------------------------------------------------------------------------------------------- mAP
def _relevance(q_labels_packed, db_labels_packed, rows, index):
    """Boolean (rows, k): does database item index[i, j] share a label with query rows[i]?

    Only the top-K candidates are looked up: one uint64 AND per label word and candidate.
    """
    rel = None
    for w in range(db_labels_packed.shape[0]):
        shared = np.bitwise_and(db_labels_packed[w][index], q_labels_packed[w, rows][:, None])
        rel = shared != 0 if rel is None else rel | (shared != 0)
    return rel


def _class_bitmaps(labels):
    """Per class, a bitmap of the items carrying it: (classes + 1, ceil(n / 8)) uint8, last row empty."""
    bitmaps = np.zeros((labels.shape[1] + 1, (labels.shape[0] + 7) // 8), dtype=np.uint8)
    bitmaps[:-1] = np.packbits(labels.T > 0, axis=1)
    return bitmaps


def _class_lists(labels):
    """Classes of each item as a padded (n, max classes) index matrix; padding is the empty bitmap row."""
    present = labels > 0
    width = max(1, int(present.sum(axis=1).max(initial=0)))
    lists = np.full((labels.shape[0], width), labels.shape[1], dtype=np.int64)
    rows, cols = np.nonzero(present)
    slot = np.arange(rows.size) - np.searchsorted(rows, rows)        # position among the row's classes
    lists[rows, slot] = cols
    return lists


def _relevance_all(bitmaps, class_lists, n):
    """Boolean (queries, n): database items sharing a class with each query (OR of its class bitmaps).

    Byte-sized bitmaps make this ~30x cheaper than ANDing every item's uint64 label words.
    """
    acc = bitmaps[class_lists[:, 0]]
    for j in range(1, class_lists.shape[1]):
        np.bitwise_or(acc, bitmaps[class_lists[:, j]], out=acc)
    return np.unpackbits(acc, axis=1, count=n).view(bool)


def _average_precision(rel):
    """AP of each row of a relevance matrix given in rank order (docs/protocol.md#metric); 0 without hits."""
    hits = np.cumsum(rel, axis=1, dtype=np.int32)
    found = hits[:, -1].astype(np.int64)
    hits *= rel                                    # rank among relevant, at the relevant positions only
    total = (hits / np.arange(1, rel.shape[1] + 1, dtype=np.float64)).sum(axis=1)
    return np.divide(total, found, out=np.zeros(rel.shape[0]), where=found > 0), found


def _default_workers(num_workers, pairs):
    if num_workers is None:
        return min(2, os.cpu_count() or 1) if pairs >= _PARALLEL_MIN_PAIRS else 1
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}")
    return int(num_workers)


def _chunks(nq, n):
    """Query ranges of ~1M query x database pairs: big enough to amortise Python, small enough for cache."""
    rows = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_PAIRS // max(1, n)))
    return [(s, min(nq, s + rows)) for s in range(0, nq, rows)]


def _run_chunks(fn, chunks, num_workers, progress, desc):
    """fn(start, stop) over all chunks, in threads (numpy releases the GIL in the heavy loops)."""
    bar = tqdm(total=len(chunks), desc=desc, disable=not progress, leave=False)
    try:
        if num_workers == 1:
            for start, stop in chunks:
                fn(start, stop)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as pool:
                for future in [pool.submit(fn, s, e) for s, e in chunks]:
                    future.result()
                    bar.update()
    finally:
        bar.close()


def _show_progress(progress, pairs):
    return pairs >= _PROGRESS_MIN_PAIRS if progress is None else bool(progress)


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


# ---------------------------------------------------------------------------------------------- extra metrics
def tie_aware_average_precision(level_counts, level_relevant, k):
    """Expected AP@k of one query over all orders of equal-distance items (exact, closed form).

    level_counts[l], level_relevant[l]: items and relevant items at Hamming distance l. The expectation
    is over uniformly random orders inside every tie group; a group straddling the cut at k also
    randomises which of its items fall inside the top k. Definition of AP as in docs/protocol.md#metric (0 when
    no relevant item is in the top k).

    Derivation: in a tie group of n items (r relevant) at positions s+1..s+n after R relevant items, slot
    p is relevant with probability r/n and, given that, holds on average 1 + (p-1)(r-1)/(n-1) of the
    group's relevant items, so the group adds (r/n)(R+1)H1 + r(r-1)/(n(n-1)) H2 to the sum of
    rank/position, with H1 = sum_p 1/(s+p) and H2 = sum_p (p-1)/(s+p) = n - (s+1)H1. Groups wholly inside
    the top k do not change the number of relevant items found (R0), and their order is independent of
    the straddling group's; the straddling group puts X ~ Hypergeometric(n, r, L = k - s) relevant items
    inside, uniformly over its L slots. So E[AP] = sum_x P(X=x) (A + B(x)) / (R0 + x), with A the full
    groups' sum and B(x) the straddling group's term with (n, r) replaced by (L, x).
    """
    counts = np.asarray(level_counts, dtype=np.int64)[None, :]
    relevant = np.asarray(level_relevant, dtype=np.int64)[None, :]
    return float(_tie_aware_ap_rows(counts, relevant, _check_topk(k, "tie_aware_average_precision: k"))[0])


def _expected_rank_sum(n, r, s, before):
    """Expected sum of rank/position over the relevant items of tie groups (elementwise arrays).

    n items, r relevant, positions s+1..s+n, `before` relevant items ranked earlier; 0 where n == 0.
    """
    n, r, s, before = (np.asarray(v, dtype=np.float64) for v in (n, r, s, before))
    h1 = _harmonic(s + n) - _harmonic(s)
    h2 = n - (s + 1.0) * h1
    single = np.divide(r, n, out=np.zeros(np.broadcast(n, r).shape), where=n > 0)
    pair = np.divide(r * (r - 1.0), n * (n - 1.0), out=np.zeros(np.broadcast(n, r).shape), where=n > 1)
    return single * (before + 1.0) * h1 + pair * h2


def _tie_aware_ap_rows(counts, relevant, k, max_terms=1 << 20):
    """tie_aware_average_precision for every row of (queries, levels) count matrices at once."""
    starts = np.cumsum(counts, axis=1) - counts
    before = np.cumsum(relevant, axis=1) - relevant
    full = (counts > 0) & (starts + counts <= k)
    a = np.where(full, _expected_rank_sum(counts, relevant, starts, before), 0.0).sum(axis=1)
    r0 = np.where(full, relevant, 0).sum(axis=1)
    result = np.divide(a, r0, out=np.zeros(a.shape), where=r0 > 0)
    straddling = (starts < k) & (starts + counts > k)           # at most one level per row
    rows = np.flatnonzero(straddling.any(axis=1))
    if rows.size == 0:
        return result
    level = np.argmax(straddling[rows], axis=1)
    n, r, s = counts[rows, level], relevant[rows, level], starts[rows, level]
    slots = k - s
    x_low, x_high = np.maximum(0, slots - (n - r)), np.minimum(r, slots)
    width = int((x_high - x_low).max()) + 1
    step = max(1, max_terms // width)                            # bound the (rows, x) temporaries
    for b in range(0, rows.size, step):
        sl = slice(b, b + step)
        x = x_low[sl, None] + np.arange(width)[None, :]
        valid = x <= x_high[sl, None]
        x = np.where(valid, x, x_low[sl, None])
        pmf = _hypergeometric_pmf(x, valid, n[sl, None], r[sl, None], slots[sl, None])
        b_x = _expected_rank_sum(slots[sl, None], x, s[sl, None], r0[rows[sl], None])
        found = r0[rows[sl], None] + x
        terms = np.divide(a[rows[sl], None] + b_x, found, out=np.zeros(x.shape), where=found > 0)
        result[rows[sl]] = (pmf * terms).sum(axis=1)
    return result


_HARMONIC = np.zeros(1)


def _grow_table(table, top, build):
    if top < table.shape[0]:
        return table
    return build(max(top + 1, 2 * table.shape[0], 1024))


def _harmonic(m):
    """H(m) = sum_{i=1..m} 1/i for integer-valued arrays m (table grown on demand)."""
    global _HARMONIC
    m = np.asarray(m).astype(np.int64)
    _HARMONIC = _grow_table(_HARMONIC, int(m.max(initial=0)),
                            lambda size: np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size))]))
    return _HARMONIC[m]


def _hypergeometric_pmf(x, valid, n, r, draws):
    """P(X = x) for X ~ Hypergeometric(n items, r marked, draws), rows of consecutive x from the lowest.

    Built from the ratio P(x)/P(x-1) = (r-x+1)(draws-x+1) / (x (n-r-draws+x)) in log space, so no large
    factorials cancel; normalised per row. Entries where valid is False get 0.
    """
    prev = x[:, :-1].astype(np.float64)
    num = (r - prev) * (draws - prev)
    den = (prev + 1.0) * (n - r - draws + prev + 1.0)
    ok = valid[:, 1:]
    log_ratio = np.log(np.where(ok, num, 1.0)) - np.log(np.where(ok, den, 1.0))
    log_pmf = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(log_ratio, axis=1)], axis=1)
    log_pmf = np.where(valid, log_pmf, -np.inf)
    pmf = np.exp(log_pmf - log_pmf.max(axis=1, keepdims=True))
    return pmf / pmf.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- the authors' rule
def _level_histogram(dist, rel_all, levels):
    """Per row, the items and the relevant items at each distance level: two (rows, levels) int64 matrices."""
    rows = dist.shape[0]
    # one bincount histograms (row, level, relevant) for the whole chunk
    key = np.add(dist, np.arange(rows, dtype=np.intp)[:, None] * levels, dtype=np.intp)
    key <<= 1
    np.bitwise_or(key, rel_all, out=key)
    hist = np.bincount(key.ravel(), minlength=rows * levels * 2).reshape(rows, levels, 2)
    return hist.sum(axis=2), hist[:, :, 1]


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
