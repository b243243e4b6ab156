"""mAP@K at MS-COCO scale: the plain per-query loop vs the chunked bit-packed CalcTopMap.

Synthetic but COCO-like data: 80 labels, ~2.9 labels per image, 'person' in ~45% of images, every
image with at least one label; codes are the sign of a sum of per-class random prototypes plus noise,
so distances cluster and tie as a trained model's do. The plain loop runs on a subset of queries and is
extrapolated per query; the fast one runs on all queries; both must agree on the subset.

    python benchmarks/bench_map.py                 # 5,000 x 112,000, 16 and 64 bits
    python benchmarks/bench_map.py --database 20000 --queries 1000 --reference-queries 50
"""
import argparse
import os
import resource
import sys
import time
import tracemalloc

# Time the plain loop on one core, like the fast path's single worker: its BLAS products gain little
# from a second thread, and on a busy 2-CPU machine spinning BLAS threads make it several times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from utils.hashing.metrics import CalcTopMap, CalcTopMap_reference  # noqa: E402

PERSON = 49  # index of 'person' in the alphabetical COCO label order (docs/protocol.md#ms-coco-protocol)


def coco_like_labels(n, rng, classes=80):
    """Multi-hot labels with COCO's rough statistics (mean ~2.9 labels, person ~45%)."""
    popularity = 1.0 / np.arange(1, classes) ** 0.8          # Zipf-like for the other 79 classes
    others = np.delete(np.arange(classes), PERSON)
    rate = popularity / popularity.sum() * 2.45                # expected other labels per image
    labels = np.zeros((n, classes), dtype=np.float32)
    labels[:, others] = rng.random((n, classes - 1)) < np.minimum(rate, 0.35)
    labels[:, PERSON] = rng.random(n) < 0.45
    empty = np.flatnonzero(labels.sum(1) == 0)                # COCO lists keep only labelled images
    labels[empty, rng.choice(others, size=empty.size, p=popularity / popularity.sum())] = 1
    return labels


def label_correlated_codes(labels, prototypes, rng, noise):
    signal = labels @ prototypes / np.sqrt(labels.sum(1, keepdims=True))
    raw = signal + noise * rng.standard_normal(signal.shape).astype(np.float32)
    return np.where(raw >= 0, 1.0, -1.0).astype(np.float32)


def run(bits, args, rng):
    n_total = args.queries + args.database
    labels = coco_like_labels(n_total, rng)
    prototypes = rng.standard_normal((labels.shape[1], bits)).astype(np.float32)
    codes = label_correlated_codes(labels, prototypes, rng, args.noise)
    qB, rB = codes[:args.queries], codes[args.queries:]
    qL, rL = labels[:args.queries], labels[args.queries:]
    print(f"\n== {bits} bits: {len(qB):,} queries x {len(rB):,} database, K={args.topk}, "
          f"labels/image {labels.sum(1).mean():.2f}, person {labels[:, PERSON].mean():.2f}, "
          f"distinct db codes {len(np.unique(rB, axis=0)):,}")

    sub = min(args.reference_queries, len(qB))
    start = time.perf_counter()
    ref = CalcTopMap_reference(rB, qB[:sub], rL, qL[:sub], args.topk)
    per_query_ref = (time.perf_counter() - start) / sub
    fast_sub = CalcTopMap(rB, qB[:sub], rL, qL[:sub], args.topk)
    if abs(fast_sub - ref) > 1e-9:
        raise RuntimeError(f"fast and reference mAP differ on the {sub}-query subset: {fast_sub!r} vs {ref!r}")
    print(f"reference loop: {per_query_ref * 1e3:.2f} ms/query on {sub} queries "
          f"-> {per_query_ref * len(qB):.1f} s extrapolated to {len(qB):,}; subset mAP {ref:.6f} (fast agrees)")

    results = {}
    for workers in sorted({1, args.workers}):
        best = float("inf")
        for _ in range(args.repeats):
            tracemalloc.start()
            start = time.perf_counter()
            value = CalcTopMap(rB, qB, rL, qL, args.topk, num_workers=workers, progress=False)
            best = min(best, time.perf_counter() - start)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        results[workers] = best
        print(f"fast, {workers} worker(s): {best:.3f} s for {len(qB):,} queries "
              f"({best / len(qB) * 1e3:.3f} ms/query), mAP@{args.topk} {value:.6f}, "
              f"peak traced memory {peak / 2**20:.0f} MB")
    return per_query_ref * len(qB), results[1], results[args.workers]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--database", type=int, default=112_000)
    parser.add_argument("--reference-queries", type=int, default=200, help="queries timed with the plain loop")
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--topk", type=int, default=5000)
    parser.add_argument("--noise", type=float, default=0.8, help="code noise relative to the label signal")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    # other work on the machine skews both timings; the load average says how much there was
    print(f"cpus {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    ratios = []
    for bits in args.bits:
        ref_total, fast_one, fast_all = run(bits, args, rng)
        ratios.append((bits, ref_total / fast_one, ref_total / fast_all))
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    print(f"peak RSS of the process (data included): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"speed ratio (reference loop / fast, whole query set; 1 worker | {args.workers} workers): "
          + ", ".join(f"{bits} bits {one:.1f}x | {many:.1f}x" for bits, one, many in ratios))


if __name__ == "__main__":
    main()
