"""A failure is never a hang (issue 9): a bad image met while training or evaluating, in one process or two, with
or without DataLoader workers, and a rank that raises or is SIGKILLed, end the run non-zero, the cause last.

Every run has a subprocess timeout, so a hang fails the test; no test asserts on wall time.
"""
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import REPO, toy_args
from utils.datasets.image_list import BadImageError, ImageList, build_transform
from utils.runtime.failure import broke_in_collective, cause_of

TIMEOUT = 240  # generous for a loaded 2-core machine; a hang (the bug) exceeds it
BAD_NAME = "truncated_line5.jpg"


def write_truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture(scope="module")
def bad_data(small_toy, tmp_path_factory):
    """small_toy's lists with line 5 of train.txt ('train') or of database.txt ('database') naming a truncated
    JPEG; the data root holds the toy images (a symlink) and the bad file."""
    base = tmp_path_factory.mktemp("bad_data")
    root = base / "root"
    root.mkdir()
    (root / "images").symlink_to(small_toy["data_path"] / "images")
    write_truncated_jpeg(root / "broken" / BAD_NAME)
    out = {}
    for split in ("train", "database"):
        list_dir = base / f"bad_{split}"
        list_dir.mkdir()
        for name in ("train", "test", "database"):
            lines = (small_toy["list_dir"] / f"{name}.txt").read_text().splitlines()
            if name == split:
                lines[4] = f"broken/{BAD_NAME} " + lines[4].split(" ", 1)[1]
            (list_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")
        out[split] = {"list_dir": list_dir, "data_path": root}
    return out


def run(args, nproc=1, log_dir=None, env=None):
    """Run `python args` (under paddle.distributed.launch when nproc > 1) as a user at a terminal would see it:
    stdout and stderr in one stream, unbuffered. Returns (exit status, non-empty output lines)."""
    launcher = ["-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir", str(log_dir)]
    cmd = [sys.executable, *(launcher if nproc > 1 else []), *map(str, args)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT)
    return proc.returncode, [line for line in proc.stdout.splitlines() if line.strip()]


def names_bad_image(line, list_name):
    return BAD_NAME in line and f"{list_name}:5" in line and "data/check_data.py" in line


# ------------------------------------------------------------------------------------------- the dataset's error
def test_bad_image_error_names_image_list_line_and_checker(bad_data, tmp_path):
    data = bad_data["train"]
    ds = ImageList(data["data_path"], data["list_dir"] / "train.txt", build_transform(False, 72, 64))
    with pytest.raises(BadImageError) as err:
        ds[4]
    assert names_bad_image(str(err.value), "train.txt") and "undecodable: image file is truncated" in str(err.value)
    assert ds[3][2] == 3  # its neighbours load

    # deleted after the dataset was built (the up-front existence check passed)
    (tmp_path / "images").symlink_to(data["data_path"] / "images")
    (tmp_path / "gone.png").write_bytes((data["data_path"] / "images" / "000806.png").read_bytes())
    lst = tmp_path / "l.txt"
    lst.write_text("images/000806.png 1 0\n\ngone.png 0 1\n")
    ds = ImageList(tmp_path, lst, build_transform(False, 72, 64))
    (tmp_path / "gone.png").unlink()
    with pytest.raises(BadImageError, match=r"gone\.png \(.*l\.txt:3\): missing\. .*data/check_data\.py"):
        ds[1]


def test_cause_is_one_line_also_from_a_dataloader_worker():
    message = "bad image x.jpg (train.txt:5): missing. Check every image with `python data/check_data.py`"
    # how paddle.io re-raises a worker's exception in the main process: same type, the worker's traceback as text
    wrapped = BadImageError(f"DataLoader worker(0) caught BadImageError with message:\nTraceback (most recent call "
                            f"last):\n  File \"x.py\", line 1\nutils.datasets.BadImageError: {message}\n")
    assert cause_of(wrapped) == message
    assert cause_of(ValueError("bad --bit")) == "ValueError: bad --bit"
    several = FileNotFoundError("2 of 9 images listed in t.txt are missing:\n  line 5: a.jpg\nCheck --data-path")
    assert cause_of(several) == f"FileNotFoundError: {several}"  # every line of a message written for the user
    assert cause_of(RuntimeError("DataLoader worker(1) caught KeyError with message:\nTraceback ...\nKeyError: 7")) \
        == "KeyError: 7"


def test_only_collective_errors_count_as_a_lost_peer():
    assert broke_in_collective(RuntimeError("[/paddle/third_party/gloo/gloo/transport/tcp/pair.cc:576] Read error"))
    assert not broke_in_collective(RuntimeError("deliberate failure on rank 1 at step 2"))
    assert not broke_in_collective(BadImageError("bad image x.jpg"))


# ------------------------------------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("workers", [0, 2])
def test_bad_training_image_ends_run_naming_it_last(bad_data, tmp_path, nproc, workers):
    # --standardize_features false: the toy recipe's fc7 pass would meet the image before training does
    args = toy_args(bad_data["train"], tmp_path / "run", "--epoch", "1", "--num_workers", str(workers),
                    "--standardize_features", "false")
    script = "main_multi_gpu.py" if nproc > 1 else "main_single_gpu.py"
    code, lines = run([script, *args], nproc=nproc, log_dir=tmp_path / "launch")
    assert code != 0
    assert any(names_bad_image(line, "train.txt") for line in lines[-3:]), "\n".join(lines[-30:])
    if nproc == 1:
        assert names_bad_image(lines[-1], "train.txt")  # the last line itself
    else:  # the launcher ends with the tail of the failing rank's log and its own 'Exit code' line
        assert "Exit code" in lines[-1] and names_bad_image(lines[-2], "train.txt"), "\n".join(lines[-30:])
        assert not any("collective broke" in line for line in lines[-3:])
    assert "Blocking queue is killed" not in "\n".join(lines)


def test_bad_image_met_in_evaluation_keeps_what_was_written(bad_data, tmp_path):
    run_dir = tmp_path / "run"
    args = toy_args(bad_data["database"], run_dir, "--epoch", "2", "--eval_epoch", "2", "--batch-size", "64",
                    "--standardize_features", "false")
    code, lines = run(["main_single_gpu.py", *args])
    assert code != 0
    assert names_bad_image(lines[-1], "database.txt"), "\n".join(lines[-30:])
    # epoch 1 finished before the evaluation of epoch 2 met the image: its row, checkpoint and log are whole
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    state = paddle.load(str(run_dir / "last_64.pdckpt"))
    assert state["epoch"] == 1
    log_lines = (run_dir / "log_train_64.txt").read_text().splitlines()
    assert names_bad_image(log_lines[-1], "database.txt") and "FAILED" in log_lines[-1]
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("mode", ["raise", "sigkill"])
def test_one_rank_dying_ends_the_job_with_its_report_last(small_toy, tmp_path, mode):
    args = toy_args(small_toy, tmp_path / "run", "--epoch", "2", "--batch-size", "16", "--log_freq", "1",
                    "--standardize_features", "false")
    code, lines = run(["tests/failing_worker.py", *args], nproc=2, log_dir=tmp_path / "launch",
                      env={"FAIL_RANK": "1", "FAIL_STEP": "2", "FAIL_MODE": mode, "FAIL_DELAY": "3"})
    text = "\n".join(lines[-40:])
    assert code != 0
    # the launcher reports the rank that died, not the peer whose collective broke because of it (FAIL_DELAY: rank 0
    # already waits in the step's collective when rank 1 dies, so its collective breaks at once)
    report = lines[max(i for i, line in enumerate(lines) if "Container failed" in line) + 1]
    assert report.startswith("Container rank 1 status failed"), text
    assert ("code -9" if mode == "sigkill" else "code 1") in report
    if mode == "raise":
        assert "deliberate failure on rank 1 at step 2" in lines[-2] and "Exit code 1" in lines[-1], text
    assert not any("collective broke" in line for line in lines[-3:]), text


def test_a_workers_error_reraised_over_paddles_queue_error_is_printed_without_it(tmp_path):
    """Paddle's loader may re-raise a worker's error while handling its own "Blocking queue is killed" error (a race
    seen once in CI); the report shows the worker's error alone and names it last."""
    script = tmp_path / "reraise.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from utils.runtime.failure import QUEUE_KILLED, run_or_end_process\n"
        "def fail():\n"
        "    try:\n"
        "        raise RuntimeError('(Fatal) ' + QUEUE_KILLED)\n"
        "    except RuntimeError:\n"
        "        raise ValueError('bad image x.jpg (train.txt:5)')\n"
        "run_or_end_process(fail)\n" % str(REPO))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Blocking queue" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].endswith("bad image x.jpg (train.txt:5)")


