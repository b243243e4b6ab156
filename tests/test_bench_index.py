"""benchmarks/bench_index.py: a tiny real run prints its tables and ratios, finds mih identical to the linear scan and
writes its rows as JSON; faiss rows are skipped with a reason when faiss is missing or HNSW is too large; the code
generators have the statistics the docstring says (tolerances from the binomial standard deviations; no timing is
asserted)."""
import json
import math

import numpy as np

from benchmarks import bench_index

TINY = ["--sizes", "3000", "--queries", "100", "--batches", "10", "100", "--single-queries", "5", "--k", "10"]
SIGMAS = 5  # a seeded draw outside 5 standard deviations is a bug, not chance (two-sided p ~ 6e-7)


def test_tiny_run_prints_tables_and_writes_json(tmp_path, capsys):
    path = tmp_path / "index.json"
    result = bench_index.main(TINY + ["--engines", "linear", "mih", "--json", str(path)])
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "numpy" in out
    for distribution in ("clustered", "uniform"):
        assert f"{distribution}, 3,000 codes x 64 bits, top-10" in out
    header = [line for line in out.splitlines() if line.startswith("engine ")]
    assert len(header) == 2
    for column in ("build s", "memory MB", "1-query ms", "q/s @10", "q/s @100", "exactness"):
        assert column in header[0]
    mih_lines = [line for line in out.splitlines() if line.split()[:1] == ["mih"] and line.split()[1] != "/"]
    assert len(mih_lines) == 2 and all(line.endswith("  identical") for line in mih_lines)
    assert out.count("MIH speed-up (linear 1-query ms / mih 1-query ms): ") >= 2
    assert "mih / faiss-flat q/s @100: n/a (faiss-flat not in --engines)" in out

    written = json.loads(path.read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    assert {"cpu", "cpus", "numpy", "load_average_start", "load_average_end"} <= set(written["machine"])
    assert [(row["distribution"], row["engine"]) for row in written["rows"]] == [
        ("clustered", "linear"), ("clustered", "mih"), ("uniform", "linear"), ("uniform", "mih")]
    for row in written["rows"]:
        assert row["size"] == 3000 and row["bits"] == 64 and row["k"] == 10 and row.get("skipped") is None
        assert row["build_s"] >= 0 and row["nbytes"] > 0 and row["single_query_ms"] > 0
        assert set(row["qps"]) == {"10", "100"} and all(value > 0 for value in row["qps"].values())
        assert {"rss_growth_bytes", "rss_peak_growth_bytes", "exactness", "recall"} <= set(row)
        assert row["identical"] is True and row["recall"] == 1.0
    assert [row["exactness"] for row in written["rows"] if row["engine"] == "mih"] == ["identical"] * 2
    assert [ratio["mih_speedup"] > 0 for ratio in written["ratios"]] == [True, True]


def test_faiss_rows_are_skipped_with_their_reason(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_index, "faiss_status", lambda: (None, "faiss is not installed (test)"))
    path = tmp_path / "index.json"
    bench_index.main(["--sizes", "500", "--queries", "20", "--batches", "20", "--single-queries", "2",
                      "--distributions", "uniform", "--json", str(path)])  # the default engines
    out = capsys.readouterr().out
    assert "faiss is not installed (test)" in out.splitlines()[0]
    lines = out.splitlines()
    for name in bench_index.FAISS_ENGINES:
        assert f"{name.ljust(len('faiss-flat'))}  skipped: faiss is not installed (test)" in lines
    assert "mih / faiss-flat q/s @20: n/a (faiss-flat skipped: faiss is not installed (test))" in out
    rows = json.loads(path.read_text())["rows"]
    assert [row["engine"] for row in rows] == list(bench_index.DEFAULT_ENGINES)
    assert [row.get("skipped") for row in rows] == [None, None] + ["faiss is not installed (test)"] * 3


def test_hnsw_over_the_limit_is_skipped(monkeypatch, capsys):
    monkeypatch.setattr(bench_index, "faiss_status", lambda: ("test", 1))  # nothing of faiss is built
    result = bench_index.main(["--sizes", "500", "--queries", "20", "--batches", "20", "--single-queries", "2",
                               "--distributions", "uniform", "--engines", "linear", "faiss-hnsw", "--hnsw-max", "499"])
    assert "HNSW construction over 500 codes takes too long on this machine (--hnsw-max 499)" in capsys.readouterr().out
    assert result["rows"][1]["engine"] == "faiss-hnsw" and "--hnsw-max 499" in result["rows"][1]["skipped"]


def distances_to_centres(n, bits, p, centres=300, seed=1, chunk=7000):
    """Hamming distance of every clustered code to its centre (n,), and the flips per bit position (bits,)."""
    centre_rows = bench_index.uniform_rows(centres, bits, np.random.default_rng(seed))
    rows, which = bench_index.clustered_rows(centre_rows, n, bits, p, np.random.default_rng(seed + 1), chunk=chunk,
                                             with_centres=True)
    flips = np.unpackbits(rows ^ centre_rows[which], axis=1, bitorder="little")[:, :bits]
    return flips.sum(axis=1), flips.mean(axis=0)


def clustered_statistics_hold(n, bits, p, expected_p):
    """Whether codes generated with flip probability p look like flip probability expected_p: the mean distance to
    the centre within SIGMAS binomial standard deviations of bits * expected_p, and every bit position's flip rate
    within SIGMAS of expected_p (Bonferroni-loose over positions, still far from chance)."""
    distances, per_position = distances_to_centres(n, bits, p)
    sd_mean = math.sqrt(bits * expected_p * (1 - expected_p) / n)
    sd_position = math.sqrt(expected_p * (1 - expected_p) / n)
    return (abs(distances.mean() - bits * expected_p) <= SIGMAS * sd_mean
            and bool(np.all(np.abs(per_position - expected_p) <= SIGMAS * sd_position)))


def test_clustered_codes_are_their_centre_with_p_of_the_bits_flipped():
    for bits in (64, 36):  # a whole word, and codes whose last byte is part padding
        assert clustered_statistics_hold(20_000, bits, 0.05, 0.05)
    # the check can fail: flips of probability 0.06 (or 0.04) are not taken for 0.05
    assert not clustered_statistics_hold(20_000, 64, 0.06, 0.05)
    assert not clustered_statistics_hold(20_000, 64, 0.04, 0.05)


def test_codes_keep_padding_bits_zero_and_queries_are_new_draws():
    db, queries = bench_index.make_codes("clustered", 5000, 200, 36, centres=50, flip=0.05, seed=0)
    assert db.shape == (5000, 5) and queries.shape == (200, 5) and db.dtype == np.uint8
    assert not np.any(db[:, -1] & 0xF0) and not np.any(queries[:, -1] & 0xF0)
    again_db, again_queries = bench_index.make_codes("clustered", 5000, 200, 36, centres=50, flip=0.05, seed=0)
    assert np.array_equal(db, again_db) and np.array_equal(queries, again_queries)  # seeded
    assert not np.array_equal(queries, db[:200])


def uniform_bit_means_hold(rows, bits, expected=0.5):
    """Every bit position's mean within SIGMAS standard deviations of a fair coin's (sd = 0.5 / sqrt(n))."""
    means = np.unpackbits(rows, axis=1, bitorder="little")[:, :bits].mean(axis=0)
    return bool(np.all(np.abs(means - expected) <= SIGMAS * math.sqrt(expected * (1 - expected) / len(rows))))


def test_uniform_codes_have_fair_bits():
    n = 40_000
    rows = bench_index.uniform_rows(n, 64, np.random.default_rng(3), chunk=9999)
    assert uniform_bit_means_hold(rows, 64)
    # the check can fail: clustered codes around a single centre are far from fair
    one_centre = bench_index.clustered_rows(rows[:1], n, 64, 0.05, np.random.default_rng(4))
    assert not uniform_bit_means_hold(one_centre, 64)
