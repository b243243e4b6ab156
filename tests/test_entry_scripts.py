"""The real entry scripts, each run once as a user runs them (a fresh process, the README's commands) on the small
toy lists: main_single_gpu.py, main_multi_gpu.py bare, under paddle.distributed.launch (2 CPU processes) and as two
nodes of one process each (docs/training.md#several-machines), then predict.py, export_model.py and
deploy/inference_python/infer.py on the trained run. Marked `entry`: CI runs this file under every Paddle version the
README names (`pytest -m entry` in a Paddle 2.6 venv, see .ci/run)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import REPO, assert_training_moved, free_port, run_cli, toy_args

pytestmark = pytest.mark.entry

BIT = 64
ONE_EPOCH = ["--bit", str(BIT), "--epoch", "1", "--eval_epoch", "1", "--plots", "true"]  # the default, as users run
PLOTS = ("pr_curve.png", "precision_at_n.png", "training_curve.png")
TIMEOUT = 900  # generous: a shared 2-core machine, and up to 3 Paddle processes at once


@pytest.fixture(scope="module")
def runs(small_toy, tmp_path_factory):
    """One toy epoch of each training entry point; {name: (run folder, CompletedProcess)}.

    --num_workers 1 on the single-process runs: the PNGs are decoded in a DataLoader worker, as users run it."""
    base = tmp_path_factory.mktemp("entry")
    out = {}
    for name, script in (("single", "main_single_gpu.py"), ("bare", "main_multi_gpu.py")):
        run = base / name
        out[name] = run, run_cli([script, *toy_args(small_toy, run, *ONE_EPOCH, "--num_workers", "1")],
                                 timeout=TIMEOUT)
    run = base / "launched"
    out["launched"] = run, run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                                    base / "launch_logs", "main_multi_gpu.py",
                                    *toy_args(small_toy, run, *ONE_EPOCH, "--batch-size", "16")], timeout=TIMEOUT)
    return out


def check_run(run, steps):
    """A finished one-epoch run: its PNG plots decode, one epochs.jsonl row, mAP above random codes'."""
    for name in PLOTS:
        with Image.open(run / name) as image:
            assert image.format == "PNG" and min(image.size) > 100, name
            image.load()  # decodes the whole file: a truncated or corrupt PNG fails here
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["steps"] == steps, rows
    assert np.isfinite(rows[0]["loss"])
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["num_query"] == 40 and final["num_database"] == 200
    assert final["map"] == pytest.approx(rows[0]["map"])
    # the frozen random backbone's fc7 already ranks the toy classes better than random codes do
    assert final["map"] > final["map_random_codes"] + 0.01, final
    return final


def moved_weights(run):
    """Training stepped: every training item's code is in the bank, the hash layer has a nonzero momentum."""
    state = paddle.load(str(run / f"last_{BIT}.pdckpt"))
    bank = np.asarray(state["criterion"]["U"])
    assert bank.shape == (128, BIT) and (np.abs(bank).sum(1) > 0).all()
    velocities = [np.asarray(v) for k, v in state["optimizer"].items() if "velocity" in k]
    assert velocities and all(np.abs(v).max() > 0 for v in velocities)
    return state["model"]


def test_main_single_gpu_trains_one_epoch_and_writes_its_plots(runs):
    run, proc = runs["single"]
    moved_weights(run)
    check_run(run, steps=4)  # 128 images / batch 32
    assert json.loads((run / "config.json").read_text())["bit"] == BIT


def test_bare_main_multi_gpu_without_gpus_is_the_single_process_run(runs):
    run, proc = runs["bare"]
    assert "0 GPU visible: running a single process" in proc.stdout + proc.stderr
    assert_training_moved(run)
    assert json.loads((run / "config.json").read_text())["batch_size"] == 32
    final = check_run(run, steps=4)
    assert final["map"] == pytest.approx(json.loads((runs["single"][0] / "metrics.json").read_text())["final"]["map"],
                                         abs=1e-6)
    bare, single = moved_weights(run), moved_weights(runs["single"][0])
    for name, value in single.items():
        np.testing.assert_allclose(np.asarray(bare[name]), np.asarray(value), atol=1e-5, err_msg=name)


def test_main_multi_gpu_under_the_launcher_runs_two_processes(runs):
    run, proc = runs["launched"]
    moved_weights(run)
    check_run(run, steps=4)  # 128 images / (2 processes x 16): each process saw half of the epoch
    logs = sorted(p.name for p in (run.parent / "launch_logs").glob("workerlog.*"))
    assert logs == ["workerlog.0", "workerlog.1"]
    assert "world size 2" in (run / f"log_train_{BIT}.txt").read_text()


