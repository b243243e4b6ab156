"""Atomic file writes (temp file in the same folder, then rename: a crash never leaves a half-written file), file
fingerprints and the check of a cache's JSON sidecar (what a cache records about the files that made it, and why it
no longer stands for them).

No Paddle import here, so light tools (plots, reports) can use it too.
"""
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_free_space(path, needed_bytes):
    """Refuse, before writing, a file of about `needed_bytes` that the folder of `path` has no room for: raises the
    OSError(ENOSPC) a full disk would, naming the file and the space needed (utils/runtime/errors.describe_os_error
    words it, with the free space, as the run's last line)."""
    folder = Path(path).parent
    if needed_bytes and shutil.disk_usage(folder).free < needed_bytes:
        err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        err.needed_bytes = int(needed_bytes)
        raise err


def atomic_write(path, write_fn, size=None):
    """Call write_fn(tmp_path) on a temp file next to `path`, then rename it onto `path` (atomic on POSIX).

    The free space is checked first against `size` (bytes), or else the size of the file being replaced (the new one
    is written beside it). A write that fails (a full disk, no permission, a read-only file system) leaves `path` as
    it was and raises its OSError naming `path` (and for a full disk the space needed), never the temp file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_free_space(path, size if size is not None else (path.stat().st_size if path.is_file() else 0))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _naming(err, path) from None
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file owner-only; give it a normal file's permissions
        os.replace(tmp, path)
    except OSError as err:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        raise _naming(err, path, max(written, size or 0, path.stat().st_size if path.is_file() else 0)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _naming(err, path, needed_bytes=0):
    """`err` naming `path` (the file meant, not a temp file) and, when larger, the bytes it needed at least."""
    if err.filename is None or Path(str(err.filename)).name.startswith(f".{path.name}."):
        err.filename = str(path)
    if needed_bytes > getattr(err, "needed_bytes", 0):
        err.needed_bytes = int(needed_bytes)
    return err


def atomic_write_bytes(path, data):
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def save_arrays(path, **arrays):
    """np.savez the arrays to `path` (a .npz), atomically."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to the temp file's name
            np.savez(f, **arrays)
    return atomic_write(path, write, size=sum(getattr(a, "nbytes", 0) for a in arrays.values()))


def sha256_of(path, chunk=1 << 22):
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path):
    """{path, size, mtime, sha256} of a file: what the cache sidecar records about a checkpoint."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": sha256_of(path)}


def save_json(obj, path):
    """Write `obj` as indented JSON (keys sorted, anything else as its str), atomically. Every process that calls it
    writes: under several processes, call it on one (utils/train/checkpoint.save_json: rank 0)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    atomic_write(path, write)
    return Path(path)


def read_json_object(path):
    """(the JSON object in the file `path`, None); (None, None) when there is no such file; (None, why it is not a
    JSON object) otherwise. The one reader of the sidecars (caches here, checksums in utils/runtime/integrity.py)."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, str(err)
    if not isinstance(recorded, dict):
        return None, f"a JSON {type(recorded).__name__}, not an object"
    return recorded, None


def sidecar_mismatch(sidecar, wanted, explain=None):
    """Why the JSON file `sidecar` does not vouch for `wanted` (what a cache must have been made from), or None when
    it does; returns (what the sidecar records, or None when it is missing or unreadable; the reason, or None).

    The reason is 'missing', 'unreadable sidecar <path> (<error>)', or one phrase per key of `wanted` whose recorded
    value differs, in `wanted`'s order, joined by ', '. explain(key, recorded value, wanted value) words a
    difference, or returns None when it does not matter (a checkpoint's mtime when its sha256 is the same); by
    default '<key> differs'. The two caches (utils/datasets/cache.py, utils/retrieval/search.py) add their own
    checks of the data files after this one.
    """
    recorded, why = read_json_object(sidecar)
    if recorded is None:
        return None, f"unreadable sidecar {sidecar} ({why})" if why else "missing"
    explain = explain or (lambda key, old, new: f"{key} differs")
    phrases = [explain(key, recorded.get(key), value) for key, value in wanted.items() if recorded.get(key) != value]
    phrases = [phrase for phrase in phrases if phrase]
    return recorded, ", ".join(phrases) or None
