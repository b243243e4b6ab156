"""What predict.py and serve.py search: a collection of items with codes and a search engine (engines.py) over them.

Two kinds, one interface:
- a dataset's database (database.py; its codes from predict.py's cache): item id = its line in database.txt;
- an index of one's own images (index_store.py): item id = the index's item id, stable across `add` and `compact`.

`database` is the Database-like view build_results reads (paths, labels, class names, labels_of), `knn` / `within`
take ±1 codes and return positions in it, `item_ids[position]` is an item's id.
"""
import os
from pathlib import Path

import numpy as np

from utils.hashing.codes import pack_rows
from utils.retrieval.engines import build_engine
from utils.runtime.console import log_to_stderr

AUTO_MIH_ITEMS = 1_000_000  # --engine auto: multi-index hashing from this many items (docs/retrieval.md#engines)


def choose_engine(name, size):
    if name in (None, "auto"):
        return "mih" if size >= AUTO_MIH_ITEMS else "linear"
    return name


class Collection:
    def __init__(self, database, rows, bits, engine, item_ids, source, root=None):
        self.database, self.bits, self.source, self.root = database, int(bits), source, root
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        # a lookup by id in O(log n) without a dict of millions of entries
        self._by_id = np.argsort(self.item_ids, kind="stable")
        self._sorted_ids = self.item_ids[self._by_id]
        self.rows = rows  # row-packed codes, position by position: an item's own code is a query too
        self.engine_name = choose_engine(engine, len(self.item_ids))
        self.engine = build_engine(self.engine_name, rows, self.bits)

    def __len__(self):
        return len(self.item_ids)

    def position_of(self, item_id):
        """The position of the item with this id, or None."""
        at = int(np.searchsorted(self._sorted_ids, item_id))
        found = at < len(self._sorted_ids) and self._sorted_ids[at] == item_id
        return int(self._by_id[at]) if found else None

    def knn(self, codes, k):
        """(positions (nq, k'), distances) of the k nearest items of ±1 codes (nq, bits), ties in item order."""
        return self.engine.knn(pack_rows(codes), k)

    def within(self, codes, radius):
        return self.engine.within(pack_rows(codes), radius)

    def code(self, position):
        """The ±1 code (bits,) float32 of the item at `position`."""
        bits = np.unpackbits(self.rows[position], bitorder="little")[:self.bits]
        return bits.astype(np.float32) * 2 - 1

    def path(self, position):
        return Path(self.database.image_path(position))


def dataset_collection(database, codes, engine="auto"):
    """The dataset's database (database.Database) with its ±1 codes (n, bits)."""
    codes = np.asarray(codes)
    return Collection(database, pack_rows(codes), codes.shape[1], engine, np.arange(len(database)),
                      source=f"database list {database.list_path}", root=database.root)


class IndexedItems:
    """An index's items as build_results reads a Database: absolute paths, 0/1 label rows (zeros where an item has
    none), no class names."""

    def __init__(self, paths, labels, folder):
        self.paths = [str(p) for p in paths]
        width = max((len(row) for row in labels if row is not None), default=0)
        self.labels = np.zeros((len(paths), width), dtype=np.uint8)
        for position, row in enumerate(labels):
            if row is not None:
                self.labels[position, :len(row)] = row
        self.num_classes, self.class_names = width, None
        self.root, self.list_path, self.lists = Path("/"), str(folder), {}
        self._labelled = {path: self.labels[i] for i, (path, row) in enumerate(zip(self.paths, labels))
                          if row is not None}

    def __len__(self):
        return len(self.paths)

    def image_path(self, position):
        return Path(self.paths[position])

    def labels_of(self, path):
        return self._labelled.get(os.path.realpath(path))

    def listed_paths(self):
        return list(self.paths)


def index_collection(store, engine="auto"):
    """An opened index (index_store.IndexStore): its live items and their codes."""
    ids, paths, labels, slots = store.items()
    log_to_stderr(f"index {store.folder}: {len(ids):,} items, {store.bits}-bit codes")
    return Collection(IndexedItems(paths, labels, store.folder), store.code_rows(slots), store.bits, engine, ids,
                      source=f"index {store.folder}")
