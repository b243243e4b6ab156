"""How a training or evaluation process ends when something fails: the cause as the last line, then at once; and
the exit status every command of the project ends with.

Exit status, the same for every command (main_*.py, predict.py, serve.py, export_model.py, infer.py, data/*.py,
scripts/report.py and every `python -m` module):
- 0: done;
- 2 (USER_ERROR_EXIT): a user error (utils/runtime/errors.py: a flag, a path, a file, a missing package), told in
  one `error: ...` line without a traceback. argparse exits 2 for a flag it cannot parse, so a flag value found
  wrong later ends the same way, and a script can tell "fix the command or the data" from "the program failed";
- 1 (FAILURE_EXIT): anything else, a bug with its traceback (Python's own status for an uncaught exception), or a
  rank whose collective broke because another rank stopped.
data/check_data.py answers 1 when its check finds missing or undecodable images (its finding, each image named,
as grep answers 1 for no match) and 2 when it cannot check (a flag, a list's format).

Why not just let the exception propagate:
- Paddle's DataLoader loads in a thread of this process (num_workers 0), where an exception kills the thread
  and leaves the main thread waiting on the loader's queue forever; with workers, the thread re-raises the
  worker's error and the main thread then ends with Paddle's 'Blocking queue is killed', burying the cause.
- A rank that unwinds normally may wait on its loader's threads or sit in a collective with peers that are gone.
So the first failure (main thread or any other) is logged, the logs are flushed and the process ends with
os._exit: nothing can hang it. Files written so far stay whole: checkpoints and caches are written atomically and
the logger finishes the line it is writing (its lock) before the cause is logged.

Several processes: when one rank fails, its peers' next collective fails at once (gloo: connection reset). The
launcher (paddle.distributed.launch, 2.6 and 3.x alike) polls its children every second, shows the log tail of
the *lowest-ranked* failed one and stops the others. So a rank whose own failure is a broken collective waits
(up to PEER_GRACE seconds) to be stopped, and the launcher reports the rank that failed first, with its cause.
"""
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback

from utils.runtime.errors import BadImageError, UserError, is_file_system_error, is_user_error, user_message

USER_ERROR_EXIT = 2
FAILURE_EXIT = 1
PEER_GRACE = 20  # seconds a rank whose collective broke waits for the launcher to stop it (it polls every 1 s)
QUEUE_KILLED = "Blocking queue is killed"  # Paddle's main-thread error once a loader thread has failed
_dying = threading.Lock()
_thread_failed = threading.Event()


