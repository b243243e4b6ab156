"""Build the MS-COCO hashing lists (train.txt, test.txt, database.txt) from the COCO 2014 annotations.

Protocol (docs/protocol.md#ms-coco-protocol): the images of train2014 and val2014 together, minus every image without
any annotation (122,218 remain for real COCO); 5,000 random queries (test.txt); all other images form the database
(database.txt); 10,000 random database images form the training set (train.txt).

List line: `<train2014|val2014>/<file_name> <80 space-separated 0/1 labels>`. Label j is the j-th of the
categories sorted ALPHABETICALLY BY COCO NAME (not by category id): 0 airplane, 1 apple, 2 backpack, ...,
49 person, ..., 59 skis, ..., 73 train, ..., 79 zebra. The official lists use this order.
An image gets label j when at least one of its annotations (crowd annotations included) has that category.

Sampling, exactly (so a rebuild is reproducible for a seed):
  1. the kept images are sorted by their list path ("train2014/..." sorts before "val2014/...");
  2. rng = numpy.random.default_rng(seed); order = rng.permutation(n);
  3. test = order[:num_query]; database = order[num_query:] (in that order);
  4. train = database[rng.permutation(len(database))[:num_train]] (same rng, drawn after step 2).
Lines are written in the sampled order, as the official lists are.

The official lists (the ones the seed and DeepHash-pytorch use) were drawn once with another random
generator, so no rebuild reproduces them: a rebuild has the same structure and label order but other
queries and training images, and the mAP moves slightly. To compare with published numbers use the
official lists; docs/datasets.md#ms-coco says where to get them. This script is for when they are unavailable.

Usage:
  python data/make_coco_lists.py --train-ann annotations/instances_train2014.json \\
      --val-ann annotations/instances_val2014.json --out-dir data/coco [--seed 0]
"""

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as `python data/make_coco_lists.py`, sys.path[0] is data/
    sys.path.insert(0, str(PROJECT_ROOT))

from utils.datasets.splits import LIST_FILES  # noqa: E402
from utils.runtime.errors import MissingFileError, UsageError  # noqa: E402
from utils.runtime.failure import run_cli  # noqa: E402

COCO_NUM_CATEGORIES = 80


def load_annotation_file(path, flag):
    """Read one COCO instances JSON and check it has what the lists need. `flag` names the CLI option."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{flag}: annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag}: {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{flag}: {path} must hold a JSON object with 'images', 'annotations' and "
                         f"'categories', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UsageError(f"{flag}: {path} has no '{key}' key; expected a COCO instances file "
                             f"(instances_train2014.json / instances_val2014.json)")
        if not isinstance(data[key], list):
            raise UsageError(f"{flag}: {path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def category_order(categories_per_file, allow_any_categories=False):
    """Map category id -> label index (alphabetical by name). categories_per_file: [(source, categories)]."""
    reference_source, reference = None, None
    for source, categories in categories_per_file:
        id_to_name = {}
        for cat in categories:
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise UsageError(f"{source}: every category needs 'id' and 'name', got {cat!r}")
            if cat["id"] in id_to_name:
                raise UsageError(f"{source}: category id {cat['id']} appears twice")
            id_to_name[cat["id"]] = cat["name"]
        if reference is None:
            reference_source, reference = source, id_to_name
        elif id_to_name != reference:
            raise UsageError(f"{source} and {reference_source} define different categories; both must be "
                             f"COCO 2014 instances files of the same release")
    names = sorted(reference.values())
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"{reference_source}: category names must be unique, duplicated: {duplicates}")
    if len(names) != COCO_NUM_CATEGORIES and not allow_any_categories:
        raise UsageError(f"{reference_source}: found {len(names)} categories, expected {COCO_NUM_CATEGORIES} "
                         f"for COCO 2014 (pass --allow-any-categories for other annotation sets)")
    index_of_name = {name: i for i, name in enumerate(names)}
    return {cat_id: index_of_name[name] for cat_id, name in reference.items()}, names


def collect_labelled_images(data, prefix, label_of_category, source):
    """[(rel_path, label_indices)] for the images of one file that carry at least one annotation."""
    path_of_image = {}
    for image in data["images"]:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise UsageError(f"{source}: every image needs 'id' and 'file_name', got {image!r}")
        if image["id"] in path_of_image:
            raise UsageError(f"{source}: image id {image['id']} appears twice")
        path_of_image[image["id"]] = f"{prefix}/{image['file_name']}"
    labels_of_image = {}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise UsageError(f"{source}: every annotation needs 'image_id' and 'category_id', got {ann!r}")
        if ann["image_id"] not in path_of_image:
            raise UsageError(f"{source}: annotation {ann.get('id', '?')} refers to image id {ann['image_id']}, "
                             f"which is not in 'images'")
        if ann["category_id"] not in label_of_category:
            raise UsageError(f"{source}: annotation {ann.get('id', '?')} has category id {ann['category_id']}, "
                             f"which is not in 'categories'")
        labels_of_image.setdefault(ann["image_id"], set()).add(label_of_category[ann["category_id"]])
    return [(path_of_image[i], sorted(labels)) for i, labels in labels_of_image.items()]


def split_indices(num_images, num_query, num_train, seed):
    """(test, database, train) index arrays into the path-sorted image list; see the module docstring."""
    if num_query < 1 or num_train < 1:
        raise UsageError(f"--num-query ({num_query}) and --num-train ({num_train}) must be >= 1")
    if num_query + num_train > num_images:
        raise UsageError(f"--num-query ({num_query}) + --num-train ({num_train}) = {num_query + num_train} "
                         f"exceeds the {num_images} labelled images; training images are drawn from the "
                         f"images that are not queries")
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_images)
    test = order[:num_query]
    database = order[num_query:]
    train = database[rng.permutation(len(database))[:num_train]]
    return test, database, train


def _format_line(rel_path, label_indices, num_classes):
    labels = ["0"] * num_classes
    for j in label_indices:
        labels[j] = "1"
    return f"{rel_path} {' '.join(labels)}\n"


def write_lists_atomically(out_dir, contents):
    """Write {file name: text}; every file goes to a temp name first and all are renamed at the end."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temps = {}
    try:
        for name, text in contents.items():
            temps[name] = out_dir / f".{name}.tmp-{tag}"
            temps[name].write_text(text, encoding="utf-8")
        for name, temp in temps.items():
            os.replace(temp, out_dir / name)
    finally:
        for temp in temps.values():
            if temp.exists():
                temp.unlink()


