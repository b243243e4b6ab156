"""The fast data path (issue 10): uint8 images normalised in the network, the decoded evaluation and training caches,
persistent loader workers with per-epoch crops, the default number of workers, and benchmarks/bench_data.py."""
import json
import logging
import os
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

import tolerances
from conftest import SHARED, assert_training_moved, run_cli, toy_args
from test_predict import toy  # noqa: F401 (the fixture: a toy set and a 64-bit checkpoint)
from utils.datasets import cache as datacache
from utils.datasets.image_list import (
    EpochBatchSampler,
    ImageList,
    build_loader,
    build_transform,
    load_rgb,
    shared_memory_fits,
)
from utils.retrieval.search import load_batch
from utils.runtime import dist

COCO_LITE = SHARED / "coco_lite"


def fixture_images(toy_root, count=6):
    """(data root, list path): the coco_lite JPEGs when ../shared has them (real COCO sizes), else toy PNGs."""
    if (COCO_LITE / "lists" / "train.txt").is_file():
        return COCO_LITE, COCO_LITE / "lists" / "train.txt"
    return toy_root, toy_root / "database.txt"


@pytest.fixture
def small_list(toy_root, tmp_path):
    """A list of the first 6 fixture images."""
    root, full = fixture_images(toy_root)
    path = tmp_path / "small.txt"
    path.write_text("\n".join(full.read_text().splitlines()[:6]) + "\n")
    return root, path


def float_transform(train, resize_size, crop_size):
    """The preprocessing before uint8: ToTensor + Normalize on the CPU."""
    from paddle.vision import transforms as T

    from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
    crop = [T.RandomCrop(crop_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(crop_size)]
    return T.Compose([T.Resize(resize_size), *crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# ------------------------------------------------------------------------------------------------- uint8 to the net
def test_uint8_input_gives_the_float_path_outputs_and_codes(small_list):
    from models import HashNet
    from models.hashnet import normalize_images
    from utils.hashing.codes import binarize
    root, list_path = small_list
    sizes = (256, 224) if root == COCO_LITE else (72, 64)
    paths = [root / line.split()[0] for line in list_path.read_text().splitlines()]
    old = np.stack([float_transform(False, *sizes)(load_rgb(p)).numpy() for p in paths])
    new = np.stack([build_transform(False, *sizes)(load_rgb(p)) for p in paths])
    assert new.dtype == np.uint8 and new.shape == old.shape
    paddle.seed(3)
    with paddle.utils.unique_name.guard():
        model = HashNet(64, init="kaiming")
    model.eval()
    with paddle.no_grad():
        reference, outputs = model(paddle.to_tensor(old)).numpy(), model(paddle.to_tensor(new)).numpy()
        # the network's normalisation does ToTensor + Normalize's float32 operations in their order, each rounded
        # exactly (IEEE 754), so the same floats enter the same kernels at the same batch shape: no rounding to allow
        np.testing.assert_array_equal(normalize_images(paddle.to_tensor(new)).numpy(), old)
    np.testing.assert_array_equal(outputs, reference)
    np.testing.assert_array_equal(binarize(outputs), binarize(reference))


# -------------------------------------------------------------------------------------------------- eval cache
def test_eval_cache_items_equal_the_jpeg_path(small_list, tmp_path, capsys):
    root, list_path = small_list
    dataset = ImageList(root, list_path, build_transform(False, 72, 64))
    cached = datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    err = capsys.readouterr().err  # stderr: predict.py's --json results own stdout
    assert "(missing): building 0.1 MB in" in err and str(tmp_path / "cache") in err  # size and place, first
    assert len(cached) == len(dataset)
    np.testing.assert_array_equal(cached.labels, dataset.labels)
    for i in range(len(dataset)):
        image, label, index = cached[(5, i)]
        np.testing.assert_array_equal(image, dataset[i][0])
        assert image.dtype == np.uint8 and index == i
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
    datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    assert "building" not in capsys.readouterr().err  # a valid cache is reused


def test_stale_eval_cache_is_rebuilt_never_used(small_list, tmp_path, capsys):
    root, list_path = small_list
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("lists"))
    first = data / list_path.read_text().split()[0]
    dataset = ImageList(data, list_path, build_transform(False, 72, 64))
    npy, sidecar = datacache.cache_files(tmp_path / "cache", dataset, "eval72-64")[:2]
    datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    capsys.readouterr()

    # an image replaced by another (its size changes): rebuilt, and the new pixels are served
    Image.fromarray(np.full((90, 120, 3), 7, np.uint8)).save(first)
    cached = datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    assert "stale: listed images changed (size or mtime)" in capsys.readouterr().err
    np.testing.assert_array_equal(cached[0][0], np.full((3, 64, 64), 7, np.uint8))

    # the same size, a new mtime (re-encoded in place): rebuilt
    os.utime(first, ns=(1, 1))
    datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    assert "stale: listed images changed" in capsys.readouterr().err

    # a truncated data file, a missing sidecar: rebuilt
    with open(npy, "r+b") as f:
        f.truncate(1000)
    datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    assert "has another size than it was written with" in capsys.readouterr().err
    sidecar.unlink()
    datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)
    assert "(missing): building" in capsys.readouterr().err

    # another list with the same path: rebuilt
    lines = list_path.read_text().splitlines()
    moved = tmp_path / "list.txt"
    moved.write_text("\n".join(lines[:3]) + "\n")
    ds_a = ImageList(data, moved, build_transform(False, 72, 64))
    datacache.cached_eval_dataset(ds_a, tmp_path / "cache", 72, 64)
    moved.write_text("\n".join(lines[1:4]) + "\n")
    ds_b = ImageList(data, moved, build_transform(False, 72, 64))
    cached = datacache.cached_eval_dataset(ds_b, tmp_path / "cache", 72, 64)
    assert "stale: the list changed" in capsys.readouterr().err
    np.testing.assert_array_equal(cached[0][0], ds_b[0][0])
    assert json.loads(sidecar.read_text())["num_items"] == len(dataset)


def test_cache_without_room_is_a_clear_error(small_list, tmp_path, monkeypatch):
    root, list_path = small_list
    dataset = ImageList(root, list_path, build_transform(False, 72, 64))
    monkeypatch.setattr(datacache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 5))
    with pytest.raises(RuntimeError, match=r"--cache_dir .*cache: the cache .*eval72-64\.npy needs 0\.1 MB and only "
                                           r"0\.0 MB are free"):
        datacache.cached_eval_dataset(dataset, tmp_path / "cache", 72, 64)