def test_two_nodes_of_one_process_train_like_one_node_of_two(runs, small_toy, tmp_path):
    """docs/training.md#several-machines, tried on one machine: the same command on every node (two launcher
    invocations, --nnodes 2, a master on 127.0.0.1, one CPU process each, --rank 0 on the master's node) gives the
    launched run's memory bank, weights and mAP."""
    port, nodes = free_port(), tmp_path / "nodes"
    flags = [str(a) for a in toy_args(small_toy, nodes, *ONE_EPOCH, "--batch-size", "16", "--plots", "false")]
    commands = [[sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2", "--master", f"127.0.0.1:{port}",
                 "--rank", str(rank), "--nproc_per_node", "1", "--log_dir", str(tmp_path / f"node{rank}_logs"),
                 "main_multi_gpu.py", *flags] for rank in (0, 1)]
    procs = [subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for command in commands]
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {rank} exited {p.returncode}:\n{out[-3000:]}"
    assert "[rank 1]" in (tmp_path / "node1_logs" / "workerlog.0").read_text()  # node 1's process: global rank 1

    one_node = runs["launched"][0]
    two_nodes, reference = (paddle.load(str(run / f"last_{BIT}.pdckpt")) for run in (nodes, one_node))
    assert json.loads((nodes / "config.json").read_text())["world_size"] == 2
    assert np.abs(two_nodes["criterion"]["U"].numpy()).sum(1).min() > 0  # every item written
    np.testing.assert_array_equal(two_nodes["criterion"]["U"].numpy(), reference["criterion"]["U"].numpy())
    for key, value in reference["model"].items():
        np.testing.assert_array_equal(two_nodes["model"][key].numpy(), value.numpy(), err_msg=key)
    maps = [json.loads((run / "metrics.json").read_text())["final"]["map"] for run in (nodes, one_node)]
    assert maps[0] == maps[1] and maps[0] > 0


@pytest.fixture(scope="module")
def retrieval(runs, small_toy, tmp_path_factory):
    """predict.py and infer.py (on export_model.py's export) for 3 database images, with the single run's weights."""
    base = tmp_path_factory.mktemp("retrieval")
    run = runs["single"][0]
    lines = (small_toy["list_dir"] / "database.txt").read_text().splitlines()
    picks = [0, 57, 199]
    images = [str(Path(small_toy["data_path"]) / lines[i].split()[0]) for i in picks]
    data = ["--dataset", "toy", "--data-path", small_toy["data_path"], "--list-dir", small_toy["list_dir"],
            "--batch-size", "32", "--num_workers", "0", "--topk", "5"]
    predicted = run_cli(["predict.py", "--bit", BIT, "--pretrained", run, "--save_path", base / "predict",
                         "--img", *images, *data, "--json"], timeout=TIMEOUT)
    export = base / "inference"
    run_cli(["export_model.py", "--dataset", "toy", "--bit", BIT, "--pretrained", run, "--save-inference-dir",
             export], timeout=TIMEOUT)
    infer = ["deploy/inference_python/infer.py", "--model-dir", export, "--img", *images, "--json",
             "--enable_mkldnn", "false"]
    codes = run_cli([*infer, "--codes-only"], timeout=TIMEOUT)  # an export of a run folder searches by default
    inferred = run_cli([*infer, *data, "--save_path", base / "infer"], timeout=TIMEOUT)
    return {"picks": picks, "images": images, "predict": jsons(predicted.stdout), "infer_codes": jsons(codes.stdout),
            "infer": jsons(inferred.stdout), "db_codes": np.load(base / "predict" / f"database_code_{BIT}.npy"),
            "export": export}


def jsons(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


def test_predict_finds_each_database_image_at_distance_zero(retrieval):
    assert [Path(e["query"]).resolve() for e in retrieval["predict"]] == [Path(p).resolve()
                                                                         for p in retrieval["images"]]
    for entry, own in zip(retrieval["predict"], retrieval["picks"]):
        assert entry["bit"] == BIT and len(entry["results"]) == 5
        assert entry["results"][0]["distance"] == 0
        same_code = (retrieval["db_codes"] == retrieval["db_codes"][own]).all(1).sum()
        if same_code <= 5:  # its own row is in the top 5 unless more than 5 database codes tie with it at 0
            assert own in [r["index"] for r in entry["results"] if r["distance"] == 0]


def test_export_then_infer_gives_predicts_codes_and_rankings(retrieval):
    assert (retrieval["export"] / "export_meta.json").is_file()
    rows = retrieval["infer_codes"]
    assert [Path(r["image"]).resolve() for r in rows] == [Path(p).resolve() for p in retrieval["images"]]
    expected = ["".join("1" if v > 0 else "0" for v in retrieval["db_codes"][i]) for i in retrieval["picks"]]
    assert [r["code"] for r in rows] == expected  # infer's codes equal the ones predict.py cached
    for ours, theirs in zip(retrieval["infer"], retrieval["predict"]):
        assert [(r["index"], r["distance"]) for r in ours["results"]] == \
               [(r["index"], r["distance"]) for r in theirs["results"]]


def test_zlib_users_work_after_importing_paddle_first():
    """utils/runtime/before_paddle.py, imported first, keeps the system zlib's calls inside it: on Paddle 2.6, without
    it, `import paddle` before any other zlib user makes PNG writing, zlib.compress and np.savez_compressed segfault."""
    code = textwrap.dedent("""
        import utils.runtime.before_paddle
        import paddle.distributed
        import io, zlib
        import numpy as np
        from PIL import Image
        assert zlib.decompress(zlib.compress(b"hashnet" * 100)) == b"hashnet" * 100
        pixels = np.arange(192, dtype=np.uint8).reshape(8, 8, 3)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        buf.seek(0)
        assert (np.asarray(Image.open(buf)) == pixels).all()
        buf = io.BytesIO()
        np.savez_compressed(buf, a=pixels)
        buf.seek(0)
        assert (np.load(buf)["a"] == pixels).all()
        print("zlib ok")
    """)
    assert "zlib ok" in run_cli(["-c", code]).stdout