def build_coco_lists(train_ann, val_ann, out_dir, seed=0, num_query=5000, num_train=10000,
                     allow_any_categories=False):
    """Write train.txt, test.txt, database.txt into out_dir; returns a dict of counts and class names."""
    train_data = load_annotation_file(train_ann, "--train-ann")
    val_data = load_annotation_file(val_ann, "--val-ann")
    label_of_category, class_names = category_order(
        [(str(train_ann), train_data["categories"]), (str(val_ann), val_data["categories"])],
        allow_any_categories)

    train_images = collect_labelled_images(train_data, "train2014", label_of_category, str(train_ann))
    val_images = collect_labelled_images(val_data, "val2014", label_of_category, str(val_ann))
    images = sorted(train_images + val_images)
    num_total = len(train_data["images"]) + len(val_data["images"])

    test, database, train = split_indices(len(images), num_query, num_train, seed)
    num_classes = len(class_names)
    lines = [_format_line(path, labels, num_classes) for path, labels in images]
    write_lists_atomically(out_dir, {
        LIST_FILES["train"]: "".join(lines[i] for i in train),
        LIST_FILES["test"]: "".join(lines[i] for i in test),
        LIST_FILES["database"]: "".join(lines[i] for i in database),
    })
    return {
        "images_total": num_total,
        "images_without_category": num_total - len(images),
        "images_kept": len(images),
        "test": len(test),
        "database": len(database),
        "train": len(train),
        "classes": class_names,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build COCO hashing lists (docs/protocol.md#ms-coco-protocol).")
    parser.add_argument("--train-ann", required=True, help="path to instances_train2014.json")
    parser.add_argument("--val-ann", required=True, help="path to instances_val2014.json")
    parser.add_argument("--out-dir", required=True, help="folder for train.txt, test.txt, database.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-query", type=int, default=5000)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--allow-any-categories", action="store_true",
                        help="accept a category count other than 80 (small test annotation sets)")
    args = parser.parse_args(argv)

    def build(_argv):
        counts = build_coco_lists(args.train_ann, args.val_ann, args.out_dir, seed=args.seed,
                                  num_query=args.num_query, num_train=args.num_train,
                                  allow_any_categories=args.allow_any_categories)
        print(f"images in train+val: {counts['images_total']}, without any category (pruned): "
              f"{counts['images_without_category']}, kept: {counts['images_kept']}")
        print(f"wrote {args.out_dir}: test.txt {counts['test']}, database.txt {counts['database']}, "
              f"train.txt {counts['train']} ({len(counts['classes'])} classes, alphabetical: "
              f"0 {counts['classes'][0]} ... {len(counts['classes']) - 1} {counts['classes'][-1]})")

    return run_cli(build)


if __name__ == "__main__":
    sys.exit(main())
