"""The tie-aware AP: the expected AP@k of a query over all orders of the database items at equal distance (exact,
closed form), so that a metric does not depend on how ties are broken (docs/protocol.md#metric)."""
import numpy as np

from utils.hashing.codes import _check_topk

__all__ = ["tie_aware_average_precision"]


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


def _level_histogram(dist, rel_all, levels):
    """Per row, the items and the relevant items at each distance level: two (rows, levels) int64 matrices."""
    rows = dist.shape[0]
    # one bincount histograms (row, level, relevant) for the whole chunk
    key = np.add(dist, np.arange(rows, dtype=np.intp)[:, None] * levels, dtype=np.intp)
    key <<= 1
    np.bitwise_or(key, rel_all, out=key)
    hist = np.bincount(key.ravel(), minlength=rows * levels * 2).reshape(rows, levels, 2)
    return hist.sum(axis=2), hist[:, :, 1]


