"""Launcher and device: a launcher's child is told from a bare start by what the launcher sets (not by the world
size), `--device gpu:N` under the launcher, every --seed, and the multi-GPU scripts on a machine without a GPU.
GPUs cannot be had here: the GPU cases run with a faked launcher environment and device count."""
import json
import os
import subprocess

import paddle
import pytest

import main_multi_gpu
from conftest import REPO, run_cli, toy_args
from utils.config.flags import SEED_MAX
from utils.runtime import dist
from utils.train.options import parse_args

# what `python -m paddle.distributed.launch --gpus 1 main_multi_gpu.py` gives its only child (controllers/collective.py)
LAUNCHER_CHILD = {"PADDLE_TRAINER_ID": "0", "PADDLE_TRAINERS_NUM": "1", "PADDLE_CURRENT_ENDPOINT": "127.0.0.1:6170",
                  "PADDLE_TRAINER_ENDPOINTS": "127.0.0.1:6170", "PADDLE_LOCAL_RANK": "0", "PADDLE_MASTER":
                  "127.0.0.1:6170", "FLAGS_selected_gpus": "1"}


@pytest.fixture
def bare(monkeypatch):
    for name in LAUNCHER_CHILD:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def launcher_child(bare):
    for name, value in LAUNCHER_CHILD.items():
        bare.setenv(name, value)
    return bare


@pytest.fixture
def four_gpus(monkeypatch):
    """A CUDA build seeing 4 GPUs; paddle.set_device records instead of switching."""
    chosen = []
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(paddle, "set_device", lambda device: chosen.append(device) or device)
    return chosen


def record_entry(monkeypatch):
    calls = []
    monkeypatch.setattr(main_multi_gpu.dist, "spawn", lambda fn, args, nprocs: calls.append(("spawn", nprocs)))
    monkeypatch.setattr(main_multi_gpu.dist, "init_parallel_env", lambda: calls.append(("init",)))
    monkeypatch.setattr(main_multi_gpu.engine, "run", lambda cfg, wrap_model=None: calls.append(("run", wrap_model)))
    return calls


def test_launcher_child_of_one_process_is_a_worker_not_a_spawner(launcher_child, four_gpus):
    assert dist.launched_by_paddle()
    calls = record_entry(launcher_child)
    main_multi_gpu.main(parse_args(["--dataset", "toy"]))
    assert calls == [("init",), ("run", None)]  # one process, no DataParallel in a world of one, no spawn


def test_bare_start_on_four_gpus_spawns_four(bare, four_gpus):
    assert not dist.launched_by_paddle()
    calls = record_entry(bare)
    main_multi_gpu.main(parse_args(["--dataset", "toy"]))
    assert calls == [("spawn", 4)]


def test_launcher_child_takes_the_gpu_the_launcher_gave_it(launcher_child, four_gpus):
    for device in ("auto", "gpu", "gpu:1"):
        dist.select_device(device)
    assert four_gpus == ["gpu:1", "gpu:1", "gpu:1"]


def test_device_naming_another_gpu_under_the_launcher_is_refused(launcher_child, four_gpus):
    with pytest.raises(ValueError) as err:
        dist.select_device("gpu:3")
    message = str(err.value)
    assert "--device gpu:3 under paddle.distributed.launch" in message and "gpu:1" in message
    assert "--gpus 3" in message and "--device gpu (or auto)" in message
    assert four_gpus == []


def test_bare_start_keeps_the_device_asked_for(bare, four_gpus):
    dist.select_device("gpu:3")
    dist.select_device("cpu")
    assert four_gpus == ["gpu:3", "cpu"]


@pytest.mark.parametrize("seed", [0, 42950, 50000, SEED_MAX])
def test_every_seed_in_range_is_accepted(seed):
    cfg = parse_args(["--dataset", "toy", "--seed", str(seed)])
    assert cfg.seed == seed
    dist.seed_everything(cfg.seed, 150)


@pytest.mark.parametrize("seed", ["-1", str(SEED_MAX + 1), "1.5"])
def test_seed_out_of_range_is_an_argparse_error(seed, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "toy", "--seed", seed])
    assert "--seed" in capsys.readouterr().err


@pytest.fixture(scope="module")
def one_worker(small_toy, tmp_path_factory):
    """One toy epoch of main_multi_gpu.py under the launcher with one CPU process, at the largest --seed: the two
    tests below check the two halves of the one run (each would otherwise start its own training process)."""
    base = tmp_path_factory.mktemp("one_worker")
    run, logs = base / "one", base / "logs"
    proc = run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "1", "--log_dir", logs,
                    "main_multi_gpu.py", *toy_args(small_toy, run, "--epoch", "1", "--seed", str(SEED_MAX))])
    return {"run": run, "logs": logs, "proc": proc}


def test_training_with_the_largest_seed(one_worker):
    run = one_worker["run"]
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert json.loads((run / "config.json").read_text())["seed"] == SEED_MAX and rows[0]["steps"] == 4


def paddle_sees_a_gpu():
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


@pytest.mark.skipif(paddle_sees_a_gpu(), reason="this machine has a GPU: the no-GPU message cannot show")
@pytest.mark.parametrize("script", ["scripts/train_multi_gpu.sh", "scripts/test_multi_gpu.sh"])
def test_multi_gpu_scripts_stop_before_launching_without_a_gpu(script, tmp_path):
    proc = subprocess.run(["sh", script, "--output-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GPUS": "0,1"})
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines[-1].startswith("error: Paddle sees no GPU (GPUS=0,1") and "GPUS=cpu NPROC=2 sh " + script in \
        lines[-1]
    assert "LAUNCH" not in proc.stdout + proc.stderr


def test_script_run_name_must_name_each_bit_width(tmp_path):
    proc = subprocess.run(["sh", "scripts/train_multi_gpu.sh", "--run-name", "mine"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "GPUS": "cpu"})
    assert proc.returncode == 2 and "must contain {bit}" in proc.stderr


def test_launcher_with_one_cpu_process_runs_one_worker(one_worker):
    run, logs, proc = one_worker["run"], one_worker["logs"], one_worker["proc"]
    log = (logs / "workerlog.0").read_text()
    assert "GPU visible: running a single process" not in log + proc.stdout  # the worker branch, not the bare one
    assert "world size 1, device cpu" in log and (run / "last_64.pdckpt").is_file()
    assert not (logs / "workerlog.1").exists()
