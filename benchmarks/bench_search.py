"""Top-k Hamming search over 1,000,000 64-bit codes: bit-packed topk_search vs float matmul + stable argsort.

Both return the canonical answer (distance, ties by database index); the run checks they agree.

    python benchmarks/bench_search.py                       # 1M codes, top-10, 1 and 100 queries
    python benchmarks/bench_search.py --database 200000 --repeats 3
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from utils.hashing.codes import pack_codes, topk_search  # noqa: E402


def matmul_search(q_codes, db_codes, k, rows=8):
    """The obvious way: float similarities, Hamming = (bits - q.d) / 2, stable argsort per query."""
    bits = db_codes.shape[1]
    indices, distances = [], []
    for start in range(0, len(q_codes), rows):
        hamming = 0.5 * (bits - q_codes[start:start + rows] @ db_codes.T)
        order = np.argsort(hamming, axis=1, kind="stable")[:, :k]
        indices.append(order)
        distances.append(np.take_along_axis(hamming, order, axis=1))
    return np.concatenate(indices), np.concatenate(distances)


def best_time(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    print(f"cpus {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    db_codes = np.where(rng.random((args.database, args.bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    start = time.perf_counter()
    db_packed = pack_codes(db_codes)
    print(f"{args.database:,} random {args.bits}-bit codes packed in {time.perf_counter() - start:.2f} s "
          f"({db_packed.nbytes / 2**20:.1f} MB packed vs {db_codes.nbytes / 2**20:.0f} MB float32)")

    ratios = []
    for nq in args.queries:
        q_codes = np.where(rng.random((nq, args.bits)) < 0.5, -1.0, 1.0).astype(np.float32)
        q_packed = pack_codes(q_codes)
        fast, (idx, dist) = best_time(lambda: topk_search(q_packed, db_packed, args.k), args.repeats)
        slow, (ref_idx, ref_dist) = best_time(lambda: matmul_search(q_codes, db_codes, args.k),
                                              args.baseline_repeats)
        if not (np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)):
            raise RuntimeError(f"topk_search and the matmul baseline disagree for {nq} queries")
        ratios.append((nq, slow / fast))
        print(f"top-{args.k}, {nq} quer{'y' if nq == 1 else 'ies'}: topk_search {fast * 1e3:.2f} ms "
              f"(best of {args.repeats}), matmul + stable argsort {slow * 1e3:.1f} ms; same answer")
    print("speed ratio (matmul + stable argsort / topk_search): "
          + ", ".join(f"{nq} quer{'y' if nq == 1 else 'ies'} {r:.1f}x" for nq, r in ratios))


if __name__ == "__main__":
    main()
