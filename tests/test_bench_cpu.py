"""benchmarks/bench_cpu.py: every engine runs in its own process and the table divides the right speeds; speeds are
stubbed where the arithmetic is checked (tests never time the machine)."""
import importlib.util

import pytest

from benchmarks import bench_cpu

TORCH_MISSING = importlib.util.find_spec("torch") is None


def stub_speeds(monkeypatch, speeds):
    """measure_in_subprocess answers from {(engine, size): images/s}; None = not installed."""
    def fake(engine, size, args):
        value = speeds[engine, size]
        return None if value is None else {"images_per_s": value, "seconds_per_batch": 1.0, "iters": 3}
    monkeypatch.setattr(bench_cpu, "measure_in_subprocess", fake)


def test_table_ratios_and_goals(monkeypatch, capsys):
    stub_speeds(monkeypatch, {("dygraph", 64): 50.0, ("fast", 64): 300.0, ("torch", 64): 400.0,
                              ("dygraph", 224): 10.0, ("fast", 224): 60.0, ("torch", 224): 50.0})
    results = bench_cpu.main(["--threads", "2"])
    assert set(results) == {64, 224} and results[64]["fast"]["images_per_s"] == 300.0
    lines = capsys.readouterr().out.splitlines()
    assert "2 thread(s) for every engine" in lines[0] and "load average" in lines[0]
    row64 = next(line for line in lines if line.strip().startswith("64px")).split()
    row224 = next(line for line in lines if line.strip().startswith("224px")).split()
    # dygraph, fast, torch, fast/torch, dygraph/torch, fast/dygraph, goal
    assert row64[1:] == ["50.0", "300.0", "400.0", "0.75x", "0.12x", "6.00x", ">=", "0.8:", "NOT", "met"]
    assert row224[1:] == ["10.0", "60.0", "50.0", "1.20x", "0.20x", "6.00x", ">=", "1.0:", "met"]


def test_without_torch_its_column_is_skipped_with_a_message(monkeypatch, capsys):
    stub_speeds(monkeypatch, {("dygraph", 64): 50.0, ("fast", 64): 300.0, ("torch", 64): None})
    bench_cpu.main(["--threads", "1", "--sizes", "64"])
    out = capsys.readouterr().out
    assert "n/a" in out and "torch not installed" in out
    assert "torch is not installed (pip install torch, CPU build): its column is skipped" in out


@pytest.mark.skipif(TORCH_MISSING, reason="torch is not installed (pip install torch, CPU): the torch column")
def test_every_engine_runs_in_its_own_process(capsys):
    """A real run, tiny: one batch of 2 at 64 px per engine, each in its own process, one thread."""
    results = bench_cpu.main(["--threads", "1", "--sizes", "64", "--batch-size", "2", "--warmup", "1",
                              "--seconds", "0"])
    for engine in bench_cpu.ENGINES:
        assert results[64][engine]["iters"] == 3 and results[64][engine]["images_per_s"] > 0
    assert "64px" in capsys.readouterr().out
