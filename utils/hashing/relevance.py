"""What every retrieval metric here shares (docs/protocol.md#metric): the checks of codes and labels, which database
items are relevant to a query (they share a label), the AP of a ranked relevance row, and the loop that runs the
queries in chunks, in threads (numpy releases the GIL in the heavy parts).

Two ways to tell relevance: mAP@K looks labels (packed with ``pack_labels``) up only for the top-K candidates
(``_relevance``); the metrics that need every database item's relevance OR per-class item bitmaps instead
(``_relevance_all``, byte-sized work).
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from utils.hashing.codes import _CHUNK_PAIRS, _MAX_CHUNK_ROWS, _check_codes, _check_topk, _to_numpy

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


