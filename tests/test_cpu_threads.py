"""Paddle's CPU kernels take their thread count from OMP_NUM_THREADS when Paddle loads (one thread when unset):
utils/before_paddle.py sets it to the process's share of its CPUs unless the user set it."""
import os
import subprocess
import sys

from conftest import REPO
from utils import before_paddle

PRINT_THREADS = "import utils.before_paddle, os; print(os.environ['OMP_NUM_THREADS'])"


def threads_in_a_new_process(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PADDLE_LOCAL_SIZE")}
    out = subprocess.run([sys.executable, "-c", PRINT_THREADS], cwd=REPO, env={**base, **env}, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


def test_share_of_the_cpus_divides_the_affinity_mask_among_the_launchers_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    assert before_paddle.cpu_threads_share() == 8
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")
    assert before_paddle.cpu_threads_share() == 4
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "16")
    assert before_paddle.cpu_threads_share() == 1


def test_an_unset_omp_num_threads_becomes_the_share_and_a_set_one_is_kept():
    cpus = len(os.sched_getaffinity(0))
    assert threads_in_a_new_process() == cpus
    assert threads_in_a_new_process(PADDLE_LOCAL_SIZE=str(cpus)) == 1
    assert threads_in_a_new_process(OMP_NUM_THREADS="3") == 3