def cause_of(exc):
    """What went wrong, for the last line(s): `Type: message`, a BadImageError's message alone. A DataLoader
    worker's error comes back with the worker's traceback in its message; its last line is the original one."""
    text = str(exc).strip()
    if text.startswith("DataLoader worker("):
        text = text.splitlines()[-1].strip()
        return text.split("BadImageError: ", 1)[-1] if isinstance(exc, BadImageError) else text
    if isinstance(exc, (BadImageError, UserError)):  # written for the user: the message alone
        return text
    if is_file_system_error(exc):  # a full or unwritable disk: the file, the folder, the space, what to do
        return user_message(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def broke_in_collective(exc):
    """True for an error raised by a collective (gloo/NCCL), which is what a rank sees when a peer has died."""
    frames = traceback.extract_tb(exc.__traceback__)
    in_dist = any(f"{os.sep}paddle{os.sep}distributed{os.sep}" in frame.filename for frame in frames)
    text = str(exc).lower()
    return in_dist or "gloo" in text or "nccl" in text


def _rank_and_world():
    try:
        from utils.runtime import dist
        return dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001 -- paddle.distributed not usable yet: report as a single process
        return 0, 1


def exit_status(exc):
    """The status a process ends with after `exc`: USER_ERROR_EXIT for a user error, else FAILURE_EXIT."""
    return USER_ERROR_EXIT if is_user_error(exc) else FAILURE_EXIT


def end_process(exc, where="main thread"):
    """Print the traceback (not for a user error), log the cause as the last line (console and log file), end the
    process now with exit_status(exc) (FAILURE_EXIT for a rank whose collective broke)."""
    if threading.current_thread() is not threading.main_thread():
        _thread_failed.set()
    else:
        # Paddle's SIGCHLD handler would raise here, mid-report, when the loader workers (killed below) exit
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if QUEUE_KILLED in str(exc):
            _thread_failed.wait(timeout=5)  # normally the loader thread's report ends the process meanwhile
    with _dying:  # the first failure reports; any other waits here until os._exit
        for child in multiprocessing.active_children():  # DataLoader workers: left alone they print after the cause
            child.kill()
            child.join(timeout=1)
        rank, world = _rank_and_world()
        secondary = world > 1 and broke_in_collective(exc)
        if QUEUE_KILLED in str(exc.__context__):  # Paddle's loader re-raised a worker's error while handling its
            exc.__suppress_context__ = True     # own "queue killed" one: that one is noise beside the cause
        sys.stdout.flush()
        if is_user_error(exc):  # told in one line, on stderr as well as in the log's last line below
            print(f"error: {cause_of(exc) if isinstance(exc, (BadImageError, UserError)) else user_message(exc)}",
                  file=sys.stderr, flush=True)
        elif not secondary:  # a bug keeps its traceback; a collective broken by a peer's stop is said in one line
            print(f"\nFailed in the {where}" + (f" of rank {rank}" if world > 1 else "") + ":", file=sys.stderr)
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            sys.stderr.flush()
        # the logger prefixes lines of ranks other than 0 with their rank
        label = "FAILED" + (" (rank 0)" if world > 1 and rank == 0 else "")
        message = f"{label}: {cause_of(exc)}"
        if secondary:
            logs = os.environ.get("PADDLE_LOG_DIR")  # set by paddle.distributed.launch for its children
            where_told = f"the launcher's output and workerlog.<rank> in {logs}" if logs else "that rank's output"
            message = (f"{label}: a collective broke ({cause_of(exc)}), most likely because another rank stopped; "
                       f"its error, in {where_told}, is the one that matters")
        logger = logging.getLogger("hashnet")
        if logger.handlers:
            logger.error(message)
            for handler in logger.handlers:
                handler.flush()
        else:
            print(message if rank == 0 else f"[rank {rank}] {message}", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        if secondary:
            if threading.current_thread() is threading.main_thread():
                # stopped by the launcher: exit with our status, not Paddle's SIGTERM report and -15
                signal.signal(signal.SIGTERM, lambda *_: os._exit(FAILURE_EXIT))
            time.sleep(PEER_GRACE)
        os._exit(FAILURE_EXIT if secondary else exit_status(exc))


def abort_without_paddle_report():
    """Let an abort end this process with its own message only. When a peer of a collective stops, gloo can throw its
    TimeoutException inside Paddle's backward hook, through C++ (std::terminate): Python never sees it, libstdc++
    prints the cause in one line ("terminate called after throwing an instance of 'gloo::TimeoutException' ...
    TIMEOUT ... pair_rank = 0"), then Paddle's SIGABRT handler adds a "C++ Traceback" block naming nothing. Python's
    handler in its place returns at once, and abort() then ends the process by the signal's default action."""
    signal.signal(signal.SIGABRT, lambda *_: None)


def _thread_hook(args):
    if args.exc_type is SystemExit:
        return
    end_process(args.exc_value, f"thread {args.thread.name if args.thread else '?'}")


def run_or_end_process(fn, *args, **kwargs):
    """fn(*args, **kwargs) as the top level of a process: any exception in it or in a thread it started ends the
    process (exit_status) with the cause as the last line. KeyboardInterrupt and SystemExit pass through.

    Only for a process's top level: it ends the process, so never call it inside a test runner.
    """
    previous = threading.excepthook
    threading.excepthook = _thread_hook
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- every failure ends the process the same way
        end_process(exc)
    finally:
        threading.excepthook = previous


def run_cli(run, argv=None):
    """Run a command's body and return its exit status: 0, or USER_ERROR_EXIT after a user error
    (utils/runtime/errors.py: a flag, a path, a file), printed as one `error: <what is wrong and what to do>` line on
    stderr with no traceback. A missing file counts as a user error too. Anything else is a bug and propagates with
    its traceback (Python then exits 1).

    A failure in another thread (a bad database image met by the DataLoader's loading thread) ends the process at
    once the same way: left alone, that thread dies and the main thread waits on the loader forever.
    """
    def thread_failed(args):
        if args.exc_type is not SystemExit:
            print(f"error: {cause_of(args.exc_value)}", file=sys.stderr, flush=True)
            os._exit(exit_status(args.exc_value))

    previous, threading.excepthook = threading.excepthook, thread_failed
    try:
        run(argv)
    except Exception as err:  # noqa: BLE001 -- sorted below: a user error is one line, anything else re-raised
        if not is_user_error(err):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr, flush=True)
        return USER_ERROR_EXIT
    finally:
        threading.excepthook = previous
    return 0
