"""The search engines of utils/retrieval/engines.py over millions of bit-packed codes, in one run: build time, memory,
the latency of one query, throughput at batch sizes, and whether each one answers like the exact linear scan.

    python benchmarks/bench_index.py                                   # 1M and 10M 64-bit codes, clustered + uniform
    python benchmarks/bench_index.py --sizes 1000000 --engines linear mih faiss-flat
    python benchmarks/bench_index.py --sizes 3000 --queries 100 --batches 10 100 --json /tmp/index.json

Codes (benchmarks/index_codes.py), from numpy Generators seeded by --seed, made in chunks (10M x 64 bits = 80 MB is
built without a larger temporary) and packed by rows like the engines take them (bit i in bit i % 8 of byte i // 8):
- clustered, shaped like trained codes: --centres C uniformly random centre codes (default 10,000); every item is a
  centre picked uniformly XOR independent bit flips of probability --flip p (default 0.05: bits * p = 3.2 bits from
  its centre at 64 bits, so two items of one centre are ~bits * 2p(1 - p) = 6.1 bits apart, of two centres ~bits / 2).
  The queries are drawn the same way from the same centres: new draws, not database items.
- uniform: every bit a fair coin, the worst case for multi-index hashing (buckets of ~1 item, far k-th neighbours).

For each distribution x size, each engine of --engines is built alone (the one before it freed): build seconds; memory
as the engine's .nbytes and as the growth of the process's RSS over the build, kept after it and at its peak
(/proc/self/status VmRSS and VmHWM, Linux, after handing freed memory back with glibc's malloc_trim; "n/a"
elsewhere). .nbytes of the faiss engines counts their codes only: HNSW's graph and IVF's lists show in the RSS. Then,
on the same queries for every engine: the 1-query latency, median over --single-queries calls of one query each
(after one untimed call); the throughput at each --batches size b, one knn call with the first b queries (mih loops
over its queries inside that call); and the exactness against the linear scan's answer for all --queries queries:
"identical" (ids and distances), "distances identical, ids differ at ties (x% of queries)" (faiss orders equal
distances its own way), or recall@k (engines.recall_at_k, from the true distances of what the engine returned) for
the approximate engines.

The numpy engines use one core; faiss (optional: without it its rows are skipped, saying why) uses its OpenMP threads,
printed in the header (--faiss-threads or OMP_NUM_THREADS sets them; on a busy machine its threads wait for each
other, and one thread may be steadier). HNSW over more than --hnsw-max codes is skipped: its construction takes too
long on 2 cores. Each table is followed by ratios from that same run: linear / mih 1-query ms (the MIH speed-up, goal
>= 5x on clustered 10M) and mih / faiss-flat q/s at batch 100 (goal >= 1). No time is asserted; a busy machine moves
every number, so the load average is printed at the start and the end.
"""
import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.index_codes import (  # noqa: E402, F401  (re-exported: the generators' tests read them here)
    DISTRIBUTIONS,
    clustered_rows,
    make_codes,
    uniform_rows,
)
from utils.retrieval.engines import ENGINES, build_engine, recall_at_k  # noqa: E402
from utils.runtime.errors import MissingPackageError, UsageError  # noqa: E402

DEFAULT_ENGINES = ("linear", "mih", "faiss-flat", "faiss-ivf", "faiss-hnsw")
FAISS_ENGINES = ("faiss-flat", "faiss-ivf", "faiss-hnsw")
GOAL_SPEEDUP, GOAL_SPEEDUP_SIZE = 5.0, 10_000_000  # linear / mih 1-query ms, on clustered codes at this size
GOAL_OVER_FLAT, RATIO_BATCH = 1.0, 100  # mih / faiss-flat q/s at this batch
MB = 2 ** 20


def true_distances(query_rows, db_rows, ids):
    """Hamming distances (nq, k) int64 between every query and the database items `ids` (nq, k); -1 where id < 0."""
    valid = ids >= 0
    diff = np.bitwise_xor(query_rows[:, None, :], db_rows[np.where(valid, ids, 0)])
    distances = np.unpackbits(diff, axis=-1).sum(axis=-1, dtype=np.int64)
    return np.where(valid, distances, -1)


