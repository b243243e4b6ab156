"""Messages for the person running a command, on stderr: stdout carries only the command's output, so that
predict.py's and infer.py's --json lines stay machine-readable. One function, used by every module that talks to
the user outside a training log (the data caches, the database-code cache, the run-folder read-back)."""
import sys


def log_to_stderr(message):
    """Print one message line on stderr, at once (flushed: it must show before a long step starts)."""
    print(message, file=sys.stderr, flush=True)
