"""utils/runtime/dist.cpu_threads / use_cpu_threads: Paddle's CPU kernels run on this process's share of the CPUs,
unless the user set OMP_NUM_THREADS (told apart from the 1 Paddle's import writes, also under the launcher:
utils/runtime/before_paddle.py); the count reaches Paddle's OpenMP runtime."""
import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO
from utils.runtime import dist

THREADS_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    sys.path.insert(0, {repo!r})
    import utils.runtime.before_paddle
    from utils.runtime import dist
    dist.select_device("cpu")
    omp = ctypes.CDLL("libiomp5.so")  # Paddle's OpenMP runtime, already loaded: the count its kernels use
    print(json.dumps({{"cpu_threads": dist.cpu_threads(), "omp": omp.omp_get_max_threads(),
                      "cpus": dist.available_cpus()}}))
""").format(repo=str(REPO))


def probe(env_changes, launcher_env=None):
    """THREADS_PROBE in a fresh process with the environment changed (None removes a variable). With launcher_env,
    it runs as a launcher's child: started by a parent process whose environment is env_changes, with the child's
    own environment launcher_env on top (what paddle.distributed.launch does)."""
    env = {k: v for k, v in os.environ.items() if k not in env_changes}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    code = THREADS_PROBE
    if launcher_env is not None:
        code = (f"import os, subprocess, sys\n"
                f"env = dict(os.environ, **{launcher_env!r})\n"
                f"sys.exit(subprocess.run([sys.executable, '-c', {THREADS_PROBE!r}], env=env).returncode)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


LAUNCHED = {"PADDLE_TRAINER_ID": "0", "PADDLE_CURRENT_ENDPOINT": "127.0.0.1:6170", "PADDLE_LOCAL_SIZE": "2",
            "OMP_NUM_THREADS": "1"}  # the launcher's Paddle import wrote the 1


def test_cpu_threads_are_the_process_share_unless_the_user_set_omp_num_threads():
    unset = probe({"OMP_NUM_THREADS": None})
    assert unset["cpu_threads"] == unset["omp"] == unset["cpus"]
    assert probe({"OMP_NUM_THREADS": "3"})["omp"] == 3
    assert probe({"OMP_NUM_THREADS": "1"})["omp"] == 1  # what this suite sets (conftest.py)
    # under the launcher: its share of the CPUs, unless the launcher itself was given OMP_NUM_THREADS
    launched = probe({"OMP_NUM_THREADS": None}, LAUNCHED)
    assert launched["cpu_threads"] == launched["omp"] == max(1, launched["cpus"] // 2)
    assert probe({"OMP_NUM_THREADS": "1"}, LAUNCHED)["omp"] == 1
    assert probe({"OMP_NUM_THREADS": "3"}, dict(LAUNCHED, OMP_NUM_THREADS="3"))["omp"] == 3


def test_this_suite_runs_one_thread_per_process():
    assert dist.cpu_threads() == 1
