"""A persistent index of an image collection: bit-packed codes in a flat file, the items in SQLite
(docs/retrieval.md#an-index-of-your-images). No Paddle here: utils/retrieval/indexing.py
encodes (scripts/index_images.py is the command), this module stores.

An index is a folder:
- `index.sqlite` (the standard library's sqlite3, WAL journal): `meta` (format, the model's identity, the number of
  committed code rows) and `items` (path, size, mtime, content sha256, optional labels, the item's row in the codes);
- `codes-<generation>.u8`: the codes, row-packed (utils.hashing.codes.pack_rows), one row per slot, memory-mapped to
  read. `compact` writes a new generation without the rows of removed or replaced items.

What makes a chunk of new items durable is one SQLite transaction: their code rows are appended and fsynced first,
then the transaction records them and the new row count. Killed before the commit, the rows past the recorded count
are not part of the index (readers never look past it, the next writer cuts them off) and the items are not in the
table, so a rerun encodes them again; killed after it, they are there once. A path is UNIQUE in the table, so a rerun
can never hold two rows for one image.

The identity of the model that made the codes (checkpoint sha256, backbone, bits, preprocessing) is recorded at
creation; opening the index for another model is refused, saying which differs.
"""
import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
from utils.runtime.errors import MissingFileError, SetupError, UsageError

