"""scripts/index_images.py with a SIGKILL at a chosen point of the index's writes, for tests/test_index.py.

    python tests/index_kill_worker.py POINT:N build --index DIR ...   (any index_images.py command line)

POINT (N counts from 1 within this process):
- before-commit: as the N-th SQLite COMMIT is executed (the transaction's statements ran, the commit did not);
- after-commit: right after the N-th COMMIT returned;
- fsync: right after the N-th fsync of a codes file (codes-*.u8) returned;
- after-append: right after the N-th IndexStore.append returned;
- torn-append: in the N-th IndexStore.append, after part of a code row was written (a write cut short).
Each kill is SIGKILL to this process, so no Python cleanup runs: the state on disk is what a crash leaves.
"""
import os
import signal
import sqlite3
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import utils.runtime.before_paddle  # noqa: E402, F401  (first: see that module)

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402

from utils.retrieval.index_store import IndexStore  # noqa: E402

POINTS = ("before-commit", "after-commit", "fsync", "after-append", "torn-append")
counts = dict.fromkeys(POINTS, 0)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point, wanted):
    counts[point] += 1
    return counts[point] == wanted


def install(point, n):
    if point in ("before-commit", "after-commit"):
        class KillingConnection(sqlite3.Connection):
            def execute(self, sql, *args):
                commit = sql.strip().upper() == "COMMIT"
                if commit and point == "before-commit" and reached(point, n):
                    die()
                result = super().execute(sql, *args)
                if commit and point == "after-commit" and reached(point, n):
                    die()
                return result

        connect = sqlite3.connect
        sqlite3.connect = lambda *args, **kwargs: connect(*args, factory=KillingConnection, **kwargs)
    elif point == "fsync":
        fsync = os.fsync

        def killing_fsync(fd):
            fsync(fd)
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".u8") and reached(point, n):
                die()
        os.fsync = killing_fsync
    elif point in ("after-append", "torn-append"):
        append = IndexStore.append

        def killing_append(self, records, rows):
            if point == "torn-append" and reached(point, n):
                with open(self.codes_path(), "ab") as f:
                    f.write(np.ascontiguousarray(rows, dtype=np.uint8).tobytes()[:self.row_bytes * 3 // 2])  # 1.5 rows
                    f.flush()
                    os.fsync(f.fileno())
                die()
            append(self, records, rows)
            if point == "after-append" and reached(point, n):
                die()
        IndexStore.append = killing_append
    else:
        raise SystemExit(f"unknown kill point {point!r}; one of {', '.join(POINTS)}")


if __name__ == "__main__":
    where, count = sys.argv[1].split(":")
    install(where, int(count))
    spec = importlib.util.spec_from_file_location("index_images", REPO / "scripts" / "index_images.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sys.exit(tool.main(sys.argv[2:]))
