"""Console + file logging and the machine-readable per-epoch rows of a run."""
import json
import logging
import sys
from pathlib import Path

from utils.runtime.dist import get_rank, is_main_process
from utils.runtime.fileio import atomic_write


class RunLogFile(logging.FileHandler):
    """The run's log file. A disk that fills up (or turns read-only) is said once, in one line on stderr, and the
    log goes on on the console alone: logging's default is a traceback for every line that cannot be written."""
    failed = False

    def handleError(self, record):  # noqa: N802 -- logging's name
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            return super().handleError(record)
        if not self.failed:
            self.failed = True
            print(f"warning: the log file {self.baseFilename} cannot be written ({err.strerror}); the log goes on on "
                  f"the console only", file=sys.stderr, flush=True)


def setup_logger(run_dir=None, log_name="log.txt"):
    """Logger printing to the console; rank 0 also writes `run_dir/log_name`. Other ranks print with a prefix."""
    logger = logging.getLogger("hashnet")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    prefix = "" if is_main_process() else f"[rank {get_rank()}] "
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None and is_main_process():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        file_handler = RunLogFile(Path(run_dir) / log_name, encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def append_jsonl(path, row):
    """One JSON object per line (per epoch): easy to load with pandas.read_json(lines=True). Rank 0 only."""
    if not is_main_process():
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    except OSError as err:  # a full disk: name the file (utils/runtime/errors.describe_os_error words it)
        err.filename = err.filename or str(path)
        raise


def rows_total(path, key):
    """The sum of `key` over the rows of an epochs.jsonl (0 without the file; a row cut short by a kill is skipped):
    a run's training time over every process that trained it, resumes included."""
    path, total = Path(path), 0.0
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else ():
        try:
            total += float(json.loads(line).get(key, 0.0))
        except (json.JSONDecodeError, TypeError, ValueError):
            continue
    return total


def keep_epoch_rows(path, last_epoch):
    """Drop the rows of epochs after `last_epoch` (a resumed run trains them again). Rank 0 only, atomic."""
    path = Path(path)
    if not is_main_process() or not path.is_file():
        return
    def finished(line):
        try:
            return json.loads(line).get("epoch", 0) <= last_epoch
        except json.JSONDecodeError:  # a row cut short by a kill
            return False

    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and finished(line)]
    if len(kept) != len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(f"{line}\n" for line in kept), encoding="utf-8"))


class AverageMeter:
    """Running mean of a scalar, e.g. the loss over an epoch."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, value, n=1):
        self.total += float(value) * n
        self.count += n

    @property
    def avg(self):
        return self.total / max(self.count, 1)
