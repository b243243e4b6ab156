"""One owner per run folder: a training or `--eval` process locks its run folder before writing anything in it.

The lock is fcntl.flock on `<run folder>/run.lock`: the OS drops it when the process ends, however it ends (a kill,
a crash, a power cut leaves no stale lock). The file also says who holds it (PID, host, start time, command), so a
second process is refused naming the first. Rank 0 takes it for the whole run (the other ranks write nothing there).

A folder that already holds a run (a checkpoint, a best model or epoch rows) is continued only with --resume; with
--overwrite the old run is moved aside to `<folder>.old-<time>`, never deleted. A run without --run-name gets a
folder no other run has (utils/train/options.py marks its name as a default; a taken one gets a `-2`, `-3` ... suffix,
created with mkdir, which only one process can win).
"""
import fcntl
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from utils.runtime.errors import SetupError, UsageError

LOCK_FILE = "run.lock"
RUN_FILES = ("last_*.pdckpt", "model_best_*", "epochs.jsonl")  # what makes a folder hold a (finished or stopped) run
_held = []  # the open lock files: the lock lives as long as its descriptor, i.e. the process


def claim_fresh_folder(run_dir):
    """Create `run_dir`, or when it exists `run_dir-2`, `run_dir-3`, ...: mkdir fails for all but one process, so two
    runs started in the same second never share a folder. Returns the folder created."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = run_dir if n == 1 else run_dir.with_name(f"{run_dir.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise SetupError(f"{run_dir.parent} already holds 999 folders named {run_dir.name}-N: name the run (--run-name)")


def holder_of(lock_path):
    """What the lock file says about the process holding it, as one phrase."""
    try:
        fields = dict(line.split("=", 1) for line in Path(lock_path).read_text().splitlines() if "=" in line)
    except OSError:
        fields = {}
    if not fields:
        return "another process (it has not written its name yet)"
    return (f"PID {fields.get('pid', '?')} on {fields.get('host', '?')}, started {fields.get('started', '?')}: "
            f"{fields.get('command', '?')}")


def lock_run_folder(run_dir):
    """Lock `run_dir` (created if needed) for this process, or raise SetupError naming the process that holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SetupError(f"run folder {run_dir} is in use by {holder_of(path)}; wait for that run to end (or stop "
                         f"it), or write this one elsewhere (--run-name / --output-dir)") from None
    command = " ".join(shlex.quote(arg) for arg in [os.path.basename(sys.executable), *sys.argv])
    os.ftruncate(fd, 0)
    os.write(fd, (f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  f"command={command}\n").encode())
    _held.append(fd)
    return path


def previous_run_files(run_dir):
    """The files in `run_dir` that show a run was trained there (sorted names), empty when none."""
    return sorted({path.name for pattern in RUN_FILES for path in Path(run_dir).glob(pattern)})


def move_aside(run_dir):
    """Move everything in `run_dir` but its lock into a new sibling `<name>.old-<time>` (a suffix when taken);
    returns that folder. The lock stays, so the folder is never unowned meanwhile."""
    run_dir = Path(run_dir)
    aside = claim_fresh_folder(run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"))
    for entry in sorted(run_dir.iterdir()):
        if entry.name != LOCK_FILE:
            os.replace(entry, aside / entry.name)
    return aside


def claim_run_folder(cfg, training):
    """Rank 0's claim on cfg.run_dir before anything is written there: a fresh folder for a default name, the lock,
    and for training the check that the folder holds no earlier run unless --resume or --overwrite says what to do
    with it. Returns a note for the log (the folder the old run was moved to), or None."""
    if getattr(cfg, "run_name_is_default", False):
        cfg.run_dir = str(claim_fresh_folder(cfg.run_dir))
        cfg.run_name = Path(cfg.run_dir).name
    lock_run_folder(cfg.run_dir)
    if not training or cfg.resume:
        return None
    found = previous_run_files(cfg.run_dir)
    if not found:
        return None
    if getattr(cfg, "overwrite", False):
        aside = move_aside(cfg.run_dir)
        return f"--overwrite: the earlier run in {cfg.run_dir} ({', '.join(found)}) was moved to {aside}"
    raise UsageError(f"run folder {cfg.run_dir} already holds a run ({', '.join(found)}): add --resume auto to "
                     f"continue it, or --overwrite to move it aside to {cfg.run_dir}.old-<time> and start again (or "
                     f"choose another --run-name)")
