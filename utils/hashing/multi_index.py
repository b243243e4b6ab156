"""Exact Hamming search in sublinear time by multi-index hashing (Norouzi, Punjani and Fleet, "Fast Search in Hamming
Space with Multi-Index Hashing", CVPR 2012; "Fast Exact Search in Hamming Space with Multi-Index Hashing", TPAMI
2014). Pure NumPy, on codes packed row by row (codes.pack_rows: (n, ceil(bits / 8)) uint8).

A code of b bits is cut into m disjoint substrings of about b / m bits, and each substring indexes its own table (the
items sorted by that substring's value, with the start of every value's bucket). By the pigeonhole principle two
codes at Hamming distance d agree within floor(d / m) bits on at least one substring, so the items within radius R of
a query are among those whose j-th substring lies within floor(R / m) of the query's in some table j. Probing a table
at radius r means looking up the buckets of the query's substring XOR every r-bit mask.

k nearest neighbours probe r = 0, 1, 2, ... table by table. Once tables 0..j have been probed at radius r (and all
at r - 1), every item closer than m r + j + 1 has been seen: an unseen one has at least r + 1 differing bits in each
of the first j + 1 substrings and at least r in the others. The search stops when the k-th best distance seen is
below that bound, so the answer is exact, ties included: it is the stable Hamming ranking of docs/protocol.md#metric
(by distance, then by index), the same as codes.topk_search's over the whole database. When probing would cost
more than a scan (long codes over few items, or uniform codes at large radius; BUCKET_COST and CANDIDATE_COST weigh
a probed bucket and a candidate against a scanned item), the query is answered by the scan (codes.topk_search)
instead; the answer is the same.

m follows the paper's rule m = b / log2(n), so a bucket holds about one item of uniform codes; substrings are kept
to at most 24 bits so that every table's bucket starts fit in memory (2^24 entries).
"""
from functools import lru_cache
from itertools import chain, combinations
from math import comb

import numpy as np

from utils.hashing.codes import plane_distances, rows_to_planes, topk_search

MAX_SUBSTRING_BITS = 24
# what a probed bucket and a candidate cost, in items of the vectorised scan (measured on a 2-core Xeon with NumPy 2.4:
# the scan ~1.5 ns an item, a bucket lookup ~22 ns, a candidate's distance and merge ~100 ns). Probing stops, and the
# scan answers, once probing would cost more than a whole scan: at worst a query costs about two scans.
BUCKET_COST, CANDIDATE_COST = 16, 64


