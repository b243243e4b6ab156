"""SIGTERM (how job schedulers preempt) ends a training run promptly, between two Python statements, never in the
middle of writing the epoch's checkpoint, so the run folder stays resumable with `--resume auto`."""
import signal
import threading
from contextlib import contextmanager


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM; the process exits 143 (128 + SIGTERM), as one killed by it would."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


class SigtermGuard:
    """While installed, SIGTERM calls on_stop(done) (the last epoch whose checkpoint is written) and raises
    Terminated; inside `deferred()` it waits until the block has finished."""

    def __init__(self, on_stop, done=0):
        self.on_stop, self.done = on_stop, done
        self.received, self._deferring, self._previous = False, 0, None

    def install(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _stop(self):
        self.uninstall()
        self.on_stop(self.done)
        raise Terminated()

    def _handler(self, signum, frame):
        self.received = True
        if not self._deferring:
            self._stop()

    @contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if self.received and not self._deferring:
            self._stop()