def test_codes_and_map_identical_with_and_without_the_eval_cache(eval_toy, tmp_path):
    from models import HashNet
    from utils.train import build, evaluation
    from utils.train.options import parse_args
    results, model = [], None
    for extra in ([], ["--cache_dir", str(tmp_path / "cache"), "--cache", "eval"]):
        cfg = parse_args(["--dataset", "toy", "--list-dir", str(eval_toy["list_dir"]), "--data-path",
                          str(eval_toy["data_path"]), "--bit", "16", "--num_workers", "1", "--output-dir",
                          str(tmp_path), *extra])
        datasets, loaders = build.build_data(cfg)
        if model is None:  # one model for both paths (train_eval, which fits the standardisation, is never cached)
            paddle.set_device("cpu")
            paddle.seed(0)
            with paddle.utils.unique_name.guard():
                model = HashNet(16, init="kaiming")
            build.fit_feature_standardization(model, loaders["train_eval"], logging.getLogger("test_datacache"))
        codes = [evaluation.encode(model, loaders[split])[0] for split in ("test", "database")]
        results.append((codes, evaluation.evaluate(model, loaders, cfg), datasets))
    (codes_jpeg, jpeg, _), (codes_cache, cached, datasets) = results
    assert isinstance(datasets["database"], datacache.CachedEvalList) and type(datasets["train"]) is ImageList
    for a, b in zip(codes_jpeg, codes_cache):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(codes_jpeg[1], axis=0)) > 1  # codes that differ between images, so equality means something
    assert cached["map"] == jpeg["map"] and cached["pr_curve"] == jpeg["pr_curve"]


