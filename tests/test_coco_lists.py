"""COCO list builder (data/make_coco_lists.py) on a small COCO-format annotation pair, plus a check that
the official lists use the same alphabetical label order (skipped when the shared copies are absent)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_data_script

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


mcl = load_data_script("make_coco_lists")

# ids deliberately not in name order: zebra has the lowest id but the last name.
CATEGORIES = [
    {"id": 1, "name": "zebra", "supercategory": "animal"},
    {"id": 2, "name": "apple", "supercategory": "food"},
    {"id": 5, "name": "person", "supercategory": "person"},
    {"id": 9, "name": "dog", "supercategory": "animal"},
]
# alphabetical: 0 apple, 1 dog, 2 person, 3 zebra
TRAIN_IMAGES = {10: "a.jpg", 11: "b.jpg", 12: "c.jpg", 13: "d.jpg", 14: "e.jpg"}
TRAIN_ANNOTATIONS = [(10, 1), (10, 2), (11, 5), (13, 9), (13, 9), (14, 5)]  # c.jpg has none
VAL_IMAGES = {20: "v1.jpg", 21: "v2.jpg", 22: "v3.jpg", 23: "v4.jpg"}
VAL_ANNOTATIONS = [(20, 2), (22, 1), (22, 5), (22, 9), (23, 2)]  # v2.jpg has none
EXPECTED_LABELS = {
    "train2014/a.jpg": [1, 0, 0, 1],
    "train2014/b.jpg": [0, 0, 1, 0],
    "train2014/d.jpg": [0, 1, 0, 0],
    "train2014/e.jpg": [0, 0, 1, 0],
    "val2014/v1.jpg": [1, 0, 0, 0],
    "val2014/v3.jpg": [0, 1, 1, 1],
    "val2014/v4.jpg": [1, 0, 0, 0],
}

# COCO 2014's 80 categories with their real ids.
COCO_CATEGORIES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}


def _annotation_file(images, annotations, categories=CATEGORIES):
    return {
        "info": {"description": "test"},
        "images": [{"id": i, "file_name": name, "width": 64, "height": 48} for i, name in images.items()],
        "annotations": [{"id": k, "image_id": i, "category_id": c, "iscrowd": int(i == 14)}
                        for k, (i, c) in enumerate(annotations, 100)],
        "categories": categories,
    }


@pytest.fixture
def ann_files(tmp_path):
    train = tmp_path / "instances_train2014.json"
    val = tmp_path / "instances_val2014.json"
    train.write_text(json.dumps(_annotation_file(TRAIN_IMAGES, TRAIN_ANNOTATIONS)))
    val.write_text(json.dumps(_annotation_file(VAL_IMAGES, VAL_ANNOTATIONS)))
    return train, val


def build(ann_files, out_dir, seed=0, num_query=2, num_train=3):
    train, val = ann_files
    return mcl.build_coco_lists(train, val, out_dir, seed=seed, num_query=num_query, num_train=num_train,
                                allow_any_categories=True)


def read_rows(path):
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        rows.append((fields[0], [int(v) for v in fields[1:]]))
    return rows


def test_counts_and_pruning(ann_files, tmp_path):
    counts = build(ann_files, tmp_path / "lists")
    assert {k: v for k, v in counts.items() if k != "classes"} == {
        "images_total": 9, "images_without_category": 2, "images_kept": 7, "test": 2, "database": 5, "train": 3}
    assert counts["classes"] == ["apple", "dog", "person", "zebra"]
    test = [p for p, _ in read_rows(tmp_path / "lists" / "test.txt")]
    database = [p for p, _ in read_rows(tmp_path / "lists" / "database.txt")]
    assert sorted(test + database) == sorted(EXPECTED_LABELS)
    assert "train2014/c.jpg" not in test + database and "val2014/v2.jpg" not in test + database


def test_labels_are_alphabetical_and_multi_label(ann_files, tmp_path):
    build(ann_files, tmp_path / "lists")
    for name in ("train.txt", "test.txt", "database.txt"):
        for path, labels in read_rows(tmp_path / "lists" / name):
            assert labels == EXPECTED_LABELS[path], (name, path)


def test_splits_follow_the_protocol(ann_files, tmp_path):
    build(ann_files, tmp_path / "lists")
    train = [p for p, _ in read_rows(tmp_path / "lists" / "train.txt")]
    test = [p for p, _ in read_rows(tmp_path / "lists" / "test.txt")]
    database = [p for p, _ in read_rows(tmp_path / "lists" / "database.txt")]
    assert (len(train), len(set(train)), len(test), len(database)) == (3, 3, 2, 5)
    assert set(train) <= set(database)
    assert not set(test) & set(database)


def test_sampling_is_the_documented_procedure(ann_files, tmp_path):
    build(ann_files, tmp_path / "lists", seed=7)
    paths = sorted(EXPECTED_LABELS)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(paths))
    database = order[2:]
    train = database[rng.permutation(len(database))[:3]]
    assert [p for p, _ in read_rows(tmp_path / "lists" / "test.txt")] == [paths[i] for i in order[:2]]
    assert [p for p, _ in read_rows(tmp_path / "lists" / "database.txt")] == [paths[i] for i in database]
    assert [p for p, _ in read_rows(tmp_path / "lists" / "train.txt")] == [paths[i] for i in train]


def test_deterministic_per_seed(ann_files, tmp_path):
    build(ann_files, tmp_path / "a", seed=3)
    build(ann_files, tmp_path / "b", seed=3)
    build(ann_files, tmp_path / "c", seed=4)
    for name in ("train.txt", "test.txt", "database.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes()
               for n in ("train.txt", "test.txt", "database.txt"))


def test_real_coco_categories_give_the_spec_indices():
    categories = [{"id": i, "name": n} for i, n in COCO_CATEGORIES.items()]
    label_of_category, names = mcl.category_order([("instances.json", categories)])
    assert len(names) == 80
    expected = {"airplane": 0, "apple": 1, "backpack": 2, "elephant": 30, "person": 49, "skis": 59,
                "train": 73, "zebra": 79}
    assert {n: names.index(n) for n in expected} == expected
    assert label_of_category[1] == 49  # person: the lowest id, a late name
    assert label_of_category[90] == 71  # toothbrush, just before traffic light (72) and train (73)


def test_no_temporary_files_left(ann_files, tmp_path):
    build(ann_files, tmp_path / "lists")
    assert sorted(p.name for p in (tmp_path / "lists").iterdir()) == ["database.txt", "test.txt", "train.txt"]


def test_cli_prints_counts(ann_files, tmp_path, capsys):
    train, val = ann_files
    code = mcl.main(["--train-ann", str(train), "--val-ann", str(val), "--out-dir", str(tmp_path / "cli"),
                     "--num-query", "2", "--num-train", "3", "--allow-any-categories"])
    out = capsys.readouterr().out
    assert code == 0
    assert "images in train+val: 9, without any category (pruned): 2, kept: 7" in out
    assert "test.txt 2, database.txt 5, train.txt 3" in out


def test_error_missing_file(ann_files, tmp_path, capsys):
    _, val = ann_files
    with pytest.raises(FileNotFoundError, match="--train-ann: annotation file not found: .*nope.json"):
        mcl.build_coco_lists(tmp_path / "nope.json", val, tmp_path / "out")
    code = mcl.main(["--train-ann", str(tmp_path / "nope.json"), "--val-ann", str(val),
                     "--out-dir", str(tmp_path / "out")])
    assert code == 2
    assert "--train-ann: annotation file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_error_missing_key(ann_files, tmp_path, key):
    train, _ = ann_files
    broken = _annotation_file(VAL_IMAGES, VAL_ANNOTATIONS)
    del broken[key]
    val = tmp_path / "broken_val.json"
    val.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=f"--val-ann: .*broken_val.json has no '{key}' key"):
        mcl.build_coco_lists(train, val, tmp_path / "out", allow_any_categories=True)


def test_error_invalid_json(ann_files, tmp_path):
    train, _ = ann_files
    val = tmp_path / "truncated.json"
    val.write_text('{"images": [')
    with pytest.raises(ValueError, match="--val-ann: .*truncated.json is not valid JSON"):
        mcl.build_coco_lists(train, val, tmp_path / "out")


def test_error_category_count_without_flag(ann_files, tmp_path):
    train, val = ann_files
    with pytest.raises(ValueError, match="found 4 categories, expected 80 .*--allow-any-categories"):
        mcl.build_coco_lists(train, val, tmp_path / "out")


def test_error_categories_differ_between_files(ann_files, tmp_path):
    train, _ = ann_files
    other = _annotation_file(VAL_IMAGES, VAL_ANNOTATIONS, categories=CATEGORIES[:3] + [{"id": 9, "name": "cat"}])
    val = tmp_path / "other_val.json"
    val.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="define different categories"):
        mcl.build_coco_lists(train, val, tmp_path / "out", allow_any_categories=True)


def test_error_annotation_with_unknown_image_or_category(ann_files, tmp_path):
    train, _ = ann_files
    val = tmp_path / "bad_val.json"
    val.write_text(json.dumps(_annotation_file(VAL_IMAGES, VAL_ANNOTATIONS + [(99, 2)])))
    with pytest.raises(ValueError, match="annotation 105 refers to image id 99, which is not in 'images'"):
        mcl.build_coco_lists(train, val, tmp_path / "out", allow_any_categories=True)
    val.write_text(json.dumps(_annotation_file(VAL_IMAGES, VAL_ANNOTATIONS + [(20, 3)])))
    with pytest.raises(ValueError, match="annotation 105 has category id 3, which is not in 'categories'"):
        mcl.build_coco_lists(train, val, tmp_path / "out", allow_any_categories=True)


def test_error_too_few_images(ann_files, tmp_path):
    with pytest.raises(ValueError, match=r"--num-query \(5\) \+ --num-train \(3\) = 8 exceeds the 7 labelled images"):
        build(ann_files, tmp_path / "out", num_query=5, num_train=3)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------ the official lists use the alphabetical order

def _labels_of(list_path, rel_path):
    for line in list_path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields[0] == rel_path:
            return {j for j, v in enumerate(fields[1:]) if v == "1"}
    raise AssertionError(f"{rel_path} not in {list_path}")


def _shared_lists(folder):
    if not (folder / "train.txt").is_file():
        pytest.skip(f"shared COCO lists not found: {folder}")
    return folder


@pytest.mark.parametrize("folder", [SHARED / "coco_lite" / "lists", SHARED / "coco_lists"],
                         ids=["coco_lite", "official"])
def test_shared_lists_use_alphabetical_order(folder):
    folder = _shared_lists(folder)
    # COCO_val2014_000000403864 shows a train (73); COCO_train2014_000000060328 a skier: person 49, skis 59.
    assert _labels_of(folder / "test.txt", "val2014/COCO_val2014_000000403864.jpg") == {73}
    assert _labels_of(folder / "train.txt", "train2014/COCO_train2014_000000060328.jpg") == {49, 59}


def test_official_train_list_has_person_as_most_frequent_label():
    folder = _shared_lists(SHARED / "coco_lists")
    labels = np.array([[int(v) for v in line.split()[1:]]
                       for line in (folder / "train.txt").read_text().splitlines()])
    assert labels.shape == (10000, 80)
    assert int(labels.sum(axis=0).argmax()) == 49  # person: in about half of all COCO images
