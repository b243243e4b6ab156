"""export_model.py + deploy/inference_python/infer.py: the exported model's outputs equal the dynamic graph's (raw
within float rounding, tests/tolerances.py; codes identical), infer.py's retrieval equals predict.py's, both program
formats load, user errors."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import export_model
import predict
import tolerances
from conftest import assert_training_moved
from deploy.inference_python import infer
from deploy.inference_python.infer import HashInference
from test_predict import json_results, list_items, sha256, toy_checkpoint
from utils.datasets.image_list import build_transform
from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
from utils.hashing.codes import binarize
from utils.retrieval.search import load_batch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    root, model, ckpt = toy_checkpoint(base, 64, seed=1)
    model_dir = base / "inference"
    status = export_model.main(["--dataset", "toy", "--bit", "64", "--pretrained", str(ckpt),
                                "--save-inference-dir", str(model_dir)])
    assert status == 0
    images = [root / rel for rel, *_ in list_items(root / "database.txt")[:12]]
    batch = load_batch(images, build_transform(False, 72, 64))
    with paddle.no_grad():
        reference = model(paddle.to_tensor(batch)).numpy()
    # what the exported program may differ by: the fc7 difference between the dynamic graph and Paddle Inference
    # (plain kernels, oneDNN) on the batch shapes below, measured on fc7 alone and propagated through this model's
    # standardisation and hash layer (tests/tolerances.py)
    tolerance = {mkldnn: tolerances.measured_output_tolerance(model, batch, mkldnn, (None, 5), f"mkldnn={mkldnn}")
                 for mkldnn in (False, True)}
    return {"root": root, "ckpt": ckpt, "model_dir": model_dir, "images": images, "reference": reference,
            "base": base, "tolerance": tolerance, "model": model}


def test_export_writes_program_params_and_meta(exported):
    model_dir = exported["model_dir"]
    meta = json.loads((model_dir / "export_meta.json").read_text())
    pir = paddle.__version__.startswith("3") and os.environ.get("FLAGS_enable_pir_api", "1") not in ("0", "false")
    assert meta["model_file"] == ("inference.json" if pir else "inference.pdmodel")
    assert meta["params_file"] == "inference.pdiparams"
    assert (meta["bit"], meta["resize_size"], meta["crop_size"]) == (64, 72, 64)
    assert meta["mean"] == IMAGENET_MEAN and meta["std"] == IMAGENET_STD
    assert meta["input_name"] == "x" and meta["input_shape"] == [None, 3, 64, 64] and meta["input_dtype"] == "uint8"
    assert meta["files"] == {name: sha256(model_dir / name) for name in (meta["model_file"], "inference.pdiparams")}
    assert meta["source_checkpoint"]["sha256"] == sha256(exported["ckpt"])
    assert meta["source_checkpoint"]["path"] == str(Path(exported["ckpt"]).resolve())
    assert not list(model_dir.parent.glob(".inference.*"))  # the temporary export folder is gone


@pytest.mark.parametrize("mkldnn", [False, True], ids=["plain", "onednn"])
def test_inference_outputs_equal_the_dynamic_graph(exported, mkldnn):
    engine = HashInference(exported["model_dir"], enable_mkldnn=mkldnn)
    images = engine.preprocess(exported["images"])
    np.testing.assert_array_equal(images, load_batch(exported["images"], build_transform(False, 72, 64)))
    raw = engine.run(images)
    reference = exported["reference"]
    assert raw.shape == reference.shape == (12, 64)
    tolerances.assert_outputs_agree(raw, reference, exported["tolerance"][mkldnn], "exported program")
    np.testing.assert_array_equal(engine.postprocess(raw), binarize(reference))
    # batches of another size (the last one partial) give the same outputs
    split = engine.encode_paths(exported["images"], batch_size=5)
    tolerances.assert_outputs_agree(split, reference, exported["tolerance"][mkldnn], "exported program, batches of 5")


def test_legacy_program_format_loads_and_matches(exported, tmp_path):
    # Paddle 2.6 (and 3.x without PIR) writes inference.pdmodel; this Paddle writes it with FLAGS_enable_pir_api=0
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    proc = subprocess.run([sys.executable, "export_model.py", "--dataset", "toy", "--bit", "64", "--pretrained",
                           str(exported["ckpt"]), "--save-inference-dir", str(tmp_path / "legacy")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "legacy" / "export_meta.json").read_text())
    assert meta["model_file"] == "inference.pdmodel"
    engine = HashInference(tmp_path / "legacy", enable_mkldnn=False)
    raw = engine.run(engine.preprocess(exported["images"]))
    tolerances.assert_outputs_agree(raw, exported["reference"], exported["tolerance"][False], "legacy program")


def test_reexport_in_the_other_format_leaves_no_stale_program(exported, tmp_path):
    target = tmp_path / "inference"
    shutil.copytree(exported["model_dir"], target)
    current = json.loads((target / "export_meta.json").read_text())["model_file"]
    other = "inference.pdmodel" if current == "inference.json" else "inference.json"
    (target / other).write_bytes(b"stale program of an older export in the other format")
    assert export_model.main(["--dataset", "toy", "--bit", "64", "--pretrained", str(exported["ckpt"]),
                              "--save-inference-dir", str(target)]) == 0
    meta = json.loads((target / "export_meta.json").read_text())
    names = {p.name for p in target.iterdir()}
    assert other not in names and {"export_meta.json", "inference.pdiparams", meta["model_file"]} <= names


def test_infer_cli_prints_the_codes(exported, tmp_path, capsys):
    folder = tmp_path / "queries"
    folder.mkdir()
    for i, path in enumerate(exported["images"][:3]):
        shutil.copy(path, folder / f"q{i}.png")
    assert infer.main(["--model-dir", str(exported["model_dir"]), "--img", str(folder), "--json",
                       "--batch-size", "2", "--enable_mkldnn", "false"]) == 0
    rows = json_results(capsys.readouterr().out)
    expected = ["".join("1" if v > 0 else "0" for v in code) for code in binarize(exported["reference"][:3])]
    assert [Path(r["image"]).name for r in rows] == ["q0.png", "q1.png", "q2.png"]
    assert [r["code"] for r in rows] == expected and {r["bit"] for r in rows} == {64}


def test_infer_maps_a_zero_output_to_bit_one(exported, tmp_path, capsys, monkeypatch):
    """docs/protocol.md#network: the code is sign(o) with 0 mapped to +1, in infer.py as in training and predict.py."""
    raw = np.array([[0.0, -0.0, 1e-30, -1e-30, 2.5, -2.5]], np.float32)
    np.testing.assert_array_equal(HashInference.postprocess(raw), [[1, 1, 1, -1, 1, -1]])
    # the printed code of an image whose outputs are all exactly 0 is all ones
    monkeypatch.setattr(HashInference, "run", lambda self, images: np.zeros((len(images), self.bit), np.float32))
    assert infer.main(["--model-dir", str(exported["model_dir"]), "--img", str(exported["images"][0]), "--json",
                       "--enable_mkldnn", "false"]) == 0
    rows = json_results(capsys.readouterr().out)
    assert [r["code"] for r in rows] == ["1" * 64]


