"""The errors a user can fix, told apart from the program's own failures.

A user error (a flag, a path, a missing or malformed file) is reported as one `error: ...` line that says what is
wrong and what to do, with no traceback (utils/runtime/failure.py); anything else is a bug and keeps its traceback. Each
class is also the built-in type the same mistake has always raised, so `except ValueError` still catches it.
No imports from this project or from Paddle: every module can raise these.
"""


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


def is_user_error(exc):
    """True when `exc` is reported as one line: a UserError, a BadImageError (the data, not the program) or a
    missing file (a path the user gave or has still to create)."""
    return isinstance(exc, (UserError, BadImageError, FileNotFoundError))
