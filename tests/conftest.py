"""Shared fixtures: a small subset of the generated toy set, running the entry points as a user would, the check
that a training run moved its weights, and the no-skip mode for CI (HASHNET_REQUIRE_ALL=1).

One thread per process: the suite runs 2 pytest-xdist workers on 2 cores, and an unset OMP_NUM_THREADS would give
every Paddle process (this one and the entry scripts it starts, which inherit it) all the CPUs (utils/runtime/dist.py
cpu_threads). A value the user set is kept. It is set before utils.runtime.before_paddle, which records it.

Freed memory stays in the process for reuse: glibc's malloc makes no mmap'd chunks and never trims its heap, in
pytest's processes (mallopt, below) and in every process they start (the MALLOC_* variables, which glibc reads at
start; xdist's workers are started after this file is imported). Otherwise each of the many 61 M-parameter networks
a test builds, copies or encodes with takes fresh pages from the system and gives them back, and on a virtual machine
whose balloon driver reports free pages to its host, as this project's CI machines do, every such page costs a host
fault when it is touched again: measured on the 2-core CI machine, the suite's system time fell from 265 s to 202 s
and its wall time by 8%. Nothing else changes: the same values, the same processes.
"""
# isort: off
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import utils.runtime.before_paddle  # noqa: F401  (before anything imports paddle: see that module)
# isort: on
import ctypes
import functools
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}  # docstring; a C int


def keep_freed_memory():
    for name, value in KEEP_FREED_MEMORY.items():
        os.environ.setdefault(name, value)
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, int(os.environ["MALLOC_MMAP_MAX_"]))  # M_MMAP_MAX
        libc.mallopt(-1, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))  # M_TRIM_THRESHOLD
    except (OSError, AttributeError, ValueError):
        pass  # not glibc, or a value the user set that mallopt does not take: the allocator's defaults, only slower


keep_freed_memory()

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# HASHNET_REQUIRE_ALL=1 (CI): a skipped test fails, unless its reason says it needs what CI never has. Those reasons
# name the ../shared data folder (absent from a fresh clone) or a CUDA build / GPU (CI runs on CPU).
REQUIRE_ALL_ENV = "HASHNET_REQUIRE_ALL"
ALLOWED_SKIP_REASONS = (str(SHARED), "CUDA", "GPU")