def strip_outputs(results):
    return [{k: v for k, v in entry.items() if k not in ("best_match_copy", "contact_sheet")} for entry in results]


def test_infer_retrieval_equals_predict(exported, tmp_path, capsys):
    root = exported["root"]
    dataset = ["--dataset", "toy", "--data-path", str(root), "--list-dir", str(root), "--num_workers", "0",
               "--json", "--topk", "6"]
    queries = []
    for path in exported["images"][:4]:
        queries += ["--img", str(path)]
    assert predict.main([*dataset, *queries, "--pretrained", str(exported["ckpt"]),
                         "--save_path", str(tmp_path / "predict")]) == 0
    by_predict = json_results(capsys.readouterr().out)

    # infer.py encodes the database itself ...
    assert infer.main([*dataset, *queries, "--model-dir", str(exported["model_dir"]),
                       "--save_path", str(tmp_path / "infer")]) == 0
    captured = capsys.readouterr()
    assert "encoding 34 images once" in captured.err
    by_infer = json_results(captured.out)
    assert strip_outputs(by_infer) == strip_outputs(by_predict)
    assert by_infer[0]["results"][0]["distance"] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "infer" / "database_code_64.npy"),
                                  np.load(tmp_path / "predict" / "database_code_64.npy"))

    # ... and accepts predict.py's cache, which the export's source checkpoint made
    assert infer.main([*dataset, *queries, "--model-dir", str(exported["model_dir"]),
                       "--save_path", str(tmp_path / "predict")]) == 0
    captured = capsys.readouterr()
    assert "(34 x 64 bits, cached)" in captured.err and "recomputing" not in captured.err
    assert strip_outputs(json_results(captured.out)) == strip_outputs(by_predict)

    # ... and encodes the database from the decoded evaluation cache to the same codes
    assert infer.main([*dataset, *queries, "--model-dir", str(exported["model_dir"]), "--cache_dir",
                       str(tmp_path / "images"), "--save_path", str(tmp_path / "infer_cached")]) == 0
    captured = capsys.readouterr()
    assert "encoding 34 images once" in captured.err and len(list((tmp_path / "images").glob("*eval72-64.npy"))) == 1
    assert strip_outputs(json_results(captured.out)) == strip_outputs(by_predict)
    np.testing.assert_array_equal(np.load(tmp_path / "infer_cached" / "database_code_64.npy"),
                                  np.load(tmp_path / "predict" / "database_code_64.npy"))