# ---------------------------------------------------------------------------------------------- exit status, errors
def end_process_status(tmp_path, raised):
    """The exit status and stderr of a process whose top level (run_or_end_process) raises `raised`."""
    script = tmp_path / "ends.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from utils.runtime.errors import UsageError\n"
        "from utils.runtime.failure import run_or_end_process\n"
        "def fail():\n"
        "    raise %s\n"
        "run_or_end_process(fail)\n" % (str(REPO), raised))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def test_a_user_error_ends_every_command_with_status_2_and_a_bug_with_1(tmp_path):
    """One exit status for a user error (utils/runtime/failure.py): the training top level, run_cli, the python -m
    modules and data/ scripts agree with argparse's 2 for a flag it cannot parse; a bug ends with Python's 1."""
    from utils.runtime.failure import FAILURE_EXIT, USER_ERROR_EXIT
    assert (USER_ERROR_EXIT, FAILURE_EXIT) == (2, 1)
    status, err = end_process_status(tmp_path, "UsageError('--epochs must be >= 1, got 0')")
    assert status == 2 and err.strip() == "error: --epochs must be >= 1, got 0"
    status, err = end_process_status(tmp_path, "KeyError('internal')")
    assert status == 1 and "Traceback" in err

    def run(*argv):
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)

    sizes = ["--root", str(tmp_path / "toy"), "--num-images", "3", "--num-test", "2", "--num-train", "2"]
    for proc in (run("-m", "utils.datasets.toy", *sizes),  # a flag value found wrong after parsing
                 run("-m", "utils.datasets.toy", "--num-images", "many"),  # argparse's own usage error
                 run(str(REPO / "data" / "make_coco_lists.py"), "--train-ann", str(tmp_path / "none.json"),
                     "--val-ann", str(tmp_path / "none.json"), "--out-dir", str(tmp_path / "out")),
                 run(str(REPO / "data" / "check_data.py"), "--data-path", str(tmp_path), "--lists",
                     str(tmp_path / "none.txt")),
                 run(str(REPO / "scripts" / "report.py"), "--runs", str(tmp_path / "none"))):
        assert proc.returncode == 2, (proc.args, proc.returncode, proc.stderr[-2000:])
        assert "error: " in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_the_user_error_type_is_defined_once_and_the_search_pages_is_one():
    """utils/runtime/errors.UserError is the only class of that name; every other user error type derives from it,
    so is_user_error (one `error:` line, exit status 2) knows them all."""
    import ast
    defined = {}
    for path in REPO.rglob("*.py"):
        if path.relative_to(REPO).parts[0] in ("tmp", "output") or "/." in path.as_posix():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name == "UserError":
                defined.setdefault(node.name, []).append(path.relative_to(REPO).as_posix())
    assert defined == {"UserError": ["utils/runtime/errors.py"]}
    page = (REPO / "utils" / "retrieval" / "search_service.py").read_text(encoding="utf-8")
    assert "class PageError(UserError):" in page and "from utils.runtime.errors import UserError" in page


def test_messages_for_the_user_go_through_one_stderr_helper(capsys):
    """utils/runtime/console.log_to_stderr is the one helper: the data caches, the database-code cache, the contact
    sheet and the run-folder read-back print nothing to stderr of their own (tqdm's bars aside)."""
    import inspect

    from utils.config import run_folder
    from utils.datasets import cache as datacache
    from utils.retrieval import contact_sheet
    from utils.retrieval import search as retrieval
    from utils.runtime.console import log_to_stderr
    for module in (datacache, retrieval, run_folder, contact_sheet):
        assert not re.search(r"print\((?:[^()]|\([^()]*\))*file=sys\.stderr", inspect.getsource(module)), module
        assert module.log_to_stderr is log_to_stderr, module.__name__
    log_to_stderr("a note")
    assert capsys.readouterr() == ("", "a note\n")