# ------------------------------------------------------------------------------------------------------ machine
def proc_status(field):
    """A /proc/self/status field in bytes (VmRSS, VmHWM), or None where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def release_freed_memory():
    """Hand memory the process freed back to the system (glibc's malloc_trim), so that a build's RSS growth counts
    the pages it needs rather than only those the heap did not already hold; nothing where that is not glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def faiss_status():
    """(version, OpenMP threads) of faiss, or (None, the reason its engines are skipped)."""
    try:
        import faiss
    except ImportError as error:
        return None, f"faiss is not installed ({error}; pip install faiss-cpu)"
    return getattr(faiss, "__version__", "?"), faiss.omp_get_max_threads()


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        pass
    version, threads = faiss_status()
    return {"cpu": cpu, "cpus": os.cpu_count(), "usable_cpus": usable, "memory_bytes": memory,
            "python": platform.python_version(), "numpy": np.__version__, "faiss": version,
            "faiss_threads": threads if version else None, "faiss_missing": None if version else threads,
            "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def describe_machine(info):
    memory = f", {info['memory_bytes'] / 2 ** 30:.0f} GB RAM" if info["memory_bytes"] else ""
    faiss = (f"faiss {info['faiss']} ({info['faiss_threads']} OpenMP thread(s))" if info["faiss"]
             else info["faiss_missing"])
    load = "n/a" if info["load_average_start"] is None else f"{info['load_average_start']:.2f}"
    return (f"machine: {info['cpu']}, {info['cpus']} CPUs ({info['usable_cpus']} usable){memory}; "
            f"Python {info['python']}, numpy {info['numpy']}, {faiss}; load average at start {load}")


# ---------------------------------------------------------------------------------------------------- measuring
def progress(message):
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def build_measured(name, rows, bits, seed):
    """(engine, build seconds, RSS growth kept, RSS growth at the peak); growths None where not measurable."""
    options = {"seed": seed} if name == "faiss-ivf" else {}
    release_freed_memory()
    before = proc_status("VmRSS")
    peak_known = before is not None and reset_peak_rss()
    start = time.perf_counter()
    engine = build_engine(name, rows, bits, **options)
    seconds = time.perf_counter() - start
    peak = proc_status("VmHWM") if peak_known else None
    release_freed_memory()  # the build's freed temporaries are not what the engine keeps
    after = proc_status("VmRSS")
    kept = after - before if before is not None and after is not None else None
    return engine, seconds, kept, (peak - before if peak is not None else None)


def single_query_ms(engine, query_rows, k, count):
    """Median ms of `count` knn calls of one query each (queries taken in turn), after one untimed call."""
    engine.knn(query_rows[-1:], k)  # first-call costs: mih's flip masks, faiss's thread pool
    times = []
    for i in range(count):
        one = query_rows[i % len(query_rows)][None, :]
        start = time.perf_counter()
        engine.knn(one, k)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def exactness(name, engine, ids, distances, reference, query_rows, db_rows, k):
    """How the engine's answer (ids, distances) compares with the linear scan's: a dict with the table's text."""
    if name == "linear":
        return {"exactness": "reference (exact scan)", "identical": True, "distances_identical": True,
                "ids_differ_share": 0.0, "recall": 1.0, "wrong_distances_share": 0.0}
    ref_ids, ref_distances = reference
    actual = true_distances(query_rows, db_rows, ids)
    wrong = float(np.mean(np.any(actual != distances, axis=1))) if ids.size else 0.0
    recall = recall_at_k(ids, actual, ref_distances)
    same_shape = ids.shape == ref_ids.shape
    distances_identical = same_shape and wrong == 0 and np.array_equal(distances, ref_distances)
    identical = distances_identical and np.array_equal(ids, ref_ids)
    differ = float(np.mean(np.any(ids != ref_ids, axis=1))) if same_shape and ids.size else 1.0
    if identical:
        text = "identical"
    elif distances_identical:
        text = f"distances identical, ids differ at ties ({100 * differ:.1f}% of queries)"
    else:
        text = f"recall@{k} {recall:.3f}"
        if engine.exact:
            text = f"DIFFERS from linear ({100 * differ:.1f}% of queries), {text}"
    if wrong:
        text += f"; reported distances WRONG for {100 * wrong:.1f}% of queries"
    return {"exactness": text, "identical": bool(identical), "distances_identical": bool(distances_identical),
            "ids_differ_share": differ, "recall": float(recall), "wrong_distances_share": wrong}


def skip_reason(name, size, args, faiss_missing):
    if name in FAISS_ENGINES and faiss_missing:
        return faiss_missing
    if name == "faiss-hnsw" and size > args.hnsw_max:
        return (f"HNSW construction over {size:,} codes takes too long on this machine "
                f"(--hnsw-max {args.hnsw_max:,})")
    return None


def measure_engine(name, db_rows, query_rows, reference, args):
    """One table row (dict) for an engine, and its answer for all the queries (ids, distances)."""
    row = {"engine": name}
    progress(f"{name}: building over {len(db_rows):,} codes ...")
    try:
        engine, seconds, kept, peak = build_measured(name, db_rows, args.bits, args.seed)
    except (MissingPackageError, UsageError) as error:
        progress(f"{name}: skipped: {error}")
        return {**row, "skipped": str(error)}, None
    row.update(build_s=seconds, nbytes=int(engine.nbytes), rss_growth_bytes=kept, rss_peak_growth_bytes=peak,
               exact_engine=bool(engine.exact))
    progress(f"{name}: built in {seconds:.2f} s; {args.single_queries} single queries ...")
    row["single_query_ms"] = single_query_ms(engine, query_rows, args.k, args.single_queries)
    row["qps"], answer = {}, None
    progress(f"{name}: {row['single_query_ms']:.3f} ms a query")
    for batch in args.batches:
        progress(f"{name}: one call of {batch} queries ...")
        start = time.perf_counter()
        found = engine.knn(query_rows[:batch], args.k)
        row["qps"][str(batch)] = batch / max(time.perf_counter() - start, 1e-12)
        if batch == len(query_rows):
            answer = found
    if answer is None:
        progress(f"{name}: all {len(query_rows)} queries for the exactness check ...")
        answer = engine.knn(query_rows, args.k)
    if name == "linear" or reference is not None:
        row.update(exactness(name, engine, *answer, reference or answer, query_rows, db_rows, args.k))
    else:
        row.update(exactness="n/a (no linear reference)", identical=None, recall=None)
    del engine
    gc.collect()
    return row, answer


# ------------------------------------------------------------------------------------------------------- tables
def _number(value, digits=2):
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if value >= 1 or value == 0 else f"{value:.{max(digits, 3)}f}"


def _mb(value):
    return "n/a" if value is None else f"{value / MB:.1f}"


def table(rows, batches):
    head = ["engine", "build s", "memory MB", "RSS +MB (peak)", "1-query ms"] + [f"q/s @{b}" for b in batches]
    lines = []
    for row in rows:
        if row.get("skipped"):
            lines.append([row["engine"], f"skipped: {row['skipped']}"])
            continue
        rss = f"{_mb(row['rss_growth_bytes'])} ({_mb(row['rss_peak_growth_bytes'])})"
        lines.append([row["engine"], _number(row["build_s"]), _mb(row["nbytes"]), rss,
                      _number(row["single_query_ms"], 3)] + [_number(row["qps"][str(b)], 1) for b in batches]
                     + [row["exactness"]])
    widths = [max([len(head[i])] + [len(line[i]) for line in lines if i == 0 or len(line) == len(head) + 1])
              for i in range(len(head))]
    out = ["  ".join([head[0].ljust(widths[0])] + [h.rjust(w) for h, w in zip(head[1:], widths[1:])]
                     + ["exactness vs linear"])]
    for line in lines:
        if len(line) == 2:
            out.append(f"{line[0].ljust(widths[0])}  {line[1]}")
        else:
            out.append("  ".join([line[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(line[1:-1], widths[1:])]
                                 + [line[-1]]))
    return "\n".join(out)


def ratios(rows, distribution, size, batches):
    """The run's two ratios, as a dict of values and printed lines."""
    by_name = {row["engine"]: row for row in rows if not row.get("skipped")}
    skipped = {row["engine"]: row["skipped"] for row in rows if row.get("skipped")}

    def missing(name):
        return f"n/a ({name} {'skipped: ' + skipped[name] if name in skipped else 'not in --engines'})"

    result, lines = {"distribution": distribution, "size": size}, []
    if "linear" in by_name and "mih" in by_name:
        speedup = by_name["linear"]["single_query_ms"] / max(by_name["mih"]["single_query_ms"], 1e-12)
        result["mih_speedup"] = speedup
        if distribution == "clustered" and size >= GOAL_SPEEDUP_SIZE:
            verdict = "met" if speedup >= GOAL_SPEEDUP else "NOT met"
            goal = f"goal >= {GOAL_SPEEDUP:g}x: {verdict}"
        else:
            goal = f"goal >= {GOAL_SPEEDUP:g}x is for clustered {GOAL_SPEEDUP_SIZE:,}"
        lines.append(f"MIH speed-up (linear 1-query ms / mih 1-query ms): {speedup:.2f}x ({goal})")
    else:
        lines.append(f"MIH speed-up: {missing('linear' if 'linear' not in by_name else 'mih')}")
    batch = RATIO_BATCH if RATIO_BATCH in batches else batches[0]
    if "mih" in by_name and "faiss-flat" in by_name:
        over = by_name["mih"]["qps"][str(batch)] / max(by_name["faiss-flat"]["qps"][str(batch)], 1e-12)
        result["mih_over_faiss_flat"], result["ratio_batch"] = over, batch
        verdict = "met" if over >= GOAL_OVER_FLAT else "NOT met"
        lines.append(f"mih q/s @{batch} / faiss-flat q/s @{batch}: {over:.2f}x "
                     f"(goal >= {GOAL_OVER_FLAT:g}: {verdict})")
    else:
        lines.append(f"mih / faiss-flat q/s @{batch}: {missing('mih' if 'mih' not in by_name else 'faiss-flat')}")
    return result, lines


# --------------------------------------------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="database codes")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--distributions", nargs="+", choices=DISTRIBUTIONS, default=list(DISTRIBUTIONS))
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(DEFAULT_ENGINES),
                        help="faiss ones are skipped, saying why, when faiss is not installed")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000, help="query codes (the exactness check uses all)")
    parser.add_argument("--single-queries", type=int, default=50, help="1-query calls for the median latency")
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1000], help="queries in one timed call")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip faiss-hnsw over more codes")
    parser.add_argument("--centres", type=int, default=10_000, help="clustered: centre codes")
    parser.add_argument("--flip", type=float, default=0.05, help="clustered: probability of flipping each bit")
    parser.add_argument("--faiss-threads", type=int, help="faiss's OpenMP threads (default: faiss's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write every row, the ratios and the machine as JSON")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.bits < 1 or args.k < 1 or args.queries < 1 or args.single_queries < 1:
        parser.error("--sizes, --bits, --k, --queries and --single-queries must be >= 1")
    if min(args.batches) < 1 or max(args.batches) > args.queries:
        parser.error(f"--batches must be between 1 and --queries ({args.queries})")
    if args.centres < 1 or not 0 <= args.flip <= 1:
        parser.error("--centres must be >= 1 and --flip within [0, 1]")
    args.engines = list(dict.fromkeys(args.engines))
    return args


