"""Search engines over bit-packed codes, behind one interface (docs/retrieval.md#engines).

Every engine is built from codes packed by rows (utils.hashing.codes.pack_rows: (n, ceil(bits / 8)) uint8, bit i of
a code is bit i % 8 of byte i // 8, faiss's layout) and answers

- knn(query_rows, k): (ids int64 (nq, k'), distances int64 (nq, k')), k' = min(k, size), nearest first;
- within(query_rows, radius): one (ids, distances) pair per query, every item at Hamming distance <= radius.

The exact engines (`linear`, `mih`) return the stable Hamming ranking of docs/protocol.md#metric: by distance, ties in
index order; their answers are identical. faiss's binary indexes are an optional extra (requirements-faiss.txt):
`faiss-flat` is exact in its distances, but faiss breaks ties at the k-th distance its own way, so its ids may differ
there; `faiss-hnsw` and `faiss-ivf` are approximate (recall@k against an exact engine: `recall_at_k`).

Which one pays off (measured by benchmarks/bench_index.py, the table in docs/retrieval.md): the linear scan for small
indexes or uniform codes; multi-index hashing (utils/hashing/multi_index.py) for millions of codes shaped like
trained ones, where it is exact and sublinear.
"""
import numpy as np

from utils.hashing.codes import hamming_distances, rows_to_planes, topk_search
from utils.hashing.multi_index import MultiIndex
from utils.runtime.errors import MissingPackageError, UsageError

WITHIN_CHUNK_PAIRS = 1 << 24  # query x item distances held at once by the linear scan's radius search


