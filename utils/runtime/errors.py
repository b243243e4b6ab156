"""The errors a user can fix, told apart from the program's own failures.

A user error (a flag, a path, a missing or malformed file) is reported as one `error: ...` line that says what is
wrong and what to do, with no traceback (utils/runtime/failure.py); anything else is a bug and keeps its traceback. Each
class is also the built-in type the same mistake has always raised, so `except ValueError` still catches it.
No imports from this project or from Paddle: every module can raise these.
"""
import errno
import os
import shutil


class UserError(Exception):
    """A mistake the user can fix; the message names the flag, file or line and what to do."""


class UsageError(UserError, ValueError):
    """A flag value, a file's content or a combination of flags that cannot work."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the command needs is not there (a checkpoint, a list, an image, weights)."""


class MissingPackageError(UserError, ImportError):
    """An optional package the command needs is not installed (torch to read a .pth, Flask for the search page)."""


class SetupError(UserError, RuntimeError):
    """What this machine or installation stands in the way of (a GPU build, a free port, disk space, a folder that
    is not the command's to replace)."""


class BadImageError(RuntimeError):
    """A listed image that is gone or does not decode, met while loading: names the image, its list file and line.

    One line, no traceback needed: utils.runtime.failure prints it as the run's last line (a DataLoader worker's error
    reaches the main process as this type with the worker's traceback around the message).
    """


# The OSErrors of a file system that stands in the way (full, not writable): the machine's state, not a bug, told in
# one line naming the file (utils/runtime/fileio.atomic_write names it) and what to do.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def is_file_system_error(exc):
    return isinstance(exc, OSError) and exc.errno in NO_SPACE + NOT_WRITABLE


def _size(num_bytes):
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024


def _existing(folder):
    """`folder`, or its nearest ancestor that exists (a temporary folder is gone by the time its error is told)."""
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def describe_os_error(exc):
    """A file system error as one line: the file, and for a full disk its folder, the space needed and free."""
    name = exc.filename or "a file (not named by the system)"
    folder = os.path.dirname(os.path.abspath(exc.filename)) if exc.filename else None
    if exc.errno in NO_SPACE:
        try:
            free = f"{_size(shutil.disk_usage(_existing(folder)).free)} free" if folder else "free space unknown"
        except OSError:
            free = "free space unknown"
        needed = getattr(exc, "needed_bytes", 0)
        needs = f"it needs at least {_size(needed)}" if needed else "its size is not known beforehand"
        # `advice`: set by the writer of a file no flag places (fast_encoder's temporary folder)
        advice = getattr(exc, "advice", None) or (
            "free space there or write elsewhere (--output-dir / --cache-dir), then run the command again (a training "
            "run continues from its last checkpoint with --resume auto)")
        return f"no space left on the device to write {name}: {folder} has {free}, {needs}; {advice}"
    if exc.errno == errno.EROFS:
        return f"{name}: {folder} is on a read-only file system; write elsewhere (--output-dir / --cache-dir)"
    return (f"permission denied on {name} ({exc.strerror}): make {folder} writable for this user, or write "
            f"elsewhere (--output-dir / --cache-dir)")


def user_message(exc):
    """The one line a user error is told in (without the `error: ` prefix)."""
    return describe_os_error(exc) if is_file_system_error(exc) else str(exc)


def is_user_error(exc):
    """True when `exc` is reported as one line: a UserError, a BadImageError (the data, not the program), a
    missing file (a path the user gave or has still to create) or a full or unwritable file system."""
    return isinstance(exc, (UserError, BadImageError, FileNotFoundError)) or is_file_system_error(exc)