def test_bench_infer_reports_both_engines(exported):
    from benchmarks import bench_infer
    result = bench_infer.main(["--pretrained", str(exported["ckpt"]), "--model-dir", str(exported["model_dir"]),
                               "--batch-size", "4", "--iters", "1", "--warmup", "0"])
    for name in ("dygraph", "inference_plain", "inference_onednn"):
        assert result[name]["iters"] == 1 and result[name]["images_per_s"] > 0
    # the bench's batch (random pixels: fc7 and outputs larger than the toy images'): the largest difference within
    # the loosest of its outputs' rounding bounds, the plain engine's fc7 difference measured on it
    batch = np.random.default_rng(0).integers(0, 256, (4, 3, 64, 64), dtype=np.uint8)
    tolerance = tolerances.measured_output_tolerance(exported["model"], batch, False, what="bench batch")
    tolerances.assert_within("bench_infer, plain", result["inference_plain"]["max_abs_diff"], tolerance.max())


def test_bench_infer_ratios_divide_engine_speed_by_dygraph_speed(exported, monkeypatch, capsys):
    """The ratios are each engine's images/s over the dygraph's; speeds are stubbed (tests never time the machine):
    the dygraph is measured first, then the engines in the order oneDNN, plain."""
    from benchmarks import bench_infer
    speeds = iter([40.0, 120.0, 60.0])
    monkeypatch.setattr(bench_infer, "images_per_second", lambda fn, batch, iters, warmup: {
        "images_per_s": next(speeds), "seconds_per_batch": 0.1, "iters": iters})
    result = bench_infer.main(["--pretrained", str(exported["ckpt"]), "--model-dir", str(exported["model_dir"]),
                               "--batch-size", "2", "--iters", "1", "--warmup", "0"])
    assert (result["dygraph"]["images_per_s"], result["inference_onednn"]["images_per_s"],
            result["inference_plain"]["images_per_s"]) == (40.0, 120.0, 60.0)
    assert result["ratio_inference_onednn"] == 3.0 and result["ratio_inference_plain"] == 1.5
    out = capsys.readouterr().out
    assert "ratio inference without oneDNN / dygraph: 1.50x" in out
    assert "ratio inference (infer.py default, oneDNN) / dygraph: 3.00x" in out


def test_bench_images_per_second_counts_images_over_the_timed_calls(monkeypatch):
    from benchmarks import bench_infer
    clock, calls = iter([10.0, 14.0]), []
    monkeypatch.setattr(bench_infer.time, "perf_counter", lambda: next(clock, 99.0))
    result = bench_infer.images_per_second(calls.append, [0] * 8, iters=5, warmup=2)
    assert len(calls) == 7  # 2 untimed + 5 timed
    assert result == {"images_per_s": 5 * 8 / 4.0, "seconds_per_batch": 4.0 / 5, "iters": 5}


# --------------------------------------------------------------------------------------------------------- errors
def broken_export(exported, tmp_path):
    """A copy of the export whose meta says the weights should be something else."""
    target = tmp_path / "tampered"
    target.mkdir()
    meta = json.loads((exported["model_dir"] / "export_meta.json").read_text())
    for name in meta["files"]:
        (target / name).symlink_to(exported["model_dir"] / name)
    meta["files"]["inference.pdiparams"] = "0" * 64
    (target / "export_meta.json").write_text(json.dumps(meta))
    return target


