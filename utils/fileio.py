"""Atomic file writes (temp file in the same folder, then rename): a crash never leaves a half-written file.

No Paddle import here, so light tools (plots, reports) can use it too.
"""
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
