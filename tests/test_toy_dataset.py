"""The generated toy dataset (utils/datasets/toy.py): determinism, labels, COCO-protocol splits, caching."""

import json

import numpy as np
import pytest
from PIL import Image

from utils.datasets import toy as toy_dataset
from utils.datasets.toy import MARKER_NAME, TOY_CLASSES, ensure_toy_dataset

SMALL = {"num_images": 60, "num_test": 10, "num_train": 25}


def read_list(path):
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        rows[fields[0]] = [int(v) for v in fields[1:]]
    return rows


def list_paths(path):
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory):
    return ensure_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", seed=0, **SMALL)


def test_same_seed_gives_identical_lists_and_images(tmp_path, small_toy):
    other = ensure_toy_dataset(tmp_path / "again", seed=0, **SMALL)
    for name in ("train.txt", "test.txt", "database.txt", "classes.txt"):
        assert (other / name).read_bytes() == (small_toy / name).read_bytes(), name
    for index in range(SMALL["num_images"]):
        rel = f"images/{index:06d}.png"
        assert np.array_equal(np.asarray(Image.open(other / rel)), np.asarray(Image.open(small_toy / rel))), rel


def test_other_seed_gives_other_data(tmp_path, small_toy):
    other = ensure_toy_dataset(tmp_path / "seed1", seed=1, **SMALL)
    assert (other / "test.txt").read_text() != (small_toy / "test.txt").read_text()
    first = "images/000000.png"
    assert not np.array_equal(np.asarray(Image.open(other / first)), np.asarray(Image.open(small_toy / first)))


def test_image_does_not_depend_on_dataset_size(tmp_path, small_toy):
    # Each image has its own seed, so a smaller run reproduces the first images of a larger one.
    smaller = ensure_toy_dataset(tmp_path / "smaller", seed=0, num_images=12, num_test=2, num_train=5)
    for index in (0, 5, 11):
        rel = f"images/{index:06d}.png"
        assert (smaller / rel).read_bytes() == (small_toy / rel).read_bytes()


def test_images_are_64px_rgb_png(small_toy):
    files = sorted((small_toy / "images").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(SMALL["num_images"])]
    for f in files[:10]:
        with Image.open(f) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))


def test_labels_have_one_to_three_classes_and_cover_all_classes(small_toy):
    rows = read_list(small_toy / "database.txt") | read_list(small_toy / "test.txt")
    labels = np.array(list(rows.values()))
    assert labels.shape == (SMALL["num_images"], len(TOY_CLASSES))
    assert set(np.unique(labels).tolist()) == {0, 1}
    per_image = labels.sum(axis=1)
    assert per_image.min() >= 1 and per_image.max() <= 3
    assert set(per_image.tolist()) == {1, 2, 3}
    assert (labels.sum(axis=0) > 0).all()


def test_lists_follow_the_coco_protocol(small_toy):
    train = list_paths(small_toy / "train.txt")
    test = list_paths(small_toy / "test.txt")
    database = list_paths(small_toy / "database.txt")
    assert (len(train), len(test), len(database)) == (25, 10, 50)
    assert len(set(train)) == 25 and len(set(test)) == 10 and len(set(database)) == 50
    assert set(train) <= set(database)
    assert not set(test) & set(database)
    assert set(test) | set(database) == {f"images/{i:06d}.png" for i in range(60)}
    # the same image carries the same labels in every list
    database_rows = read_list(small_toy / "database.txt")
    assert all(database_rows[p] == row for p, row in read_list(small_toy / "train.txt").items())


def test_lists_parse_with_the_training_parser(small_toy):
    from utils.datasets import image_list as datasets

    for name, n in (("train.txt", 25), ("test.txt", 10), ("database.txt", 50)):
        paths, labels = datasets.read_list_file(small_toy / name, small_toy, num_classes=10, check_exists=True)
        assert len(paths) == n and labels.shape == (n, 10) and labels.dtype == np.float32


def test_classes_file_and_marker(small_toy):
    assert (small_toy / "classes.txt").read_text().splitlines() == list(TOY_CLASSES)
    assert len(TOY_CLASSES) == 10
    marker = json.loads((small_toy / MARKER_NAME).read_text())
    assert marker["params"]["seed"] == 0
    assert marker["params"]["num_images"] == 60
    assert marker["params"]["generator_version"] == toy_dataset.GENERATOR_VERSION