def _check_rows(rows, bits, what):
    rows = np.asarray(rows)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != -(-bits // 8):
        raise ValueError(f"{what}: expected {bits}-bit codes packed by rows, uint8 of shape (n, {-(-bits // 8)}); "
                         f"got {rows.dtype} {rows.shape}")
    return np.ascontiguousarray(rows)


def _check_k(k):
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def _check_radius(radius):
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be a whole number >= 0, got {radius!r}")
    return int(radius)


def _empty(queries):
    return np.zeros((queries, 0), np.int64), np.zeros((queries, 0), np.int64)


class LinearScan:
    """Exact: the distance to every item (utils.hashing.codes' bit-plane scan). Its cost grows with the index."""

    name, exact = "linear", True

    def __init__(self, rows, bits):
        self.bits = int(bits)
        rows = _check_rows(rows, self.bits, "linear scan")
        self.size = rows.shape[0]
        self.planes = rows_to_planes(rows, self.bits)

    @property
    def nbytes(self):
        return self.planes.nbytes

    def knn(self, query_rows, k):
        query = rows_to_planes(_check_rows(query_rows, self.bits, "query"), self.bits)
        k = _check_k(k)
        if self.size == 0:
            return _empty(query.shape[1])
        ids, distances = topk_search(query, self.planes, k)
        return ids, distances.astype(np.int64)

    def within(self, query_rows, radius):
        query = rows_to_planes(_check_rows(query_rows, self.bits, "query"), self.bits)
        radius = _check_radius(radius)
        results = []
        step = max(1, WITHIN_CHUNK_PAIRS // max(1, self.size))
        for lo in range(0, query.shape[1], step):
            distances = hamming_distances(query[:, lo:lo + step], self.planes)
            for row in distances:
                ids = np.flatnonzero(row <= radius)
                found = row[ids].astype(np.int64)
                order = np.argsort(found, kind="stable")
                results.append((ids[order], found[order]))
        return results


class MultiIndexSearch:
    """Exact: multi-index hashing (utils/hashing/multi_index.py); sublinear on clustered codes, falls back to the
    scan per query when probing would cost more."""

    name, exact = "mih", True

    def __init__(self, rows, bits, substrings=None):
        self.bits = int(bits)
        self.index = MultiIndex(_check_rows(rows, self.bits, "multi-index"), self.bits, substrings)
        self.size = self.index.size

    @property
    def nbytes(self):
        return self.index.nbytes

    def knn(self, query_rows, k):
        query = _check_rows(query_rows, self.bits, "query")
        k = min(_check_k(k), self.size)
        ids, distances = np.empty((len(query), k), np.int64), np.empty((len(query), k), np.int64)
        for row, code in enumerate(query):
            ids[row], distances[row] = self.index.knn(code, k)
        return ids, distances

    def within(self, query_rows, radius):
        query, radius = _check_rows(query_rows, self.bits, "query"), _check_radius(radius)
        return [self.index.within(code, radius) for code in query]


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingPackageError("the faiss engines need faiss-cpu: pip install -r requirements-faiss.txt") from None
    return faiss


IVF_CODES_PER_LIST = 39  # faiss's k-means: fewer training points a centroid than this and it warns


class FaissSearch:
    """faiss's binary indexes (optional extra). kind: 'flat' (IndexBinaryFlat, exact distances), 'hnsw'
    (IndexBinaryHNSW, M links a node, ef_search candidates) or 'ivf' (IndexBinaryIVF, nlist lists trained on up to
    train_size codes, nprobe lists visited). Values are faiss's documented defaults or common choices, said in
    docs/retrieval.md#engines; the approximate ones are measured for recall, never assumed."""

    def __init__(self, rows, bits, kind="flat", hnsw_m=16, ef_search=64, nlist=None, nprobe=16, train_size=100_000,
                 seed=0):
        faiss = _faiss()
        if bits % 8:
            raise UsageError(f"faiss's binary indexes take whole bytes: {bits} bits is not a multiple of 8")
        self.bits, self.kind = int(bits), kind
        self.name, self.exact = f"faiss-{kind}", False
        rows = _check_rows(rows, self.bits, f"faiss-{kind}")
        self.size = rows.shape[0]
        if kind == "flat":
            index = faiss.IndexBinaryFlat(self.bits)
        elif kind == "hnsw":
            index = faiss.IndexBinaryHNSW(self.bits, hnsw_m)
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            sample = rows
            if self.size > train_size:
                sample = rows[np.random.default_rng(seed).choice(self.size, train_size, replace=False)]
            # faiss's rule of thumb, 4 sqrt(n) lists, but at least IVF_CODES_PER_LIST training codes a list (faiss
            # warns below 39 and its centroids are poorly placed)
            nlist = nlist or max(1, min(int(4 * np.sqrt(self.size)), len(sample) // IVF_CODES_PER_LIST))
            quantizer = faiss.IndexBinaryFlat(self.bits)
            index = faiss.IndexBinaryIVF(quantizer, self.bits, nlist)
            index.train(sample)
            index.nprobe = nprobe
            self._quantizer = quantizer  # faiss holds a pointer only: keep the quantizer alive with the index
        else:
            raise UsageError(f"faiss engine kind must be flat, hnsw or ivf, got {kind!r}")
        index.add(rows)
        self.index = index

    @property
    def nbytes(self):
        return self.size * (self.bits // 8)  # the stored codes; graph and lists come on top (measured by the bench)

    def knn(self, query_rows, k):
        query = _check_rows(query_rows, self.bits, "query")
        k = min(_check_k(k), self.size)
        if k == 0:
            return _empty(len(query))
        distances, ids = self.index.search(query, k)
        return ids.astype(np.int64), distances.astype(np.int64)

    def within(self, query_rows, radius):
        query, radius = _check_rows(query_rows, self.bits, "query"), _check_radius(radius)
        # faiss's binary range search keeps distances strictly below its radius
        lims, distances, ids = self.index.range_search(query, int(radius) + 1)
        results = []
        for row in range(len(query)):
            found, dist = ids[lims[row]:lims[row + 1]].astype(np.int64), distances[lims[row]:lims[row + 1]]
            order = np.lexsort((found, dist))
            results.append((found[order], dist[order].astype(np.int64)))
        return results


ENGINES = {
    "linear": LinearScan,
    "mih": MultiIndexSearch,
    "faiss-flat": lambda rows, bits, **kw: FaissSearch(rows, bits, "flat", **kw),
    "faiss-hnsw": lambda rows, bits, **kw: FaissSearch(rows, bits, "hnsw", **kw),
    "faiss-ivf": lambda rows, bits, **kw: FaissSearch(rows, bits, "ivf", **kw),
}


def build_engine(name, rows, bits, **options):
    """The engine `name` (ENGINES) over row-packed codes."""
    if name not in ENGINES:
        raise UsageError(f"unknown search engine {name!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[name](rows, bits, **options)


def recall_at_k(found_ids, found_distances, exact_distances):
    """Share of the exact k nearest neighbours an approximate engine found, from the true distances of what it
    returned (faiss's binary indexes compute them exactly for their candidates): an item closer than the exact k-th
    distance is a hit; items at the k-th distance fill the places the exact answer gives that distance, whichever of
    the tied items they are (ties have no true order)."""
    hits = total = 0
    for ids, found, exact in zip(found_ids, found_distances, exact_distances):
        exact = np.asarray(exact)
        if exact.size == 0:
            continue
        found = np.asarray(found)[np.asarray(ids) >= 0]  # faiss pads a short answer with id -1
        last = exact[-1]
        hits += int(np.sum(found < last)) + min(int(np.sum(found == last)), int(np.sum(exact == last)))
        total += exact.size
    return hits / total if total else 1.0