@pytest.mark.parametrize("case", ["no folder", "no meta", "changed params", "missing image", "gpu on cpu build"])
def test_infer_user_errors(exported, tmp_path, capsys, case):
    image = str(exported["images"][0])
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    cases = {
        "no folder": (["--model-dir", str(tmp_path / "nowhere"), "--img", image],
                      r"--model-dir .*nowhere: folder not found; write it with export_model\.py"),
        "no meta": (["--model-dir", str(no_meta), "--img", image], r"has no export_meta\.json"),
        "changed params": (["--model-dir", str(broken_export(exported, tmp_path)), "--img", image],
                           r"inference\.pdiparams changed after the export"),
        "missing image": (["--model-dir", str(exported["model_dir"]), "--img", str(tmp_path / "x.jpg")],
                          r"--img .*x\.jpg: query image not found"),
        "gpu on cpu build": (["--model-dir", str(exported["model_dir"]), "--img", image, "--use_gpu"],
                             r"--use_gpu needs a CUDA build of Paddle"),
    }
    if case == "gpu on cpu build" and paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA: --use_gpu is valid here")
    argv, pattern = cases[case]
    assert infer.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ")
    assert re.search(pattern, captured.err), captured.err


def test_lite_chain(tmp_path):
    """scripts/lite_chain.sh trains, exports and runs every entry point (~30 s on 2 CPU cores)."""
    proc = subprocess.run(["bash", "scripts/lite_chain.sh"], cwd=REPO, env=dict(os.environ, OUT=str(tmp_path)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_training_moved(tmp_path / "train")
    assert re.search(r"^40 codes in .*infer_codes\.txt$", proc.stdout, re.M), proc.stdout[-3000:]  # the query folder
    assert "ok: same top-5 from both engines; rank 1 = the query, distance 0" in proc.stdout
    assert "lite chain passed" in proc.stdout


def test_infer_searches_an_index_built_by_the_exports_checkpoint(exported, tmp_path, capsys):
    """infer.py --index answers as predict.py --index does (ids, paths, distances); an index that another checkpoint
    built is refused, naming both models."""
    from test_index import run_main, tool
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, path in enumerate(exported["images"]):
        shutil.copy(path, photos / f"{i:02d}_{path.name}")
    flags = ["--bit", "64", "--crop-size", "64", "--resize-size", "72", "--num-workers", "0", "--device", "cpu",
             "--encoder", "dygraph"]
    index = tmp_path / "index"
    status, _, err = run_main(tool.main, "build", "--index", index, "--pretrained", exported["ckpt"], *flags, photos)
    assert status == 0, err
    queries = [arg for path in exported["images"][:3] for arg in ("--img", str(path))]
    search = [*queries, "--index", str(index), "--json", "--topk", "5"]
    assert predict.main([*search, "--save_path", str(tmp_path / "predict")]) == 0
    by_predict = json_results(capsys.readouterr().out)
    assert infer.main([*search, "--model-dir", str(exported["model_dir"]), "--save_path", str(tmp_path / "infer")]) == 0
    by_infer = json_results(capsys.readouterr().out)
    assert strip_outputs(by_infer) == strip_outputs(by_predict)
    assert [r["distance"] for r in by_infer[0]["results"]][0] == 0 and len(by_infer[0]["results"]) == 5
    assert all(Path(r["path"]).parent == photos for entry in by_infer for r in entry["results"])

    # an index of another checkpoint (the same network, its hash layer changed)
    from utils.train import checkpoint
    other = {name: value.numpy() for name, value in exported["model"].state_dict().items()}
    hash_weight = next(name for name in other if name.startswith("hash_layer") and name.endswith("weight"))
    other[hash_weight] = other[hash_weight][:, ::-1].copy()
    other_ckpt = checkpoint.save({name: paddle.to_tensor(value) for name, value in other.items()},
                                 tmp_path / "other_64.pdparams")
    status, _, err = run_main(tool.main, "build", "--index", tmp_path / "other_index", "--pretrained", other_ckpt,
                              *flags, photos)
    assert status == 0, err
    status, _, err = run_main(infer.main, *queries, "--model-dir", exported["model_dir"], "--index",
                              tmp_path / "other_index")
    assert status == 2 and "codes of two models cannot be compared" in err
    assert sha256(other_ckpt)[:12] in err and sha256(exported["ckpt"])[:12] in err
