"""List parsing with validation, image decoding, the dataset's items and its seeded augmentation."""
import numpy as np
import pytest
from PIL import Image

from utils.datasets.image_list import (
    ImageList,
    build_datasets,
    build_transform,
    dataset_lists,
    load_rgb,
    read_list_file,
)


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    return tmp_path


def test_reads_paths_and_labels(root):
    lst = write(root / "l.txt", "im0.png 1 0 1\n\nim1.png 0 0 0\n")
    paths, labels = read_list_file(lst, root, check_exists=True)
    assert paths == ["im0.png", "im1.png"]
    np.testing.assert_array_equal(labels, [[1, 0, 1], [0, 0, 0]])
    assert labels.dtype == np.float32


@pytest.mark.parametrize("text, message", [
    ("im0.png 1 0 1\nim1.png 0 1\n", r"l\.txt:2: expected 3 labels after the path, got 2"),
    ("im0.png 1 0 2\n", r"l\.txt:1: labels must be 0 or 1, got '2'"),
    ("im0.png\n", r"l\.txt:1: expected '<image path> <0/1 labels...>'"),
    ("\n\n", r"list file is empty"),
])
def test_malformed_lists_name_file_and_line(root, text, message):
    with pytest.raises(ValueError, match=message):
        read_list_file(write(root / "l.txt", text))


def test_num_classes_is_enforced(root):
    with pytest.raises(ValueError, match=r"l\.txt:1: expected 80 labels after the path, got 3"):
        read_list_file(write(root / "l.txt", "im0.png 1 0 1\n"), num_classes=80)


def test_missing_images_are_listed_with_lines(root):
    lst = write(root / "l.txt", "im0.png 1\nnope.png 0\nim1.png 1\ngone/x.jpg 1\n")
    with pytest.raises(FileNotFoundError, match=r"2 of 4 images listed in .*l\.txt are missing") as err:
        read_list_file(lst, root, check_exists=True)
    assert "line 2: nope.png" in str(err.value) and "line 4: gone/x.jpg" in str(err.value)
    assert "data/check_data.py" in str(err.value)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "I;16"])
def test_any_mode_loads_as_rgb(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    Image.new(mode, (7, 5)).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (7, 5)


def test_undecodable_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(RuntimeError, match=r"cannot decode image .*broken\.jpg"):
        load_rgb(bad)


def test_items_and_seeded_augmentation(root):
    lst = write(root / "l.txt", "".join(f"im{i}.png {i % 2} 1\n" for i in range(4)))
    ds = ImageList(root, lst, build_transform(True, resize_size=36, crop_size=32), seed=3)
    image, label, index = ds[2]
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8 and list(label) == [0, 1] and index == 2
    again = ImageList(root, lst, build_transform(True, resize_size=36, crop_size=32), seed=3)
    np.testing.assert_array_equal(np.asarray(ds[1][0]), np.asarray(again[1][0]))  # same (seed, epoch, index)
    crops = set()
    for epoch in range(8):
        again.set_epoch(epoch)
        crops.add(np.asarray(again[1][0]).tobytes())
    assert len(crops) > 1  # a new epoch draws new crops


def test_dataset_folder_needs_three_lists(tmp_path):
    write(tmp_path / "train.txt", "a 1\n")
    with pytest.raises(FileNotFoundError, match="needs train.txt, test.txt and database.txt.*test.txt"):
        dataset_lists("mine", tmp_path)


def test_build_datasets_reads_classes_from_lists(root):
    for split in ("train", "test", "database"):
        write(root / f"{split}.txt", "im0.png 1 0 0 1 0\nim1.png 0 1 0 0 0\n")
    ds = build_datasets("mine", root, 36, 32, list_dir=root)
    assert ds["train"].labels.shape == (2, 5) and len(ds["database"]) == 2
    write(root / "test.txt", "im0.png 1 0 0\n")
    with pytest.raises(ValueError, match=r"test\.txt:1: expected 5 labels"):
        build_datasets("mine", root, 36, 32, list_dir=root)


def test_rgb_jpeg_is_returned_decoded_without_a_copy_and_equal_to_convert(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "x.jpg"
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path, quality=90)
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB"))
    loaded = load_rgb(path)
    path.unlink()  # the pixels were decoded before the file was closed
    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded), expected)


