"""Binary codes, Hamming search and retrieval metrics (pure numpy; docs/protocol.md#metric).

Codes are ±1 arrays of shape (n, bits). For speed they are bit-packed "item per column":
``pack_codes`` returns an array of shape (planes, n) whose column j holds item j. The layout is
chosen for numpy's popcount (``np.bitwise_count``), which is vectorised only for uint8:
- bits <= 32: uint8 byte planes (plane p holds bits 8p..8p+7 of every item);
- bits > 32: uint64 words (scalar popcount on 8 bytes at once beats 8 byte planes there).
Unused high bits are zero in every code, so they never add to a distance. Multi-hot labels are packed
the same way into uint64 words (``pack_labels``) so "shares a label" is a bitwise AND != 0; mAP looks
labels up only for the top-K candidates. ``retrieval_metrics`` needs the relevance of every database
item and gets it from per-class item bitmaps instead (OR of the query's classes, byte-sized work).

Ranking is always the stable Hamming ranking of docs/protocol.md#metric: by distance, ties by database order.
It is computed without a full sort: every item gets the unique integer key ``distance << shift | index``;
a partition selects the K smallest keys (exactly the stable top K, keys being unique) and a sort of
those K gives their order.

Paddle is not imported at module level; paddle Tensors are accepted anywhere codes or labels are and
converted with ``.numpy()``.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

__all__ = [
    "binarize", "pack_codes", "pack_labels", "packed_size", "hamming_distances", "topk_search",
    "CalcTopMap", "CalcTopMap_reference", "retrieval_metrics", "tie_aware_average_precision",
]

MAX_BITS = 256
_BYTE_PLANE_MAX_BITS = 32
# Queries per chunk: ~1M query x database pairs, so a chunk's distances (1 byte per pair) and sort keys
# (4) stay in cache-friendly sizes and the memory of all workers together stays far below 2 GB.
_CHUNK_PAIRS = 1 << 20
_MAX_CHUNK_ROWS = 64
# Below this many query x database pairs a second worker costs more than it saves.
_PARALLEL_MIN_PAIRS = 20_000_000
_PROGRESS_MIN_PAIRS = 200_000_000

_POPCOUNT_TABLE = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def _popcount_table(x, out=None):
    """Bits set per element (uint8 result) by byte lookup: the path for numpy 1.x, which lacks bitwise_count."""
    if x.dtype == np.uint8:
        counts = _POPCOUNT_TABLE[x]
    else:
        as_bytes = np.ascontiguousarray(x).view(np.uint8).reshape(x.shape + (x.itemsize,))
        counts = _POPCOUNT_TABLE[as_bytes].sum(axis=-1, dtype=np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


# numpy >= 2.0 has a native popcount (vectorised for uint8); Paddle 2.6 environments may have numpy 1.x
_popcount = getattr(np, "bitwise_count", _popcount_table)


# ----------------------------------------------------------------------------------------------- inputs
def _to_numpy(x, name):
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # paddle.Tensor (or torch on CPU)
        x = x.numpy()
    return np.asarray(x)


def _check_codes(codes, name):
    codes = _to_numpy(codes, name)
    if codes.ndim != 2:
        raise ValueError(f"{name}: expected ±1 codes of shape (n, bits), got shape {codes.shape}")
    if not 1 <= codes.shape[1] <= MAX_BITS:
        raise ValueError(f"{name}: {codes.shape[1]} bits per code; supported are 1..{MAX_BITS}")
    if codes.size and not np.all((codes == 1) | (codes == -1)):
        bad = codes[(codes != 1) & (codes != -1)].ravel()[0].item()
        raise ValueError(f"{name}: codes must contain only -1 and +1 (found {bad!r}); "
                         "turn raw network outputs into codes with binarize() first")
    return codes


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


def _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk, caller):
    rB = _check_codes(rB, f"{caller}: rB (database codes)")
    qB = _check_codes(qB, f"{caller}: qB (query codes)")
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


def _check_topk(k, name):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


# ---------------------------------------------------------------------------------------------- packing
def binarize(outputs):
    """±1 float32 codes from raw hash-layer outputs: sign, with 0 mapped to +1 (docs/protocol.md#network)."""
    outputs = _to_numpy(outputs, "binarize: outputs")
    if np.issubdtype(outputs.dtype, np.floating) and np.isnan(outputs).any():
        raise ValueError("binarize: outputs contain NaN; the network diverged (check the learning rate)")
    return np.where(outputs >= 0, 1.0, -1.0).astype(np.float32)


def pack_codes(codes):
    """Pack ±1 codes (n, bits), 1 <= bits <= 256, into an array of shape (planes, n), column j = item j.

    dtype uint8 (byte planes) for bits <= 32, uint64 (words) above. Feed the result to
    ``hamming_distances`` / ``topk_search``; select items with ``packed[:, idx]``.
    """
    codes = _check_codes(codes, "pack_codes: codes")
    bits = codes.shape[1]
    as_bytes = np.packbits(codes > 0, axis=1, bitorder="little")          # (n, ceil(bits/8))
    if bits <= _BYTE_PLANE_MAX_BITS:
        return np.ascontiguousarray(as_bytes.T)
    words = -(-bits // 64)
    padded = np.zeros((codes.shape[0], words * 8), dtype=np.uint8)
    padded[:, :as_bytes.shape[1]] = as_bytes
    return np.ascontiguousarray(padded.view("<u8").astype(np.uint64).T)


def pack_labels(labels):
    """Pack 0/1 multi-hot labels (n, classes) into uint64 words of shape (words, n), column j = item j.

    Items i and j share a label iff ``np.any(packed[:, i] & packed[:, j])``.
    """
    labels = _to_numpy(labels, "pack_labels: labels")
    if labels.ndim != 2:
        raise ValueError(f"pack_labels: expected labels of shape (n, classes), got shape {labels.shape}")
    words = max(1, -(-labels.shape[1] // 64))
    as_bytes = np.packbits(labels > 0, axis=1, bitorder="little")
    padded = np.zeros((labels.shape[0], words * 8), dtype=np.uint8)
    padded[:, :as_bytes.shape[1]] = as_bytes
    return np.ascontiguousarray(padded.view("<u8").astype(np.uint64).T)


def packed_size(packed):
    """Number of items in a packed code array."""
    return packed.shape[1]


def _packed_max_distance(packed):
    return packed.shape[0] * 8 * packed.dtype.itemsize


def _check_packed(packed, name):
    packed = np.asarray(packed)
    if packed.ndim != 2 or packed.dtype not in (np.uint8, np.uint64):
        raise ValueError(f"{name}: expected packed codes from pack_codes() (2-D uint8 or uint64, shape "
                         f"(planes, n)), got dtype {packed.dtype} shape {packed.shape}")
    return packed


def _check_packed_pair(q_packed, db_packed, caller):
    q_packed = _check_packed(q_packed, f"{caller}: query codes")
    db_packed = _check_packed(db_packed, f"{caller}: database codes")
    if q_packed.dtype != db_packed.dtype or q_packed.shape[0] != db_packed.shape[0]:
        raise ValueError(f"{caller}: query codes packed as {q_packed.shape[0]} x {q_packed.dtype} planes but "
                         f"database codes as {db_packed.shape[0]} x {db_packed.dtype}; both must be "
                         "pack_codes() output for the same number of bits")
    return q_packed, db_packed


# ---------------------------------------------------------------------------------------------- distances
def _distance_dtype(packed):
    return np.uint8 if _packed_max_distance(packed) <= 255 else np.uint16


def hamming_distances(q_packed, db_packed, out=None):
    """Hamming distances (nq, n) between packed query codes (planes, nq) and packed database codes.

    dtype uint8, or uint16 when the packed planes hold more than 255 bit positions (codes over 192
    bits). Work is tiled over the database so the temporaries stay in cache; ``out`` may be given to
    reuse memory.
    """
    q_packed, db_packed = _check_packed_pair(q_packed, db_packed, "hamming_distances")
    nq, n = q_packed.shape[1], db_packed.shape[1]
    dist_dtype = _distance_dtype(db_packed)
    if out is None:
        out = np.empty((nq, n), dtype=dist_dtype)
    elif out.shape != (nq, n) or out.dtype != dist_dtype:
        raise ValueError(f"hamming_distances: out must be {dist_dtype.__name__} of shape {(nq, n)}, "
                         f"got {out.dtype} {out.shape}")
    if nq == 0 or n == 0:
        return out
    planes = q_packed.shape[0]
    # tile so that one temporary (rows x cols x itemsize) is ~1 MB
    cols = max(4096, (1 << 20) // (max(1, nq) * db_packed.dtype.itemsize))
    xor_buf = np.empty((nq, min(cols, n)), dtype=db_packed.dtype)
    cnt_buf = np.empty((nq, min(cols, n)), dtype=np.uint8) if (planes > 1 or dist_dtype != np.uint8) else None
    queries = [q_packed[p][:, None] for p in range(planes)]
    for start in range(0, n, cols):
        stop = min(n, start + cols)
        x = xor_buf[:, :stop - start]
        acc = out[:, start:stop]
        for p in range(planes):
            np.bitwise_xor(queries[p], db_packed[p, start:stop][None, :], out=x)
            if p == 0 and cnt_buf is None:
                _popcount(x, out=acc)
            else:
                c = cnt_buf[:, :stop - start]
                _popcount(x, out=c)
                if p == 0:
                    acc[...] = c
                else:
                    np.add(acc, c, out=acc, casting="unsafe")
    return out


# ---------------------------------------------------------------------------------------------- ranking
def _key_layout(n, max_dist):
    """Shift and dtype of the unique sort key ``distance << shift | index`` for n items."""
    shift = max(1, int(n - 1).bit_length())
    key_dtype = np.uint32 if (int(max_dist) << shift) | (n - 1) < 2 ** 32 else np.uint64
    return shift, key_dtype


def _stable_topk_rows(dist, k, max_dist):
    """Stable top-k of every row of a distance matrix: (indices int64 (rows, k), distances (rows, k)).

    k <= number of columns. Ties are broken by column order.
    """
    rows, n = dist.shape
    shift, key_dtype = _key_layout(n, max_dist)
    keys = np.left_shift(dist, shift, dtype=key_dtype)
    np.bitwise_or(keys, np.arange(n, dtype=key_dtype), out=keys)
    if k < n:
        keys.partition(k - 1, axis=1)               # in place: no second rows x n array
        keys = keys[:, :k].copy()
    keys.sort(axis=1)
    index = (keys & key_dtype((1 << shift) - 1)).astype(np.int64)
    return index, (keys >> key_dtype(shift)).astype(dist.dtype)


def _stable_topk_row_sparse(dist, k, max_dist, block=64):
    """Stable top-k of one distance row for small k, without touching every item twice.

    Items are grouped in ``block`` strided groups (item j in group j % groups); a group whose minimum
    exceeds a level holds no item at or below it, so the threshold walk up from the minimum distance
    only looks at the few groups that can contain the top k. Returns None when that would not pay off
    (then the caller uses the partition path).
    """
    n = dist.shape[0]
    groups = n // block
    if groups < 64 or k * block * 4 > n:
        return None
    body = dist[:groups * block].reshape(block, groups)
    group_min = body.min(axis=0)
    tail = np.arange(groups * block, n)
    order = np.argsort(group_min, kind="stable")
    sorted_min = group_min[order]
    level = int(min(sorted_min[0], dist[tail].min() if tail.size else max_dist))
    while True:
        used = int(np.searchsorted(sorted_min, level, side="right"))
        if used * block > n // 4:
            return None
        members = (order[:used][None, :] + (np.arange(block) * groups)[:, None]).ravel()
        candidates = np.concatenate([members, tail])
        cand_dist = dist[candidates]
        if np.count_nonzero(cand_dist <= level) >= k:
            break
        level += 1
    keep = cand_dist <= level
    index, d = candidates[keep], cand_dist[keep]
    shift, key_dtype = _key_layout(n, max_dist)
    keys = (d.astype(key_dtype) << key_dtype(shift)) | index.astype(key_dtype)
    keys = np.sort(keys)[:k]
    return (keys & key_dtype((1 << shift) - 1)).astype(np.int64), (keys >> key_dtype(shift)).astype(dist.dtype)


def topk_search(q_packed_or_codes, db_packed, k):
    """The k nearest database items of each query in stable Hamming order.

    Parameters: queries as packed codes (pack_codes output) or ±1 codes (n, bits); database as packed
    codes; k >= 1 (k larger than the database returns the whole database).
    Returns (indices int64 (nq, k'), distances (nq, k')) with k' = min(k, database size); ties are
    ordered by database index, so the answer is canonical.
    """
    k = _check_topk(k, "topk_search: k")
    q = q_packed_or_codes
    if not (isinstance(q, np.ndarray) and q.dtype in (np.uint8, np.uint64)):
        q = pack_codes(q)
    q, db_packed = _check_packed_pair(q, db_packed, "topk_search")
    nq, n = q.shape[1], db_packed.shape[1]
    k = min(k, n)
    max_dist = _packed_max_distance(db_packed)
    dist_dtype = _distance_dtype(db_packed)
    indices = np.empty((nq, k), dtype=np.int64)
    distances = np.empty((nq, k), dtype=dist_dtype)
    if nq == 0 or k == 0:
        return indices, distances
    rows = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_PAIRS // max(1, n)))
    buf = np.empty((rows, n), dtype=dist_dtype)
    for start in range(0, nq, rows):
        stop = min(nq, start + rows)
        dist = hamming_distances(q[:, start:stop], db_packed, out=buf[:stop - start])
        dense = []
        for r in range(stop - start):
            found = _stable_topk_row_sparse(dist[r], k, max_dist)
            if found is None:
                dense.append(r)
            else:
                indices[start + r], distances[start + r] = found
        if dense:
            idx, d = _stable_topk_rows(dist[dense], k, max_dist)
            indices[[start + r for r in dense]], distances[[start + r for r in dense]] = idx, d
    return indices, distances


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


def retrieval_metrics(rB, qB, retrievalL, queryL, topk=5000,
                      pn_points=(100, 500, 1000, 2000, 3000, 4000, 5000), radius=2,
                      num_workers=None, progress=None):
    """Paper-style retrieval metrics of Hamming ranking; JSON-serialisable dict.

    Same inputs and ranking as CalcTopMap (stable: ties in database order; relevant = shares a label).
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
    Also ``topk``, ``bits``, ``num_query``, ``num_database``.
    """
    caller = "retrieval_metrics"
    rB, qB, retrievalL, queryL, topk = _check_retrieval_inputs(rB, qB, retrievalL, queryL, topk, caller)
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
    hits_at = np.zeros((nq, len(pn_points)), dtype=np.int64)
    level_n = np.zeros((nq, levels), dtype=np.int64)
    level_r = np.zeros((nq, levels), dtype=np.int64)
    points = np.array([min(p, n) for p in pn_points])

    def chunk(start, stop):
        rows = stop - start
        dist = hamming_distances(q[:, start:stop], db)
        index, _ = _stable_topk_rows(dist, ranked, bits)
        rel_all = _relevance_all(db_bitmaps, q_classes[start:stop], n)
        rel_top = np.take_along_axis(rel_all, index, axis=1)
        ap[start:stop], found[start:stop] = _average_precision(rel_top[:, :k])
        hits_at[start:stop] = np.cumsum(rel_top, axis=1)[:, points - 1]
        # one bincount histograms (query, distance, relevant) for the whole chunk
        key = np.add(dist, np.arange(rows, dtype=np.intp)[:, None] * levels, dtype=np.intp)
        key <<= 1
        np.bitwise_or(key, rel_all, out=key)
        hist = np.bincount(key.ravel(), minlength=rows * levels * 2).reshape(rows, levels, 2)
        level_n[start:stop] = hist.sum(axis=2)
        level_r[start:stop] = hist[:, :, 1]
        ap_ties[start:stop] = _tie_aware_ap_rows(level_n[start:stop], level_r[start:stop], k)

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
    return {
        "map": float(ap.mean()),
        "map_nonzero": float(ap[nonzero].mean()) if nonzero.any() else 0.0,
        "nonzero_queries": int(nonzero.sum()),
        "map_tie_aware": float(ap_ties.mean()),
        f"precision_radius{radius}": float(precision[:, r].mean()),
        f"radius{radius}_empty_fraction": float((within_n[:, r] == 0).mean()),
        "precision_at_n": {int(p): float((hits_at[:, j] / points[j]).mean()) for j, p in enumerate(pn_points)},
        "pr_curve": [{"radius": int(d), "precision": float(precision[:, d].mean()),
                      "recall": float(recall[:, d].mean())} for d in range(levels)],
        "topk": int(topk), "bits": int(bits), "num_query": int(nq), "num_database": int(n),
    }