def substring_lengths(bits, n_items, substrings=None):
    """Lengths of the m substrings of a bits-bit code for an index of n_items (longest first, summing to bits)."""
    if substrings is None:
        substrings = round(bits / max(1.0, np.log2(max(2, n_items))))
    substrings = min(bits, max(1, int(substrings), -(-bits // MAX_SUBSTRING_BITS)))
    base, extra = divmod(bits, substrings)
    return [base + (1 if j < extra else 0) for j in range(substrings)]


@lru_cache(maxsize=None)
def flip_masks(length, radius):
    """Every length-bit value with exactly `radius` bits set (uint64): the XOR masks probing a bucket at that radius."""
    count = comb(length, radius)
    if radius == 0:
        masks = np.zeros(count, dtype=np.uint64)
    else:
        positions = np.fromiter(chain.from_iterable(combinations(range(length), radius)), dtype=np.uint64,
                                count=count * radius).reshape(count, radius)
        masks = np.bitwise_or.reduce(np.left_shift(np.uint64(1), positions), axis=1)
    masks.setflags(write=False)
    return masks


def substring_values(rows, start, length):
    """The `length`-bit substring starting at bit `start` of every row-packed code, as uint64 (n,)."""
    first, last = start // 8, (start + length - 1) // 8
    value = np.zeros(rows.shape[0], dtype=np.uint64)
    for offset, byte in enumerate(range(first, last + 1)):
        value |= rows[:, byte].astype(np.uint64) << np.uint64(8 * offset)
    return (value >> np.uint64(start - 8 * first)) & np.uint64((1 << length) - 1)


class MultiIndex:
    """Exact k-NN and radius search over row-packed codes (n, ceil(bits / 8)) uint8; see the module docstring.

    `chunk` bounds the memory of building (items per pass). The tables hold int32 item numbers when n < 2^31."""

    def __init__(self, rows, bits, substrings=None, chunk=1 << 22):
        rows = np.asarray(rows)
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != -(-bits // 8):
            raise ValueError(f"MultiIndex: expected {bits}-bit codes packed by rows, uint8 of shape (n, "
                             f"{-(-bits // 8)}); got {rows.dtype} {rows.shape}")
        self.bits, self.size = int(bits), rows.shape[0]
        # the codes in codes.pack_codes' search layout (planes, n), so the scan is the project's one scan
        self.planes = rows_to_planes(rows, self.bits)
        self.lengths = substring_lengths(self.bits, self.size, substrings)
        self.starts = np.cumsum([0] + self.lengths[:-1]).tolist()
        item_dtype = np.int32 if self.size < 2 ** 31 else np.int64
        self.tables = []  # per substring: (item numbers sorted by value, bucket starts of every value)
        for start, length in zip(self.starts, self.lengths):
            values = np.empty(self.size, dtype=np.uint32)
            for lo in range(0, self.size, chunk):
                values[lo:lo + chunk] = substring_values(rows[lo:lo + chunk], start, length)
            order = np.argsort(values, kind="stable").astype(item_dtype)
            counts = np.bincount(values, minlength=1 << length)
            bucket_starts = np.zeros((1 << length) + 1, dtype=item_dtype)
            np.cumsum(counts, out=bucket_starts[1:])
            self.tables.append((order, bucket_starts))

    @property
    def nbytes(self):
        return self.planes.nbytes + sum(order.nbytes + starts.nbytes for order, starts in self.tables)

    # ----------------------------------------------------------------------------------------------- probing
    def _query_parts(self, query_row):
        query_row = np.asarray(query_row)
        if query_row.dtype != np.uint8 or query_row.shape != (-(-self.bits // 8),):
            raise ValueError(f"MultiIndex: a query is one {self.bits}-bit code packed by rows, uint8 of shape "
                             f"({-(-self.bits // 8)},); got {query_row.dtype} {query_row.shape}")
        query_row = query_row[None, :]
        return (rows_to_planes(query_row, self.bits)[:, 0],
                [int(substring_values(query_row, s, n)[0]) for s, n in zip(self.starts, self.lengths)])

    def _probe(self, table, value, radius):
        """Item numbers in the buckets of table `table` within exactly `radius` bits of `value`."""
        order, bucket_starts = self.tables[table]
        if radius > self.lengths[table]:
            return order[:0]
        probes = (np.uint64(value) ^ flip_masks(self.lengths[table], radius)).astype(np.int64)
        lo, hi = bucket_starts[probes].astype(np.int64), bucket_starts[probes + 1].astype(np.int64)
        sizes = hi - lo
        total = int(sizes.sum())
        if total == 0:
            return order[:0]
        steps = np.ones(total, dtype=np.int64)  # consecutive positions, jumping at each bucket's start
        nonempty = sizes > 0
        first = np.cumsum(sizes[nonempty])[:-1]
        steps[0] = lo[nonempty][0]
        steps[first] = lo[nonempty][1:] - hi[nonempty][:-1] + 1
        return order[np.cumsum(steps)]

    def _probe_cost(self, table, radius):
        """Buckets a probe at this radius looks up."""
        return comb(self.lengths[table], radius)

    def _scan(self, query_planes):
        return plane_distances(query_planes, self.planes)

    # ------------------------------------------------------------------------------------------------ search
    def knn(self, query_row, k):
        """(item numbers int64 (k',), distances int64 (k',)) of the k nearest items, k' = min(k, size), by distance
        then item number."""
        if int(k) != k or k < 0:
            raise ValueError(f"MultiIndex.knn: k must be a whole number >= 0, got {k!r}")
        k = min(int(k), self.size)
        query_planes, values = self._query_parts(query_row)
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        m = len(self.lengths)
        best_keys = np.zeros(0, dtype=np.int64)  # distance * size + item: unique, ordered as the ranking
        examined = 0
        for radius in range(max(self.lengths) + 1):
            for table in range(m):
                if examined + self._probe_cost(table, radius) * BUCKET_COST > self.size:
                    return self._knn_by_scan(query_planes, k)
                items = self._probe(table, values[table], radius)
                examined += self._probe_cost(table, radius) * BUCKET_COST + items.size * CANDIDATE_COST
                if items.size:
                    keys = plane_distances(query_planes, self.planes[:, items]) * self.size + items
                    if best_keys.size == k:
                        keys = keys[keys < best_keys[-1]]  # only what would enter the k best
                    best_keys = np.unique(np.concatenate([best_keys, keys]))[:k]
                # every item closer than m * radius + table + 1 has been seen (module docstring)
                if best_keys.size == k and best_keys[-1] // self.size < m * radius + table + 1:
                    return best_keys % self.size, best_keys // self.size
        return self._knn_by_scan(query_planes, k)

    def _knn_by_scan(self, query_planes, k):
        ids, distances = topk_search(query_planes[:, None], self.planes, k)
        return ids[0], distances[0].astype(np.int64)

    def within(self, query_row, radius):
        """(item numbers, distances) of every item within Hamming `radius`, by distance then item number."""
        query_planes, values = self._query_parts(query_row)
        radius = int(radius)
        if radius < 0:
            raise ValueError(f"MultiIndex.within: radius must be >= 0, got {radius}")
        m = len(self.lengths)
        # at least one of the first (radius % m) + 1 substrings lies within radius // m, or another within one less
        whole, rest = divmod(radius, m)
        reach = [whole if table <= rest else whole - 1 for table in range(m)]
        cost = sum(self._probe_cost(t, r) for t in range(m) for r in range(reach[t] + 1))
        if cost * BUCKET_COST > self.size:
            every = self._scan(query_planes)
            items = np.flatnonzero(every <= radius)
            distances = every[items]
        else:
            parts = [self._probe(t, values[t], r) for t in range(m) for r in range(reach[t] + 1)]
            items = np.unique(np.concatenate(parts)).astype(np.int64)
            distances = plane_distances(query_planes, self.planes[:, items])
            keep = distances <= radius
            items, distances = items[keep], distances[keep]
        order = np.argsort(distances, kind="stable")  # items ascend, so ties stay in item order
        return items[order].astype(np.int64), distances[order]