def test_predict_database_codes_identical_from_the_eval_cache(toy, tmp_path, capsys):  # noqa: F811 (fixture)
    import predict
    from test_predict import json_results
    from test_predict import toy_args as predict_args
    query = str(toy["root"] / toy["root"].joinpath("database.txt").read_text().split()[0])
    runs = {}
    for name, extra in (("jpeg", []), ("cache", ["--cache_dir", str(tmp_path / "images")])):
        assert predict.main(predict_args(toy, tmp_path / name, "--json", "--img", query, *extra)) == 0
        runs[name] = json_results(capsys.readouterr().out)
    np.testing.assert_array_equal(np.load(tmp_path / "jpeg" / "database_code_64.npy"),
                                  np.load(tmp_path / "cache" / "database_code_64.npy"))
    assert [r["index"] for r in runs["jpeg"][0]["results"]] == [r["index"] for r in runs["cache"][0]["results"]]
    assert len(list((tmp_path / "images").glob("*-database-*-eval72-64.npy"))) == 1


# ----------------------------------------------------------------------------------------------- training cache
def test_training_cache_crops_are_bit_identical(small_list, tmp_path):
    root, list_path = small_list
    sizes = (256, 224) if root == COCO_LITE else (72, 64)
    dataset = ImageList(root, list_path, build_transform(True, *sizes), seed=11)
    cached = datacache.cached_train_dataset(dataset, tmp_path / "cache", *sizes)
    crops = set()
    for epoch in range(3):
        for i in range(len(dataset)):
            image, label, index = cached[(epoch, i)]
            np.testing.assert_array_equal(image, dataset[(epoch, i)][0], err_msg=f"epoch {epoch} item {i}")
            assert index == i and image.dtype == np.uint8
            crops.add(image.tobytes())
    assert len(crops) > len(dataset)  # the epochs drew different crops


# ------------------------------------------------------------------------------------------------------ loaders
def epoch_items(loader, dataset, epoch):
    dataset.set_epoch(epoch)
    return {int(i): img for images, _, index in loader for img, i in zip(images.numpy(), index.numpy())}


def test_persistent_workers_see_each_epoch(small_list):
    root, list_path = small_list
    dataset = ImageList(root, list_path, build_transform(True, 72, 64), seed=4)
    sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=2, shuffle=True)
    loader = build_loader(dataset, 1, batch_sampler=EpochBatchSampler(sampler, dataset), persistent=True,
                          image_bytes=3 * 64 * 64)
    assert loader._persistent_workers
    first, second = epoch_items(loader, dataset, 0), epoch_items(loader, dataset, 1)
    assert loader._iterator is not None  # the same workers served both epochs
    assert any(not np.array_equal(first[i], second[i]) for i in first)
    for epoch, items in ((0, first), (1, second)):  # what the main process's dataset gives for that epoch
        for i, image in items.items():
            np.testing.assert_array_equal(image, dataset[(epoch, i)][0])


def test_resume_is_exact_with_persistent_workers_and_the_training_cache(small_toy, tmp_path):
    """2 epochs (no workers, JPEGs) = 1 + resume + 1 (a persistent worker, training cache)."""
    common = ["--epoch", "2", "--eval_epoch", "2", "--de_step", "1", "--bit", "16"]
    straight = tmp_path / "straight"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, straight, *common)])
    assert_training_moved(straight)
    resumed = tmp_path / "resumed"
    fast = ["--num_workers", "1", "--cache_dir", str(tmp_path / "cache"), "--cache", "train"]
    run_cli(["main_single_gpu.py", *toy_args(small_toy, resumed, *common, *fast), "--epoch", "1"])
    run_cli(["main_single_gpu.py", *toy_args(small_toy, resumed, *common, *fast), "--resume",
             resumed / "last_16.pdckpt"])
    a, b = (paddle.load(str(run / "last_16.pdckpt")) for run in (straight, resumed))
    start = paddle.load(str(resumed / "last_16.pdckpt"))["config"]
    assert start["num_workers"] == 1 and start["cache_dir"] == str(tmp_path / "cache")
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key].numpy(), b["model"][key].numpy(), err_msg=key)
    np.testing.assert_array_equal(a["criterion"]["U"].numpy(), b["criterion"]["U"].numpy())


@pytest.mark.parametrize("cpus, local, expected", [(2, None, 2), (16, "2", 8), (16, "4", 4), (1, "2", 1),
                                                   (64, None, 8)])
