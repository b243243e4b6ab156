"""Shared fixtures: a small subset of the generated toy set, and running the entry points as a user would."""
import utils.compat  # noqa: F401  (before anything imports paddle: see utils/compat.py)
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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


@pytest.fixture(scope="session")
def toy_root():
    from utils.toy_dataset import ensure_toy_dataset
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


def toy_args(small_toy, run_dir, *extra):
    """main_single_gpu.py flags for a quick run on the small toy lists, written under run_dir."""
    return ["--dataset", "toy", "--list-dir", small_toy["list_dir"], "--data-path", small_toy["data_path"],
            "--output-dir", Path(run_dir).parent, "--run-name", Path(run_dir).name, "--batch-size", "32",
            "--num_workers", "0", "--device", "cpu", *extra]
