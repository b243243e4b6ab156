"""SIGTERM to `paddle.distributed.launch` (two CPU processes): the launcher's console ends with rank 0's line saying
which checkpoint holds what and how to continue (utils/runtime/dist.echo_to_launcher_console), rank 1's broken
collective is one line without a traceback (utils/runtime/failure.end_process), and the same command resumes."""
import os
import re
import signal
import subprocess
import sys
import time

from conftest import REPO, run_cli, toy_args

STOP = re.compile(r"stopped by SIGTERM during epoch (\d+): (\S+) holds epoch (\d+); rerun the same command "
                  r"\(--resume auto\) to continue from epoch (\d+)")


def launcher(small_toy, run, epochs):
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
            str(run.parent / "logs"), "main_multi_gpu.py",
            *map(str, toy_args(small_toy, run, "--epoch", str(epochs), "--eval_epoch", "1", "--log_freq", "1",
                               "--bit", "16", "--batch-size", "16", "--resume", "auto"))]


def test_sigterm_to_the_launcher_ends_its_console_with_the_checkpoint_and_the_command(small_toy, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(launcher(small_toy, run, 40), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    log, deadline = run / "log_train_16.txt", time.time() + 300
    try:
        while not (log.is_file() and "Epoch[003/040] mAP" in log.read_text()):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # while both ranks train: rank 1 is mostly inside a collective
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    assert proc.returncode == signal.SIGTERM, lines[-5:]
    assert "Terminating with signal 15" in lines[-3] and "Exit with signal 15" in lines[-1], lines[-5:]
    stopped = STOP.fullmatch(lines[-2])
    assert stopped, lines[-5:]
    during, path, held, resume_at = map(str, stopped.groups())
    assert path == str(run / "last_16.pdckpt") and int(held) == int(during) - 1 == int(resume_at) - 1
    assert "Traceback" not in output
    rank1 = (run.parent / "logs" / "workerlog.1").read_text()
    assert "Traceback" not in rank1  # its collective broke when rank 0 stopped: one line, not a traceback
    # the line is right: a rerun continues from that epoch (here to the next one only, to stay short)
    proc = run_cli(launcher(small_toy, run, int(resume_at))[1:])
    assert f"resumed from {run / 'last_16.pdckpt'} after epoch {held}" in (run / "log_train_16.txt").read_text()


ABORT = """import os, sys
import utils.runtime.before_paddle  # noqa: F401
import paddle  # noqa: F401  (installs Paddle's fatal-signal handlers)
if sys.argv[1] == "quiet":
    from utils.runtime.failure import abort_without_paddle_report
    abort_without_paddle_report()
os.abort()  # what std::terminate does when gloo throws through Paddle's backward hook
"""


def test_an_abort_in_a_worker_ends_it_without_paddles_empty_cpp_traceback():
    """main_multi_gpu.py's workers: an abort (a peer's stop breaking a collective inside C++) ends the process by the
    signal, with libstdc++'s one-line cause and without Paddle's "C++ Traceback" block; Paddle alone prints it."""
    found = {}
    for mode in ("paddle", "quiet"):
        proc = subprocess.run([sys.executable, "-c", ABORT, mode], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        found[mode] = (proc.returncode, "C++ Traceback" in proc.stderr + proc.stdout)
    assert found == {"paddle": (-signal.SIGABRT, True), "quiet": (-signal.SIGABRT, False)}
    assert "abort_without_paddle_report()" in (REPO / "main_multi_gpu.py").read_text()
