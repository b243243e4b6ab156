"""Images/s of the project's CPU encoder (dynamic graph, and the fast path: Paddle Inference with oneDNN) against
torch's AlexNet + a 4096 -> 64 linear, with the same number of threads for all, at 64 and 224 px, on this machine.

    python benchmarks/bench_cpu.py                  # threads = the CPUs this process may use, batch 64
    python benchmarks/bench_cpu.py --threads 1 --sizes 64

Every engine runs in a process of its own (Paddle and torch bring different OpenMP runtimes, and one engine's idle
threads must not spin beside the next one's), on one random uint8 batch: HashNet (64 bits, random weights, the
normalisation inside the network) through the dynamic graph and through utils/retrieval/fast_encoder.layer_predictor,
and the same network in torch (torchvision's AlexNet layout, tests/torch_reference_alexnet.py; random weights, the same
uint8 input and normalisation). torch is optional: without it its column says so. Each engine runs --warmup untimed
batches, then enough timed ones to fill --seconds (at least 3). Prints a table with the ratios fast/torch and
dygraph/torch, and whether the goals of issue 19 (fast >= 1.0x torch at 224 px, >= 0.8x at 64 px) are met; the
machine's load average is printed before and after, since a busy machine moves every number.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import utils.runtime.before_paddle  # noqa: E402,F401  (before anything imports paddle; it imports neither Paddle nor torch)

ENGINES = ("dygraph", "fast", "torch")
GOALS = {224: 1.0, 64: 0.8}  # fast / torch at least this, same threads
BIT = 64
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # utils/datasets/normalization.py's
# torchvision's AlexNet features: (in, out, kernel, stride, padding, max-pool after)
TORCH_CONVS = ((3, 64, 11, 4, 2, True), (64, 192, 5, 1, 2, True), (192, 384, 3, 1, 1, False),
               (384, 256, 3, 1, 1, False), (256, 256, 3, 1, 1, True))


def timed(fn, batch, warmup, seconds):
    """images/s of fn(batch): `warmup` untimed calls (the last one sizes the run), then enough timed calls to fill
    `seconds`, at least 3 (benchmarks/bench_infer.images_per_second)."""
    from benchmarks.bench_infer import images_per_second
    start = time.perf_counter()
    for _ in range(max(1, warmup)):
        fn(batch)
    one = (time.perf_counter() - start) / max(1, warmup)
    return images_per_second(fn, batch, max(3, math.ceil(seconds / max(one, 1e-6))), 0)


def random_batch(batch_size, size):
    import numpy as np
    return np.random.default_rng(0).integers(0, 256, (batch_size, 3, size, size), dtype=np.uint8)


def paddle_encoder(engine, size, threads):
    """fn(uint8 numpy batch) -> outputs of a random-init 64-bit HashNet: the dynamic graph or the fast path."""
    import paddle

    from models import HashNet
    from utils.retrieval import fast_encoder
    from utils.runtime import dist
    paddle.set_device("cpu")
    dist.use_cpu_threads(threads)
    paddle.seed(0)
    model = HashNet(BIT)
    model.eval()
    if engine == "fast":
        return fast_encoder.layer_predictor(model, size, cpu_threads=threads)

    @paddle.no_grad()
    def dygraph(images):
        return model(paddle.to_tensor(images)).numpy()
    return dygraph


def torch_encoder(size, threads):
    """fn(uint8 numpy batch) -> outputs of the same network in torch: AlexNet features + fc6/fc7 + a 4096 -> 64
    linear, the input normalised like models/hashnet.normalize_images."""
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers = []
    for cin, cout, kernel, stride, padding, pool in TORCH_CONVS:
        layers += [nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU(inplace=True)]
        layers += [nn.MaxPool2d(kernel_size=3, stride=2)] if pool else []
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(1), nn.Dropout(0.5),
                        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 4096),
                        nn.ReLU(inplace=True), nn.Linear(4096, BIT)).eval()
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)

    @torch.no_grad()
    def forward(images):
        return net((torch.from_numpy(images).float() / 255.0 - mean) / std).numpy()
    return forward


def measure(engine, size, args):
    """One engine at one size, in this process: {'images_per_s', 'seconds_per_batch', 'iters'}."""
    fn = torch_encoder(size, args.threads) if engine == "torch" else paddle_encoder(engine, size, args.threads)
    return timed(fn, random_batch(args.batch_size, size), args.warmup, args.seconds)


def measure_in_subprocess(engine, size, args):
    """measure() in a fresh process with OMP_NUM_THREADS = --threads; None for torch when it is not installed."""
    if engine == "torch" and importlib.util.find_spec("torch") is None:
        return None
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", engine, "--sizes", str(size), "--threads",
            str(args.threads), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--seconds",
            str(args.seconds)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} at {size} px failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio(a, b):
    return a["images_per_s"] / b["images_per_s"] if a and b else None


def report(results, args, load_before, load_after, out=None):
    """The table: images/s per engine and size, the ratios, the goals (on stdout unless `out`)."""
    out = out or sys.stdout

    def show(value, spec):
        return "n/a" if value is None else format(value, spec)

    print(f"bench_cpu: batch {args.batch_size}, {args.threads} thread(s) for every engine, HashNet {BIT} bits; "
          f"load average {load_before} before, {load_after} after", file=out)
    print(f"{'size':>6} {'dygraph':>9} {'fast':>9} {'torch':>9} {'fast/torch':>11} {'dygraph/torch':>14} "
          f"{'fast/dygraph':>13}   goal (fast/torch)", file=out)
    for size, row in results.items():
        fast_torch = ratio(row["fast"], row["torch"])
        goal = GOALS.get(size)
        verdict = ("" if goal is None else f">= {goal:.1f}: " +
                   ("torch not installed" if fast_torch is None else "met" if fast_torch >= goal else "NOT met"))
        speeds = [show(row[e] and row[e]["images_per_s"], "9.1f") for e in ENGINES]
        ratios = [show(fast_torch, "10.2f"), show(ratio(row["dygraph"], row["torch"]), "13.2f"),
                  show(ratio(row["fast"], row["dygraph"]), "12.2f")]
        print(f"{size:>4}px {speeds[0]:>9} {speeds[1]:>9} {speeds[2]:>9} {ratios[0]:>10}x {ratios[1]:>13}x "
              f"{ratios[2]:>12}x   {verdict}", file=out)
    if any(row["torch"] is None for row in results.values()):
        print("torch is not installed (pip install torch, CPU build): its column is skipped", file=out)


def load_average():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every engine (default: the CPUs this process may use)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="input height = width")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (oneDNN builds its kernels)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per engine and size (>= 3 batches)")
    parser.add_argument("--one", choices=ENGINES, help=argparse.SUPPRESS)  # internal: measure one engine, print JSON
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.threads is None:
        from utils.runtime.dist import available_cpus  # not in the engines' processes: they are told --threads
        args.threads = available_cpus()
    if args.threads < 1 or args.batch_size < 1:
        raise SystemExit("error: --threads and --batch-size must be >= 1")
    if args.one:
        print(json.dumps(measure(args.one, args.sizes[0], args)))
        return None
    load_before = load_average()
    results = {size: {engine: measure_in_subprocess(engine, size, args) for engine in ENGINES} for size in args.sizes}
    report(results, args, load_before, load_average())
    return results


if __name__ == "__main__":
    main()