def test_default_sizes():
    assert (toy_dataset.DEFAULT_NUM_IMAGES, toy_dataset.DEFAULT_NUM_TEST, toy_dataset.DEFAULT_NUM_TRAIN) == (
        2400, 400, 1000)


def test_complete_dataset_is_not_regenerated(tmp_path):
    root = ensure_toy_dataset(tmp_path / "toy", **SMALL)
    watched = [root / MARKER_NAME, root / "train.txt", root / "images" / "000007.png"]
    before = [p.stat().st_mtime_ns for p in watched]
    assert ensure_toy_dataset(tmp_path / "toy", **SMALL) == root
    assert [p.stat().st_mtime_ns for p in watched] == before


def test_missing_marker_triggers_rebuild(tmp_path):
    root = ensure_toy_dataset(tmp_path / "toy", **SMALL)
    image = root / "images" / "000003.png"
    original = image.read_bytes()
    image.write_bytes(b"damaged")
    (root / MARKER_NAME).unlink()
    ensure_toy_dataset(tmp_path / "toy", **SMALL)
    assert (root / MARKER_NAME).is_file()
    assert image.read_bytes() == original


def test_changed_parameters_trigger_rebuild(tmp_path):
    root = ensure_toy_dataset(tmp_path / "toy", **SMALL)
    ensure_toy_dataset(tmp_path / "toy", num_images=30, num_test=5, num_train=10)
    assert len(list_paths(root / "database.txt")) == 25
    assert len(list((root / "images").iterdir())) == 30
    assert json.loads((root / MARKER_NAME).read_text())["params"]["num_images"] == 30


def test_force_regenerates(tmp_path):
    root = ensure_toy_dataset(tmp_path / "toy", **SMALL)
    (root / "train.txt").write_text("stale\n")
    ensure_toy_dataset(tmp_path / "toy", force=True, **SMALL)
    assert len(list_paths(root / "train.txt")) == 25


def test_no_temporary_folders_left(tmp_path):
    ensure_toy_dataset(tmp_path / "toy", **SMALL)
    ensure_toy_dataset(tmp_path / "toy", seed=3, **SMALL)  # rebuild over an existing folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_failed_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_render = toy_dataset.render_toy_image

    def render_then_fail(rng, class_ids, size=64):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt  # stands in for an interruption half-way
        return real_render(rng, class_ids, size)

    monkeypatch.setattr(toy_dataset, "render_toy_image", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        ensure_toy_dataset(tmp_path / "toy", num_workers=1, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError, match=r"holds files the toy generator did not write \(notes.txt\)"):
        ensure_toy_dataset(root, **SMALL)
    assert (root / "notes.txt").read_text() == "keep me"


def test_invalid_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"num_test \(40\) \+ num_train \(30\) exceeds num_images \(60\)"):
        ensure_toy_dataset(tmp_path / "toy", num_images=60, num_test=40, num_train=30)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        ensure_toy_dataset(tmp_path / "toy", num_images=60, num_test=0, num_train=30)


def test_cli_generates_and_force_regenerates(tmp_path, capsys):
    root = tmp_path / "cli"
    argv = ["--root", str(root), "--num-images", "20", "--num-test", "4", "--num-train", "6"]
    assert toy_dataset.main(argv) == 0
    assert "20 images, train.txt 6, test.txt 4, database.txt 16" in capsys.readouterr().out
    (root / "test.txt").write_text("stale\n")
    assert toy_dataset.main(argv) == 0  # complete marker: untouched
    assert (root / "test.txt").read_text() == "stale\n"
    assert toy_dataset.main(argv + ["--force"]) == 0
    assert len(list_paths(root / "test.txt")) == 4


def test_concurrent_callers_end_with_one_complete_dataset(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = ("import sys; from utils.datasets.toy import ensure_toy_dataset; "
            "ensure_toy_dataset(sys.argv[1], num_images=60, num_test=10, num_train=25)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "toy")], cwd=repo,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    assert toy_dataset.is_complete(tmp_path / "toy", toy_dataset._params(0, 60, 10, 25))
    assert len(list((tmp_path / "toy" / "images").iterdir())) == 60