def test_truncated_rgb_jpeg_is_refused_naming_it(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(RuntimeError, match=r"cannot decode image .*cut\.jpg"):
        load_rgb(path)


def test_crop_larger_than_resize_is_refused_naming_both_flags(tmp_path):
    from utils.train.options import parse_args
    with pytest.raises(ValueError, match=r"^--crop_size 300 is larger than --resize_size 256"):
        parse_args(["--dataset", "toy", "--output-dir", str(tmp_path), "--resize_size", "256", "--crop_size", "300"])


def test_a_decoded_dataset_is_read_without_loader_workers(root):
    """The evaluation cache is a memory copy per item: handing its batches over from a worker process would cost more
    than the read (benchmarks/bench_data.py), so its loader runs none; decoding datasets keep the workers asked for."""
    from utils.datasets.cache import CachedEvalList
    from utils.datasets.image_list import build_loader
    lst = write(root / "l.txt", "".join(f"im{i}.png 1\n" for i in range(4)))
    jpeg = ImageList(root, lst, build_transform(False, 36, 32))
    assert build_loader(jpeg, 2, batch_size=2).num_workers == 2
    assert CachedEvalList.decoded and build_loader(CachedEvalList(jpeg, root / "unused.npy"), 2).num_workers == 0


def product_modules():
    """The project's Python files (not tests, benchmarks, nor the ignored tmp/ and output/ folders)."""
    from conftest import REPO
    skip = ("tests", "benchmarks", "tmp", "output")
    return [p for p in REPO.rglob("*.py") if p.relative_to(REPO).parts[0] not in skip and "/." not in p.as_posix()]


def test_the_split_names_are_defined_once_and_every_list_writer_and_reader_uses_them(tmp_path):
    """utils/datasets/splits.py is the only definition of LIST_NAMES; the toy set, the COCO list builder, the checker
    and the loader name their list files from it."""
    import ast

    from conftest import REPO, load_data_script
    from utils.datasets.splits import LIST_FILES, LIST_NAMES
    from utils.datasets.toy import ensure_toy_dataset
    defined = sorted(p.relative_to(REPO).as_posix() for p in product_modules()
                     for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))) if isinstance(node, ast.Assign)
                     and any(getattr(target, "id", None) == "LIST_NAMES" for target in node.targets))
    assert defined == ["utils/datasets/splits.py"]
    assert LIST_NAMES == ("train", "test", "database")
    assert LIST_FILES == {"train": "train.txt", "test": "test.txt", "database": "database.txt"}
    toy = ensure_toy_dataset(tmp_path / "toy", num_images=12, num_test=3, num_train=4)
    assert {p.name for p in toy.glob("*.txt")} - {"classes.txt"} == set(LIST_FILES.values())
    assert {split: path.name for split, path in dataset_lists("toy", toy).items()} == LIST_FILES
    assert load_data_script("check_data").DEFAULT_LISTS == tuple(LIST_FILES.values())


def test_the_data_and_retrieval_sides_import_neither_the_network_nor_training():
    """utils/datasets knows nothing of models/ (the ImageNet mean/std live in utils/datasets/normalization.py, which
    models/hashnet.py reads), and nothing below training imports utils/train."""
    import ast

    from conftest import REPO
    from models import hashnet
    from utils.datasets import normalization
    below_train = ("datasets", "retrieval", "hashing", "runtime")
    imports = {}
    for path in product_modules():
        rel = path.relative_to(REPO)
        if rel.parts[0] != "utils" or len(rel.parts) < 3 or rel.parts[1] not in below_train:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            imports.setdefault(rel.as_posix(), set()).update(names)
    assert len(imports) > 20  # the packages were read
    upward = {module: sorted(n for n in names if n.startswith("utils.train")
                             or module.startswith("utils/datasets/") and n.split(".")[0] == "models")
              for module, names in imports.items()}
    assert {module: names for module, names in upward.items() if names} == {}
    assert hashnet.IMAGENET_MEAN is normalization.IMAGENET_MEAN and hashnet.IMAGENET_STD is normalization.IMAGENET_STD