def write_json(path, result):
    Path(path).write_text(json.dumps(result, indent=1))


def main(argv=None):
    args = parse_args(argv)
    if args.faiss_threads and faiss_status()[0]:
        import faiss
        faiss.omp_set_num_threads(args.faiss_threads)
    info = machine_info()
    print(describe_machine(info), flush=True)
    print(f"{args.bits}-bit codes, top-{args.k}, {args.queries} queries; engines: {', '.join(args.engines)}; "
          f"clustered = {args.centres:,} centres, flip p {args.flip:g} ({args.bits * args.flip:.1f} bits from "
          f"a centre); seed {args.seed}", flush=True)
    result = {"machine": info, "args": vars(args), "rows": [], "ratios": []}
    order = ["linear"] + [name for name in args.engines if name != "linear"]  # the reference answer comes first
    summary = []
    for distribution in args.distributions:
        for size in args.sizes:
            print(f"\n== {distribution}, {size:,} codes x {args.bits} bits", flush=True)
            start = time.perf_counter()
            db_rows, query_rows = make_codes(distribution, size, args.queries, args.bits, args.centres, args.flip,
                                             args.seed)
            progress(f"codes generated in {time.perf_counter() - start:.1f} s ({db_rows.nbytes / MB:.1f} MB)")
            rows, reference = [], None
            for name in order:
                reason = skip_reason(name, size, args, info["faiss_missing"])
                if reason:
                    progress(f"{name}: skipped: {reason}")
                    row = {"engine": name, "skipped": reason}
                elif name == "linear" and "linear" not in args.engines:
                    progress("linear: building, for the reference answers only ...")
                    reference = build_engine("linear", db_rows, args.bits).knn(query_rows, args.k)
                    gc.collect()
                    continue
                else:
                    row, answer = measure_engine(name, db_rows, query_rows, reference, args)
                    if name == "linear":
                        reference = answer
                row.update(distribution=distribution, size=size, bits=args.bits, k=args.k)
                rows.append(row)
            del db_rows, query_rows
            gc.collect()
            print(f"\n{distribution}, {size:,} codes x {args.bits} bits, top-{args.k} "
                  f"(memory MB: the engine's .nbytes; RSS +MB: the process's growth over the build, kept (peak)):")
            print(table(rows, args.batches))
            ratio, lines = ratios(rows, distribution, size, args.batches)
            for line in lines:
                print(line)
            summary += [f"{distribution} {size:,}: {line}" for line in lines]
            result["rows"] += rows
            result["ratios"].append(ratio)
            if args.json:
                write_json(args.json, result)
            sys.stdout.flush()
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["machine"]["load_average_end"] = load_end
    print("\nsummary (ratios measured in this run):")
    for line in summary:
        print(f"  {line}")
    print(f"load average at end {'n/a' if load_end is None else f'{load_end:.2f}'}")
    if args.json:
        write_json(args.json, result)
        print(f"rows written to {args.json}")
    return result


if __name__ == "__main__":
    main()
