"""Seconds from meeting a truncated JPEG (line 5 of a 128-image toy training list) to the run's exit, for one and
two processes (paddle.distributed.launch, CPU) and 0 and 2 DataLoader workers.

    python benchmarks/bench_bad_image_exit.py                  # the four cases
    python benchmarks/bench_bad_image_exit.py --cases 2x0      # processes x workers

The meeting time is when the image is opened (load_rgb, patched in the run through this script's --child mode);
the exit time is when the command (the launcher, for two processes) has ended. Prints one JSON row per case.
"""
import argparse
import io
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BAD_NAME = "truncated_line5.jpg"


def child(argv):
    """Run an entry script, appending `time pid` to $MEET_FILE whenever the bad image is opened."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from utils.datasets import image_list as datasets
    original = datasets.load_rgb

    def load_rgb(path):
        if Path(path).name == BAD_NAME:
            with open(os.environ["MEET_FILE"], "a") as f:
                f.write(f"{time.time()} {os.getpid()}\n")
        return original(path)

    datasets.load_rgb = load_rgb
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


def make_bad_data(base):
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(PROJECT_ROOT))
    from utils.datasets.toy import ensure_toy_dataset
    toy = Path(ensure_toy_dataset(PROJECT_ROOT / "data" / "toy"))
    root, lists = base / "root", base / "lists"
    (root / "broken").mkdir(parents=True)
    lists.mkdir()
    (root / "images").symlink_to(toy.resolve() / "images")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "broken" / BAD_NAME).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for split, n in (("train", 128), ("test", 40), ("database", 200)):
        rows = (toy / f"{split}.txt").read_text().splitlines()[:n]
        if split == "train":
            rows[4] = f"broken/{BAD_NAME} " + rows[4].split(" ", 1)[1]
        (lists / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root, lists


def run_case(base, root, lists, nproc, workers, timeout):
    name = f"{nproc}x{workers}"
    meet_file = base / f"{name}.meet"
    flags = ["--dataset", "toy", "--list-dir", lists, "--data-path", root, "--output-dir", base / "runs",
             "--run-name", name, "--batch-size", "32", "--device", "cpu", "--epoch", "1",
             "--standardize_features", "false", "--num_workers", str(workers)]
    entry = PROJECT_ROOT / ("main_multi_gpu.py" if nproc > 1 else "main_single_gpu.py")
    launcher = ["-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir", base / f"{name}_log"]
    cmd = [sys.executable, *(launcher if nproc > 1 else []), __file__, "--child", entry, *flags]
    env = {**os.environ, "MEET_FILE": str(meet_file), "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run([str(c) for c in cmd], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        code, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as err:
        code, output = "timeout", err.stdout or ""
        output = output.decode() if isinstance(output, bytes) else output
    end = time.time()
    met = min(float(line.split()[0]) for line in meet_file.read_text().splitlines()) if meet_file.exists() else None
    lines = [line for line in output.splitlines() if line.strip()]
    return {"processes": nproc, "workers": workers, "exit_status": code,
            "seconds_meeting_to_exit": None if met is None else round(end - met, 2), "last_lines": lines[-2:]}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["1x0", "1x2", "2x0", "2x2"], help="PROCESSESxWORKERS")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, lists = make_bad_data(base)
        for case in args.cases:
            nproc, workers = (int(v) for v in case.split("x"))
            print(json.dumps(run_case(base, root, lists, nproc, workers, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
