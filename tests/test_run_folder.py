"""One owner per run folder (utils/train/run_lock.py) and one line for a write the file system refuses
(utils/runtime/fileio.atomic_write, utils/runtime/errors.describe_os_error): a second process on a folder is refused
naming the first, a rerun over a finished run needs --resume or --overwrite, unnamed runs never share a folder, a full
disk ends in one `error:` line naming the file, the folder and the space, the last good checkpoint kept."""
import errno
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import paddle
import pytest

from conftest import REPO, run_cli, toy_args
from utils.runtime import fileio
from utils.runtime.errors import describe_os_error, is_user_error
from utils.train import run_lock
from utils.train.options import parse_args

TRAIN = ("--eval_epoch", "1", "--bit", "16", "--log_freq", "1")


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def finished(small_toy, tmp_path_factory):
    """A finished 1-epoch run, and a copy of it."""
    base = tmp_path_factory.mktemp("finished")
    run = base / "run"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "1", *TRAIN)])
    shutil.copytree(run, base / "pristine")
    return base / "pristine"


def test_a_second_process_on_a_locked_folder_is_refused_naming_the_first(finished, small_toy, tmp_path):
    run = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from utils.train.run_lock import "
                               "lock_run_folder; lock_run_folder(sys.argv[1]); print('locked', flush=True); "
                               "time.sleep(120)", str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ((), ("--eval", "--pretrained", str(finished / "model_best_16.pdparams"))):
            proc = run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "1", *TRAIN), *extra],
                           check=False)
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert "Traceback" not in proc.stderr
            [line] = error_lines(proc)
            assert f"run folder {run} is in use by PID {holder.pid} on " in line and "-c" in line, line
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its process: the folder can be locked again
    assert run_lock.lock_run_folder(run) == run / run_lock.LOCK_FILE
    assert f"pid={os.getpid()}" in (run / run_lock.LOCK_FILE).read_text()


def test_a_rerun_over_a_finished_run_needs_resume_or_overwrite(finished, small_toy, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    best = (run / "model_best_16.pdparams").read_bytes()
    proc = run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "1", *TRAIN)], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert f"run folder {run} already holds a run (" in line and "epochs.jsonl" in line
    assert "--resume auto" in line and "--overwrite" in line
    assert (run / "model_best_16.pdparams").read_bytes() == best  # nothing touched
    assert len((run / "epochs.jsonl").read_text().splitlines()) == 1

    # --resume continues the same run, keeping its best when no epoch beats it
    proc = run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "2", *TRAIN), "--resume", "auto"])
    assert "after epoch 1" in proc.stdout
    assert [paddle.load(str(run / "last_16.pdckpt"))["epoch"]] == [2]
    assert len((run / "epochs.jsonl").read_text().splitlines()) == 2

    # --overwrite moves the earlier run aside whole and starts again
    resumed_best = (run / "model_best_16.pdparams").read_bytes()
    proc = run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "1", *TRAIN), "--overwrite"])
    [aside] = [p for p in run.parent.iterdir() if p.name.startswith("run.old-")]
    assert f"--overwrite: the earlier run in {run} (" in proc.stdout and str(aside) in proc.stdout
    assert (aside / "model_best_16.pdparams").read_bytes() == resumed_best
    assert len((aside / "epochs.jsonl").read_text().splitlines()) == 2
    assert len((run / "epochs.jsonl").read_text().splitlines()) == 1
    assert not (aside / run_lock.LOCK_FILE).exists()


def test_unnamed_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20261206-120000")
    argv = ["--dataset", "toy", "--output-dir", str(tmp_path), "--device", "cpu"]
    first, second = parse_args(argv), parse_args(argv)
    assert first.run_dir == second.run_dir and first.run_name_is_default
    for cfg in (first, second):
        assert run_lock.claim_run_folder(cfg, training=True) is None
    assert first.run_dir == str(tmp_path / "toy_64bits_train_20261206-120000")
    assert second.run_dir == str(tmp_path / "toy_64bits_train_20261206-120000-2")
    assert second.run_name == "toy_64bits_train_20261206-120000-2"
    # a named run is the user's choice: the same folder, not a suffixed one
    named = parse_args([*argv, "--run-name", "mine"])
    assert not named.run_name_is_default


