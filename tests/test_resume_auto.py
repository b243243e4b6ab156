"""--resume auto: the identical command continues a run after SIGKILL (bit-exact) or SIGTERM (prompt, non-zero, says
from which epoch), and starts fresh when the run folder has no checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from conftest import REPO, run_cli, toy_args
from utils.train.logger import keep_epoch_rows


def command(small_toy, run, epochs):
    return ["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", str(epochs), "--eval_epoch", "1",
                                            "--log_freq", "1", "--resume", "auto")]


def stalled(args, epoch, step):
    """(command, environment): the training command's flags through tests/dist_worker.py (the real entry), which
    stops for minutes once step `step` of epoch `epoch` is logged, so that a signal sent on seeing that line lands
    inside the epoch (a toy epoch on the frozen backbone's features takes milliseconds)."""
    return ["tests/dist_worker.py", *args[1:]], {"STALL_AFTER_STEP": f"{epoch}:{step}", "RECORD_RANKS": "0"}


def start_and_signal(args, log_path, marker, sig, env=None, timeout=600):
    """Start `python args`, send `sig` once the log shows `marker`; returns (returncode, output, seconds to exit)."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    deadline = time.time() + timeout
    try:
        while not (log_path.is_file() and marker in log_path.read_text()):
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{marker!r} never logged; exit {proc.poll()}: {proc.communicate()[0][-3000:]}")
            time.sleep(0.2)
        sent = time.time()
        proc.send_signal(sig)
        output = proc.communicate(timeout=120)[0]
        return proc.returncode, output, time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()


def last_line(output):
    return [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()][-1]


def rows(run):
    return [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(small_toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("auto") / "straight"
    proc = run_cli(command(small_toy, run, 2))
    assert "--resume auto: no" in proc.stdout and "starting from epoch 1" in proc.stdout
    # --encoder auto: 128 + 40 + 200 images of 64 px, enough to repay a predictor (fast_encoder.PREDICTOR_MIN_PIXELS)
    assert json.loads((run / "metrics.json").read_text())["final"]["encoder"] == "inference"
    return run


def test_sigkill_mid_epoch_then_the_same_command_continues_exactly(straight, small_toy, tmp_path):
    run = tmp_path / "killed"
    args, env = stalled(command(small_toy, run, 2), epoch=2, step=2)
    code, _, _ = start_and_signal(args, run / "log_train_64.txt", "Epoch[002/002], Step[0002", signal.SIGKILL, env)
    assert code == -signal.SIGKILL
    after_one = paddle.load(str(run / "last_64.pdckpt"))
    assert after_one["epoch"] == 1
    proc = run_cli(command(small_toy, run, 2))  # the identical command
    assert "after epoch 1" in proc.stdout
    resumed, reference = paddle.load(str(run / "last_64.pdckpt")), paddle.load(str(straight / "last_64.pdckpt"))
    assert not np.array_equal(resumed["model"]["hash_layer.weight"].numpy(),
                              after_one["model"]["hash_layer.weight"].numpy())  # epoch 2 trained
    for key, value in reference["model"].items():
        np.testing.assert_array_equal(resumed["model"][key].numpy(), value.numpy(), err_msg=key)
    np.testing.assert_array_equal(resumed["criterion"]["U"].numpy(), reference["criterion"]["U"].numpy())
    assert [r["epoch"] for r in rows(run)] == [1, 2]
    assert [r["map"] for r in rows(run)] == [r["map"] for r in rows(straight)]


def test_a_finished_run_rerun_does_nothing(straight, small_toy):
    before = (straight / "last_64.pdckpt").read_bytes()
    proc = run_cli(command(small_toy, straight, 2))
    assert "all 2 epochs were already trained; nothing to do" in proc.stdout
    assert (straight / "last_64.pdckpt").read_bytes() == before and len(rows(straight)) == 2


def test_sigterm_exits_promptly_saying_where_a_resume_continues(small_toy, tmp_path):
    run = tmp_path / "terminated"
    args, env = stalled(command(small_toy, run, 2), epoch=2, step=1)
    code, output, seconds = start_and_signal(args, run / "log_train_64.txt", "Epoch[002/002], Step[0001",
                                             signal.SIGTERM, env)
    assert code == 128 + signal.SIGTERM
    assert seconds < 60, seconds
    assert last_line(output).endswith(
        f"stopped by SIGTERM during epoch 2: {run / 'last_64.pdckpt'} holds epoch 1; rerun the same command "
        f"(--resume auto) to continue from epoch 2"), output[-2000:]
    assert [r["epoch"] for r in rows(run)] == [1]
    proc = run_cli(command(small_toy, run, 2))
    assert "resumed from" in proc.stdout and "after epoch 1" in proc.stdout
    assert [r["epoch"] for r in rows(run)] == [1, 2]


def test_rows_of_unfinished_epochs_are_dropped_on_resume(tmp_path):
    path = tmp_path / "epochs.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    keep_epoch_rows(path, 2)
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
