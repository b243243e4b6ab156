"""Binary codes and Hamming search (pure numpy): the ±1 codes, their bit packing, Hamming distances and the stable
top-k ranking of docs/protocol.md#metric.

Codes are ±1 arrays of shape (n, bits). For speed they are bit-packed "item per column":
``pack_codes`` returns an array of shape (planes, n) whose column j holds item j. The layout is
chosen for numpy's popcount (``np.bitwise_count``), which is vectorised only for uint8:
- bits <= 32: uint8 byte planes (plane p holds bits 8p..8p+7 of every item);
- bits > 32: uint64 words (scalar popcount on 8 bytes at once beats 8 byte planes there).
Unused high bits are zero in every code, so they never add to a distance. Multi-hot labels are packed
the same way into uint64 words (``pack_labels``) so "shares a label" is a bitwise AND != 0.

Ranking is always the stable Hamming ranking of docs/protocol.md#metric: by distance, ties by database order.
It is computed without a full sort: every item gets the unique integer key ``distance << shift | index``;
a partition selects the K smallest keys (exactly the stable top K, keys being unique) and a sort of
those K gives their order.

Paddle is not imported at module level; paddle Tensors are accepted anywhere codes are and
converted with ``.numpy()``.
"""

import numpy as np

__all__ = [
    "binarize",
    "sign_codes",
    "pack_rows",
    "rows_to_planes",
    "pack_codes",
    "pack_labels",
    "packed_size",
    "hamming_distances",
    "plane_distances",
    "topk_search",
]

MAX_BITS = 256
_BYTE_PLANE_MAX_BITS = 32
# Queries per chunk: ~1M query x database pairs, so a chunk's distances (1 byte per pair) and sort keys
# (4) stay in cache-friendly sizes and the memory of all workers together stays far below 2 GB.
_CHUNK_PAIRS = 1 << 20
_MAX_CHUNK_ROWS = 64

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


def _check_codes(codes, name, allow_zero=False):
    """codes as a 2-D numpy array of ±1 (with allow_zero also 0: sign_codes output), else a ValueError naming them."""
    codes = _to_numpy(codes, name)
    if codes.ndim != 2:
        raise ValueError(f"{name}: expected ±1 codes of shape (n, bits), got shape {codes.shape}")
    if not 1 <= codes.shape[1] <= MAX_BITS:
        raise ValueError(f"{name}: {codes.shape[1]} bits per code; supported are 1..{MAX_BITS}")
    allowed = (codes == 1) | (codes == -1) | ((codes == 0) if allow_zero else False)
    if codes.size and not np.all(allowed):
        bad = codes[~allowed].ravel()[0].item()
        kinds, maker = ("-1, 0 and +1", "sign_codes()") if allow_zero else ("-1 and +1", "binarize()")
        raise ValueError(f"{name}: codes must contain only {kinds} (found {bad!r}); "
                         f"turn raw network outputs into codes with {maker} first")
    return codes


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


def sign_codes(outputs):
    """float32 sign of raw hash-layer outputs with 0 kept as 0: the authors' np.sign codes, for their evaluation rule
    (docs/protocol.md#paper-recipe); binarize(sign_codes(o)) == binarize(o)."""
    outputs = _to_numpy(outputs, "sign_codes: outputs")
    if np.issubdtype(outputs.dtype, np.floating) and np.isnan(outputs).any():
        raise ValueError("sign_codes: outputs contain NaN; the network diverged (check the learning rate)")
    return np.sign(outputs).astype(np.float32)


def pack_rows(codes):
    """Pack ±1 codes (n, bits) into bytes row by row, (n, ceil(bits / 8)) uint8: bit i of a code is bit i % 8 of its
    byte i // 8 (faiss's binary layout). The form an index stores; pack_codes is its search layout."""
    codes = _check_codes(codes, "pack_rows: codes")
    return np.packbits(codes > 0, axis=1, bitorder="little")


def rows_to_planes(rows, bits):
    """pack_rows output (n, ceil(bits / 8)) as pack_codes' search layout (planes, n)."""
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != -(-bits // 8):
        raise ValueError(f"rows_to_planes: {bits}-bit codes take {-(-bits // 8)} bytes a row, got shape {rows.shape}")
    if bits <= _BYTE_PLANE_MAX_BITS:
        return np.ascontiguousarray(rows.T)
    words = -(-bits // 64)
    padded = np.zeros((rows.shape[0], words * 8), dtype=np.uint8)
    padded[:, :rows.shape[1]] = rows
    return np.ascontiguousarray(padded.view("<u8").astype(np.uint64).T)


def pack_codes(codes):
    """Pack ±1 codes (n, bits), 1 <= bits <= 256, into an array of shape (planes, n), column j = item j.

    dtype uint8 (byte planes) for bits <= 32, uint64 (words) above. Feed the result to
    ``hamming_distances`` / ``topk_search``; select items with ``packed[:, idx]``.
    """
    codes = _check_codes(codes, "pack_codes: codes")
    return rows_to_planes(pack_rows(codes), codes.shape[1])


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


def plane_distances(query, db_packed):
    """Hamming distances (n,) int64 of one packed query code (planes,) to packed codes (planes, n): for a few
    candidates at a time (utils/hashing/multi_index.py), where hamming_distances' tiling does not pay."""
    return _popcount(np.bitwise_xor(db_packed, query[:, None])).sum(axis=0, dtype=np.int64)


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