def skip_is_allowed(reason):
    return any(token in reason for token in ALLOWED_SKIP_REASONS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(REQUIRE_ALL_ENV) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not skip_is_allowed(reason):
        report.outcome = "failed"
        report.longrepr = (f"{REQUIRE_ALL_ENV}=1: this test was skipped ({reason}), but it needs only what CI "
                           f"installs; install what the reason names (allowed skip reasons mention: "
                           f"{', '.join(ALLOWED_SKIP_REASONS)})")


# The slow files (a subprocess training run or a model encoding images in this process), slowest first, as measured
# with --durations: pytest-xdist (pytest.ini: 2 workers, whole files) hands out files in collection order, so starting
# these first leaves the short files to fill in at the end, and the two workers finish close together instead of one
# still training while the other is idle. The files not named here follow in name order; tests within a file keep
# their order.
SLOW_FILES_FIRST = ("test_distributed.py", "test_datacache.py", "test_entry_scripts.py", "test_paper_recipe.py",
                    "test_engine.py", "test_methods.py", "test_failures.py", "test_alexnet.py",
                    "test_export_infer.py", "test_frozen.py", "test_resume_auto.py", "test_sampling.py",
                    "test_index.py", "test_predict.py", "test_backbones.py", "test_run_config.py",
                    "test_fast_encoder.py", "test_serve.py", "test_api.py", "test_user_errors.py", "test_launcher.py",
                    "test_upstream_lists.py", "test_pairwise_distributed.py", "test_bench_cpu.py",
                    "test_plots_report.py", "test_cpu_threads.py", "test_caffenet.py", "test_quiet_start.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: file order otherwise


def load_data_script(name):
    """Import data/<name>.py: data/ is a folder of scripts, not a package (and tests/data would shadow it)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(args, cwd=REPO, check=True, env=None, timeout=600):
    """Run `python <args>` in a fresh process (fresh Paddle state, like a user's run); returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                             f"stderr:\n{proc.stderr[-5000:]}")
    return proc


def free_port():
    """A TCP port free on 127.0.0.1 now (a server or launcher under test binds to it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stand_in_python(tmp_path):
    """(environment, log file) for running the scripts/*.sh with a stand-in `python` first on PATH: it records each
    command it is given in the log instead of running it (`python -c ...`, the presets' lookup, runs for real)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    (bin_dir / "python").write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'
                                    f'echo "$*" >> {log}\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATASET", "DATA_PATH", "TOPK", "RECIPE")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return env, log


@pytest.fixture(scope="session")
def toy_root():
    from utils.datasets.toy import ensure_toy_dataset
    return ensure_toy_dataset(REPO / "data" / "toy")


@pytest.fixture(scope="session")
def small_toy(toy_root, tmp_path_factory):
    """Lists of 128 train / 40 query / 200 database toy images (a few seconds an epoch on a CPU)."""
    out = tmp_path_factory.mktemp("small_toy")
    for split, n in (("train", 128), ("test", 40), ("database", 200)):
        lines = (toy_root / f"{split}.txt").read_text().splitlines()[:n]
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "classes.txt").write_text((toy_root / "classes.txt").read_text())
    return {"list_dir": out, "data_path": toy_root}


@pytest.fixture(scope="session")
def eval_toy(small_toy, tmp_path_factory):
    """small_toy with fewer evaluation images: its 128 training images, 16 queries and 48 database images, for the
    tests that encode the query and database sets several times in this process (every image is a forward pass, and
    an equality of codes or mAPs needs no more of them)."""
    out = tmp_path_factory.mktemp("eval_toy")
    for split, n in (("train", 128), ("test", 16), ("database", 48)):
        lines = (small_toy["list_dir"] / f"{split}.txt").read_text().splitlines()[:n]
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "classes.txt").write_text((small_toy["list_dir"] / "classes.txt").read_text())
    return {"list_dir": out, "data_path": small_toy["data_path"]}


def toy_args(small_toy, run_dir, *extra):
    """main_single_gpu.py flags for a quick run on the small toy lists, written under run_dir; no figures drawn (a
    second less per run; test_entry_scripts draws them, with --plots true in `extra`)."""
    return ["--dataset", "toy", "--list-dir", small_toy["list_dir"], "--data-path", small_toy["data_path"],
            "--output-dir", Path(run_dir).parent, "--run-name", Path(run_dir).name, "--batch-size", "32",
            "--num_workers", "0", "--device", "cpu", "--plots", "false", *extra]


# ------------------------------------------------------------------------------------------- training moved the weights
# what build.build_model reads of a configuration: runs that agree on these started from the same parameters
BUILD_FIELDS = ("seed", "bit", "init", "backbone", "backbone_weights", "pretrained", "train_scope", "method")


def initial_parameters(run_dir):
    """The parameters a training run started from, rebuilt here from its config.json the way the engine builds them
    (same seed, same build order), and the names of those it trains."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    weights = config.get("pretrained")
    stamp = Path(weights).stat().st_mtime_ns if weights else None  # a file rewritten in place is another start
    return _initial_parameters(json.dumps({k: config.get(k) for k in BUILD_FIELDS}), stamp)


@functools.lru_cache(maxsize=2)  # several files' runs start alike (the toy preset, seed 0): one 61 M build each
def _initial_parameters(build_config, _stamp):
    import argparse
    import logging

    from utils.runtime import dist
    from utils.train import build
    cfg = argparse.Namespace(**json.loads(build_config))
    dist.seed_everything(cfg.seed)
    model = build.build_model(cfg, logging.getLogger("initial-parameters"), weights=cfg.pretrained)
    trained = {name for name, p in model.named_parameters() if not p.stop_gradient}
    return {name: p.numpy() for name, p in model.named_parameters()}, trained


def gradient_change(initial, final):
    """Size of final - initial that weight decay cannot explain, relative to the parameter's size.

    With no gradient (a saturated tanh, a detached path) SGD's weight decay only rescales a parameter, so its change
    is parallel to its initial value: the part of the change orthogonal to it is what the gradients did."""
    initial, change = initial.astype(np.float64).ravel(), (final.astype(np.float64) - initial).ravel()
    norm = np.linalg.norm(initial)
    if norm > 0:
        change = change - (change @ initial) / norm ** 2 * initial
    return np.linalg.norm(change) / max(norm, 1.0)


def assert_training_moved(run_dir, checkpoint_name=None, min_change=1e-4):
    """A test on a run that learned nothing is void: every trained parameter of the run's last checkpoint moved by
    gradients (not only by weight decay), and every frozen one is bit-for-bit where it started."""
    from utils.train.checkpoint import load_model_state
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    state = load_model_state(run_dir / (checkpoint_name or f"last_{config['bit']}.pdckpt"))
    final = {name: value.numpy() for name, value in state.items()}
    initial, trained = initial_parameters(run_dir)
    assert trained, f"{run_dir}: no parameter is trained"
    still = {name: gradient_change(initial[name], final[name]) for name in sorted(trained)}
    still = {name: change for name, change in still.items() if change < min_change}
    assert not still, f"{run_dir}: training did not move {still} (change beyond weight decay, relative)"
    # BatchNorm's running statistics (Paddle keeps them as parameters that never train) follow the batches when the
    # backbone trains in train mode; with a frozen backbone they stay
    from models.pretrained import BATCHNORM_STATISTICS
    statistics = {name for name in initial if name.endswith(BATCHNORM_STATISTICS)} \
        if config.get("train_scope") == "all" else set()
    for name in set(initial) - trained - statistics:
        np.testing.assert_array_equal(final[name], initial[name], err_msg=f"{run_dir}: frozen {name} changed")