def test_a_write_failing_with_enospc_names_the_file_the_folder_and_the_space(tmp_path):
    target = tmp_path / "last_16.pdckpt"
    target.write_bytes(b"x" * 5000)  # the last good checkpoint

    def full_disk(tmp):
        with open(tmp, "wb") as f:
            f.write(b"y" * 3000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as caught:
        fileio.atomic_write(target, full_disk)
    assert target.read_bytes() == b"x" * 5000  # kept
    assert [p.name for p in tmp_path.iterdir()] == ["last_16.pdckpt"]  # no temp file left
    err = caught.value
    assert is_user_error(err) and err.filename == str(target) and err.needed_bytes == 5000
    line = describe_os_error(err)
    free = fileio.shutil.disk_usage(tmp_path).free
    assert line.startswith(f"no space left on the device to write {target}: {tmp_path} has ")
    assert "free, it needs at least 4.9 KB" in line and "--resume auto" in line
    assert f"{free / 1024 ** 3:.1f} GB free" in line or f"{free / 1024 ** 2:.1f} MB free" in line

    # a large write is refused before it starts when the folder has not the room
    with pytest.raises(OSError) as caught:
        fileio.atomic_write(tmp_path / "big", lambda tmp: None, size=free * 2)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "big")
    assert not (tmp_path / "big").exists()


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied on"), (errno.EROFS, "read-only file")])
def test_an_unwritable_folder_is_one_line_naming_the_file(tmp_path, code, words):
    err = OSError(code, os.strerror(code), str(tmp_path / "model_best_16.pdparams"))
    assert is_user_error(err)
    line = describe_os_error(err)
    assert words in line and str(tmp_path / "model_best_16.pdparams") in line and "--output-dir" in line


def test_a_full_disk_during_training_is_one_line_and_the_last_checkpoint_stays(finished, small_toy, tmp_path):
    """The real entry with paddle.save failing with ENOSPC for the checkpoint of epoch 2: exit 2, one error line
    naming last_16.pdckpt, no traceback, and the checkpoint of epoch 1 intact for --resume auto."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = (run / "last_16.pdckpt").read_bytes()
    script = ("import utils.runtime.before_paddle, errno, os, sys, paddle\n"
              "save = paddle.save\n"
              "def full(obj, path, *a, **k):\n"
              "    if '.last_16.pdckpt.' in os.path.basename(str(path)):\n"
              "        open(path, 'wb').write(b'z' * 1000)\n"
              "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
              "    return save(obj, path, *a, **k)\n"
              "paddle.save = full\n"
              "sys.argv = ['main_single_gpu.py', *sys.argv[1:]]\n"
              "import runpy; runpy.run_path('main_single_gpu.py', run_name='__main__')\n")
    proc = run_cli(["-c", script, *toy_args(small_toy, run, "--epoch", "2", *TRAIN), "--resume", "auto"],
                   check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    [line] = error_lines(proc)
    assert line.startswith(f"error: no space left on the device to write {run / 'last_16.pdckpt'}: {run} has ")
    assert "it needs at least" in line
    assert (run / "last_16.pdckpt").read_bytes() == before
    assert paddle.load(str(run / "last_16.pdckpt"))["epoch"] == 1


def test_overwrite_and_resume_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--overwrite"):
        parse_args(["--dataset", "toy", "--output-dir", str(tmp_path), "--resume", "auto", "--overwrite"])


def test_a_folder_without_a_run_is_trained_into(tmp_path):
    cfg = SimpleNamespace(run_dir=str(tmp_path / "r"), run_name="r", resume=None, overwrite=False)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")  # a run refused before its first epoch left only this
    assert run_lock.claim_run_folder(cfg, training=True) is None