def test_default_num_workers_shares_the_cpus(monkeypatch, cpus, local, expected):
    monkeypatch.setattr(dist.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    if local is None:
        monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    else:
        monkeypatch.setenv("PADDLE_LOCAL_SIZE", local)
    assert dist.default_num_workers() == expected


def test_shared_memory_only_when_the_batches_fit(monkeypatch):
    assert not shared_memory_fits(1, shm_path="/nonexistent/shm")
    monkeypatch.setattr("utils.datasets.image_list.shutil.disk_usage",
                        lambda path: shutil._ntuple_diskusage(0, 0, 64 << 20))
    assert shared_memory_fits(30 << 20) and not shared_memory_fits(40 << 20)  # docker's 64 MB /dev/shm


# ---------------------------------------------------------------------------------------------------- benchmark
def test_bench_data_tiny_reports_every_row_and_independent_ratios(toy_root, capsys):
    from benchmarks import bench_data
    result = bench_data.main(["--tiny"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert set(result["rows"]) == set(bench_data.ROWS)
    seconds = [result["rows"][name]["seconds"] for name in bench_data.ROWS]
    assert all(s > 0 for s in seconds) and len(set(seconds)) == len(seconds)  # one measurement per row
    for rows, ratios in ((result["rows"], result["ratios"]), (result["work_rows"], result["work_ratios"])):
        assert set(rows) == set(bench_data.ROWS)
        for name, (num, den, _) in bench_data.RATIOS.items():
            assert ratios[name] == pytest.approx(rows[num]["images_per_s"] / rows[den]["images_per_s"])
    assert all(result["rows"][name]["images"] > 0 for name in bench_data.ROWS)  # received through the loader
    e2e = result["end_to_end"]
    assert e2e["jpeg"]["map"] == e2e["cache"]["map"] and e2e["jpeg"]["num_database"] > 0
    coco = result["coco"]
    assert coco["ratio"] == pytest.approx(coco["jpeg"]["seconds"] / coco["cache"]["seconds"])
    assert lines[-1].startswith("estimated COCO evaluation: ") and "x; ratios per worker: eval cache/JPEG" in lines[-1]
    row_lines = [line.split() for line in lines if line.split()[0] in bench_data.ROWS]
    assert len(row_lines) == len(bench_data.ROWS) and all(len(fields) == 5 for fields in row_lines)  # both columns


def test_two_processes_share_one_eval_cache_and_encode_like_one_without(small_toy, tmp_path):
    """Under the launcher rank 0 builds the cache while rank 1 waits; both read their shards from it, and the gathered
    database outputs equal a single process's from the JPEGs."""
    from models import HashNet
    from utils.train import checkpoint
    paddle.seed(5)
    with paddle.utils.unique_name.guard():
        model = HashNet(64, init="kaiming")
    weights = checkpoint.save(model.state_dict(), tmp_path / "weights.pdparams")
    flags = ["--eval", "--pretrained", weights, "--batch-size", "16"]
    run_cli(["tests/dist_worker.py", *toy_args(small_toy, tmp_path / "one", *flags)])
    run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", tmp_path / "launch",
             "tests/dist_worker.py", *toy_args(small_toy, tmp_path / "two", *flags, "--cache_dir",
                                               tmp_path / "cache", "--cache", "eval")], timeout=900)
    one = np.load(tmp_path / "one" / "rank0.npz")
    built = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(built) == 4 and not [n for n in built if n.endswith(".tmp")]  # test + database: .npy and .json
    # the same pixels in batches of 16 of other images, the last of another size: rounding only, bounded a priori
    # for this network on the database images (tests/tolerances.py); a sign nearer 0 than that is rounding's
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    database = [small_toy["data_path"] / line.split()[0]
                for line in (small_toy["list_dir"] / "database.txt").read_text().splitlines()]
    model.eval()
    tolerance = tolerances.apriori_output_tolerance(
        model, load_batch(database, build_transform(False, config["resize_size"], config["crop_size"])))
    for rank in (0, 1):
        two = np.load(tmp_path / "two" / f"rank{rank}.npz")
        tolerances.assert_outputs_agree(two["db_raw"], one["db_raw"], tolerance, f"two processes, rank {rank}",
                                        all_codes=False)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["final"]["map"] for run in ("one", "two")]
    assert metrics[0] == metrics[1]
