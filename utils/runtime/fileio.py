"""Atomic file writes (temp file in the same folder, then rename: a crash never leaves a half-written file) and
file fingerprints (what a cache records about the files that made it).

No Paddle import here, so light tools (plots, reports) can use it too.
"""
import hashlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write_fn):
    """Call write_fn(tmp_path) on a temp file next to `path`, then rename it onto `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file owner-only; give it a normal file's permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_bytes(path, data):
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


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