FORMAT = 1
DATABASE_NAME = "index.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    labels TEXT,
    slot INTEGER NOT NULL UNIQUE,
    added REAL NOT NULL
);
"""
# the identity's entries compared on open, in the order a difference is told
IDENTITY_KEYS = ("bits", "checkpoint_sha256", "backbone", "preprocess")


def is_index(folder):
    return (Path(folder) / DATABASE_NAME).is_file()


def describe_identity(identity):
    return (f"{identity['bits']}-bit {identity['backbone']} from {identity.get('checkpoint_path')} "
            f"(sha256 {identity['checkpoint_sha256'][:12]})")


def model_identity(args, checkpoint_sha256):
    """What the index records of the model (index_store.IDENTITY_KEYS are compared on open)."""
    return {
        "bits": int(args.bit), "backbone": args.backbone, "checkpoint_sha256": checkpoint_sha256,
        "checkpoint_path": str(Path(args.pretrained).resolve()),
        "preprocess": {"resize_size": int(args.resize_size), "crop_size": int(args.crop_size),
                       "resize_mode": args.resize_mode, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }


def model_argv(index):
    """The model flags of the index (a folder or an IndexStore) as a command line: its recorded checkpoint, width,
    backbone and preprocessing. The checkpoint must still be there."""
    store = index if isinstance(index, IndexStore) else IndexStore(index)
    ident = store.identity
    if not Path(ident["checkpoint_path"]).is_file():
        raise MissingFileError(f"index {store.folder} was built by {ident['checkpoint_path']}, which is gone; pass "
                               f"--pretrained with the same checkpoint (sha256 {ident['checkpoint_sha256'][:12]})")
    return ["--pretrained", ident["checkpoint_path"], "--bit", str(ident["bits"]), "--backbone", ident["backbone"],
            "--resize-size", str(ident["preprocess"]["resize_size"]), "--crop-size",
            str(ident["preprocess"]["crop_size"]), "--resize-mode", ident["preprocess"]["resize_mode"]]


def _write_synced(path, mode, rows, expected_start=None):
    """Write code rows to `path` (mode "ab" to append, "wb" to create) and fsync them: on disk before any transaction
    names them. expected_start: the size the file must have before an append (else a writer skipped writing())."""
    with open(path, mode) as f:
        if expected_start is not None and f.tell() != expected_start:
            raise RuntimeError(f"{path} holds {f.tell()} bytes, expected {expected_start}: append outside "
                               f"IndexStore.writing()")
        f.write(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())
        f.flush()
        os.fsync(f.fileno())


class IndexStore:
    """One index folder. `IndexStore.create(folder, identity)` makes a new one (or opens the same model's);
    `IndexStore(folder)` opens an existing one; `expect` (an identity) refuses another model's index."""

    def __init__(self, folder, expect=None):
        self.folder = Path(folder)
        if not is_index(self.folder):
            raise MissingFileError(f"{self.folder} is not an index (no {DATABASE_NAME}); make one with "
                                   f"`python scripts/index_images.py build --index {self.folder} ...`")
        try:
            self.db = self._connect()
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as err:
            raise UsageError(f"{self.folder / DATABASE_NAME} cannot be read as an index ({err}); if a build was "
                             f"interrupted while creating it, rerun that build") from None
        if "identity" not in meta:
            raise UsageError(f"{self.folder} is an index whose creation was interrupted: rerun the build command")
        if int(meta.get("format", -1)) != FORMAT:
            raise UsageError(f"{self.folder / DATABASE_NAME} has index format {meta.get('format')}, this code reads "
                             f"{FORMAT}; rebuild the index")
        self.identity = json.loads(meta["identity"])
        self.bits = int(self.identity["bits"])
        self.row_bytes = -(-self.bits // 8)
        if expect is not None:
            self.check_identity(expect)

    @classmethod
    def create(cls, folder, identity):
        """A new index for `identity`'s model in `folder`, or the one already there when the same model made it."""
        folder = Path(folder)
        if not is_index(folder) and folder.exists() and any(folder.iterdir()):
            raise SetupError(f"{folder} exists and is not an index: choose an empty or new folder for --index")
        folder.mkdir(parents=True, exist_ok=True)
        # idempotent, in one transaction: a creation killed half-way is finished by the next one
        db = sqlite3.connect(folder / DATABASE_NAME, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [
                ("format", str(FORMAT)), ("identity", json.dumps(identity, sort_keys=True)), ("slots", "0"),
                ("generation", "0"), ("created", time.strftime("%Y-%m-%d %H:%M:%S"))])
            db.execute("COMMIT")
        finally:
            db.close()
        return cls(folder, expect=identity)

    def _connect(self):
        db = sqlite3.connect(self.folder / DATABASE_NAME, isolation_level=None, timeout=60, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut, not only a killed process
        return db

    def close(self):
        self.db.close()

    def check_identity(self, expect):
        for key in IDENTITY_KEYS:
            if self.identity.get(key) != expect.get(key):
                raise UsageError(f"index {self.folder} was built by {describe_identity(self.identity)}, not by "
                                 f"{describe_identity(expect)} ({key}: {self.identity.get(key)} != "
                                 f"{expect.get(key)}); codes of two models cannot be compared: search it with its own "
                                 f"model, or build a new index with this one (another --index)")

    # ------------------------------------------------------------------------------------------------ state
    def _meta(self, key):
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @property
    def slots(self):
        """Committed code rows (live and dead)."""
        return int(self._meta("slots"))

    def codes_path(self, generation=None):
        return self.folder / f"codes-{self._meta('generation') if generation is None else generation}.u8"

    def __len__(self):
        return self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def known(self):
        """{path: (size, mtime_ns, sha256)} of every item: what `add` compares the files with."""
        return {path: (size, mtime, sha) for path, size, mtime, sha in
                self.db.execute("SELECT path, size, mtime_ns, sha256 FROM items")}

    def items(self):
        """(ids, paths, labels (list of lists or None), slots) of the live items, in slot order."""
        rows = self.db.execute("SELECT id, path, labels, slot FROM items ORDER BY slot").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        paths = [r[1] for r in rows]
        labels = [None if r[2] is None else json.loads(r[2]) for r in rows]
        slots = np.array([r[3] for r in rows], dtype=np.int64)
        return ids, paths, labels, slots

    def item(self, item_id):
        row = self.db.execute("SELECT id, path, size, mtime_ns, sha256, labels, slot, added FROM items WHERE id = ?",
                              (int(item_id),)).fetchone()
        if row is None:
            return None
        keys = ("id", "path", "size", "mtime_ns", "sha256", "labels", "slot", "added")
        found = dict(zip(keys, row))
        found["labels"] = None if found["labels"] is None else json.loads(found["labels"])
        return found

    def code_rows(self, slots=None):
        """The committed code rows (slots, row_bytes) uint8, memory-mapped; `slots` selects rows (a copy)."""
        count = self.slots
        if count == 0:
            codes = np.zeros((0, self.row_bytes), dtype=np.uint8)
        else:
            codes = np.memmap(self.codes_path(), dtype=np.uint8, mode="r", shape=(count, self.row_bytes))
        return codes if slots is None else np.asarray(codes[slots])

    # ------------------------------------------------------------------------------------------------ writes
    @contextmanager
    def transaction(self):
        """One SQLite write transaction: committed when the block ends, rolled back when it raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def writing(self):
        """The one writer of this index at a time (a lock file); cuts off rows a killed writer left uncommitted."""
        lock = open(self.folder / "write.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SetupError(f"index {self.folder} is being changed by another command; wait for it to end") from None
        try:
            path = self.codes_path()
            if path.exists() and path.stat().st_size > self.slots * self.row_bytes:
                os.truncate(path, self.slots * self.row_bytes)
            for other in self.folder.glob("codes-*.u8"):
                if other != path:  # a compaction killed before its commit, or the generation it replaced
                    other.unlink()
            yield self
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def append(self, records, rows):
        """Add items (dicts: path, size, mtime_ns, sha256, labels) with their code rows; an item whose path is
        already indexed is replaced (its old row becomes dead). Durable when it returns (module docstring)."""
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        if rows.shape != (len(records), self.row_bytes):
            raise ValueError(f"append: {len(records)} items need code rows of shape {(len(records), self.row_bytes)}, "
                             f"got {rows.shape}")
        start = self.slots
        _write_synced(self.codes_path(), "ab", rows, expected_start=start * self.row_bytes)
        now = time.time()
        with self.transaction():
            self.db.executemany("DELETE FROM items WHERE path = ?", [(r["path"],) for r in records])
            self.db.executemany(
                "INSERT INTO items (path, size, mtime_ns, sha256, labels, slot, added) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r["path"], r["size"], r["mtime_ns"], r["sha256"],
                  None if r.get("labels") is None else json.dumps([int(v) for v in r["labels"]]), start + i, now)
                 for i, r in enumerate(records)])
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'slots'", (str(start + len(records)),))

    def touch(self, records):
        """Record a new size / mtime for items whose content (sha256) did not change: nothing to encode."""
        self.db.executemany("UPDATE items SET size = ?, mtime_ns = ? WHERE path = ?",
                            [(r["size"], r["mtime_ns"], r["path"]) for r in records])

    def remove(self, paths):
        """Remove the items of these paths; returns how many were removed."""
        with self.transaction():
            before = len(self)
            self.db.executemany("DELETE FROM items WHERE path = ?", [(p,) for p in paths])
        return before - len(self)

    def compact(self):
        """Rewrite the codes without dead rows (a new generation, switched in one transaction); returns the rows
        dropped."""
        ids, _, _, slots = self.items()
        dropped = self.slots - len(slots)
        if dropped == 0:
            return 0
        generation = int(self._meta("generation")) + 1
        new_path = self.codes_path(generation)
        _write_synced(new_path, "wb", self.code_rows(slots))
        old_path = self.codes_path()
        try:
            with self.transaction():
                # slots are UNIQUE: move them out of the way first, then number them 0..n-1 in their old order
                self.db.execute("UPDATE items SET slot = -1 - slot")
                self.db.executemany("UPDATE items SET slot = ? WHERE id = ?",
                                    [(new, int(item)) for new, item in enumerate(ids)])
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'slots'", (str(len(slots)),))
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
        except BaseException:
            new_path.unlink(missing_ok=True)
            raise
        old_path.unlink(missing_ok=True)
        return dropped

    # ------------------------------------------------------------------------------------------------ reports
    def info(self):
        live = len(self)
        codes = self.codes_path()
        return {
            "index": str(self.folder), "format": FORMAT, "model": self.identity, "items": live,
            "code_rows": self.slots, "dead_rows": self.slots - live, "bits": self.bits,
            "labelled_items": self.db.execute("SELECT COUNT(*) FROM items WHERE labels IS NOT NULL").fetchone()[0],
            "codes_bytes": codes.stat().st_size if codes.exists() else 0,
            "sqlite_bytes": (self.folder / DATABASE_NAME).stat().st_size,
            "created": self._meta("created"),
            "last_added": self.db.execute("SELECT MAX(added) FROM items").fetchone()[0],
        }

    def check_structure(self):
        """Problems of the stored state itself (codes file length, slots), as messages; [] when sound."""
        problems = []
        codes = self.codes_path()
        needed = self.slots * self.row_bytes
        have = codes.stat().st_size if codes.exists() else 0
        if have < needed:
            problems.append(f"{codes} holds {have} bytes but {self.slots} committed rows need {needed}")
        bad = self.db.execute("SELECT COUNT(*) FROM items WHERE slot < 0 OR slot >= ?", (self.slots,)).fetchone()[0]
        if bad:
            problems.append(f"{bad} items point outside the {self.slots} committed code rows")
        return problems
