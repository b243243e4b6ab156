"""The paper's other two datasets (docs/protocol.md#nus-wide-and-imagenet): HashNet's upstream lists parse,
--path-prefix maps their paths under a local data root (training, the checker, retrieval), the hints name the prefix a
list needs, and the presets give each dataset's metric."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SHARED, load_data_script, run_cli
from utils.config.flags import parse_path_prefix
from utils.config.presets import PRESETS, preset_for
from utils.datasets.image_list import build_datasets, map_list_path, read_list_file
from utils.train.options import parse_args

check_data = load_data_script("check_data")

IMAGENET_PREFIX = "/home/caozhangjie/run-czj/dataset/imagenet/"
NUSWIDE_PREFIX = "./data/nuswide_81/"
UPSTREAM = SHARED / "hashnet_lists"


def one_hot(index, n):
    return " ".join("1" if i == index else "0" for i in range(n))


def multi_hot(indices, n):
    return " ".join("1" if i in indices else "0" for i in range(n))


def write_imagenet_sample(list_dir):
    """Upstream ImageNet format: the authors' absolute paths, training images in image/, queries in val_image/."""
    list_dir.mkdir(parents=True, exist_ok=True)
    train = [f"{IMAGENET_PREFIX}image/n0{c}_{i}.JPEG {one_hot(c, 100)}" for c in (7, 42) for i in range(4)]
    test = [f"{IMAGENET_PREFIX}val_image/ILSVRC2012_val_0000000{i}.JPEG {one_hot((7, 42)[i % 2], 100)}"
            for i in range(1, 5)]
    database = train + [f"{IMAGENET_PREFIX}image/n0{c}_9{c}.JPEG {one_hot(c, 100)}" for c in (7, 42)]
    for name, lines in (("train", train), ("test", test), ("database", database)):
        (list_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return list_dir


def write_nuswide_sample(list_dir):
    """Upstream NUS-WIDE format: ./data/nuswide_81/images/..., 81 multi-hot labels, label-less images included."""
    list_dir.mkdir(parents=True, exist_ok=True)
    labels = [(3,), (3, 80), (), (10, 11, 12), (80,), (3, 10)]
    lines = [f"{NUSWIDE_PREFIX}images/{i}_{1000 + i}_ab{i}_m.jpg {multi_hot(ls, 81)}" for i, ls in enumerate(labels)]
    for name, chosen in (("train", lines[:4]), ("test", lines[4:]), ("database", lines)):
        (list_dir / f"{name}.txt").write_text("\n".join(chosen) + "\n")
    return list_dir


def make_images(data_root, list_dir, prefix, size=20):
    """Tiny images at the place each listed path maps to under data_root (what a user's copy would hold)."""
    made = set()
    for name in ("train", "test", "database"):
        for line in (list_dir / f"{name}.txt").read_text().splitlines():
            path = data_root / line.split()[0][len(prefix):]
            if path not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                shade = len(made) * 20 % 255
                Image.new("RGB", (size, size), (shade, 255 - shade, 90)).save(path, format="JPEG")
                made.add(path)
    return data_root


# ------------------------------------------------------------------------------------------- upstream list formats
@pytest.mark.parametrize("dataset, split, lines, classes", [
    ("imagenet", "train", 13000, 100), ("imagenet", "test", 5000, 100),
    ("nuswide_81", "train", 10000, 81), ("nuswide_81", "test", 5000, 81)])
def test_shared_upstream_lists_parse(dataset, split, lines, classes):
    path = UPSTREAM / dataset / f"{split}.txt"
    if not path.is_file():
        pytest.skip(f"HashNet's upstream lists not found: {path} (docs/protocol.md#nus-wide-and-imagenet; ../shared "
                    f"is absent on this machine)")
    paths, labels = read_list_file(path, path_prefix=preset_for(dataset)["path_prefix"])
    assert labels.shape == (lines, classes) and len(set(paths)) == lines
    if dataset == "imagenet":
        assert (labels.sum(1) == 1).all()  # one-hot
        assert np.bincount(labels.argmax(1), minlength=100).tolist() == [lines // 100] * 100  # 130 / 50 per class
        folder = "image/" if split == "train" else "val_image/"
        assert all(p.startswith(folder) for p in paths)  # the preset's mapping leaves paths under the data root
    else:
        assert all(p.startswith("images/") and p.endswith(".jpg") for p in paths)
        # docs/protocol.md#nus-wide-and-imagenet says 1 to 10 labels per image; the upstream lists also hold label-less
        # images (AP 0 as queries)
        per_image = np.bincount(labels.sum(1).astype(int))
        assert (per_image[0], len(per_image) - 1) == ((2185, 10) if split == "train" else (1131, 11))


def test_written_upstream_samples_parse(tmp_path):
    imagenet = write_imagenet_sample(tmp_path / "imagenet")
    paths, labels = read_list_file(imagenet / "test.txt")
    assert paths[0] == f"{IMAGENET_PREFIX}val_image/ILSVRC2012_val_00000001.JPEG"  # unchanged without a mapping
    assert labels.shape == (4, 100) and labels[0, 42] == 1 and labels.sum() == 4
    paths, labels = read_list_file(imagenet / "test.txt", path_prefix=PRESETS["imagenet"]["path_prefix"])
    assert paths[0] == "val_image/ILSVRC2012_val_00000001.JPEG"
    nuswide = write_nuswide_sample(tmp_path / "nuswide_81")
    paths, labels = read_list_file(nuswide / "train.txt", path_prefix=PRESETS["nuswide_81"]["path_prefix"])
    assert paths == ["images/0_1000_ab0_m.jpg", "images/1_1001_ab1_m.jpg", "images/2_1002_ab2_m.jpg",
                     "images/3_1003_ab3_m.jpg"]
    assert labels.shape == (4, 81) and labels.sum(1).tolist() == [1, 2, 0, 3]


# ------------------------------------------------------------------------------------------------- prefix mapping
def test_map_list_path_matches_whole_components():
    pairs = parse_path_prefix(["/data/a=/mnt/x", "/data/a/b/=", "./data/nuswide_81/="])
    assert [old for old, _ in pairs] == ["./data/nuswide_81/", "/data/a/b/", "/data/a"]  # longest first
    assert map_list_path("/data/a/b/c.jpg", pairs) == "c.jpg"
    assert map_list_path("/data/a/z/c.jpg", pairs) == "/mnt/x/z/c.jpg"
    assert map_list_path("/data/ab/c.jpg", pairs) == "/data/ab/c.jpg"  # not a component boundary: untouched
    assert map_list_path("./data/nuswide_81/images/1.jpg", pairs) == "images/1.jpg"
    assert map_list_path("train2014/x.jpg", pairs) == "train2014/x.jpg"
    assert map_list_path("/home/u/imagenet/image/x.JPEG", parse_path_prefix(["/home/u/imagenet="])) == "image/x.JPEG"


def test_malformed_path_prefix_names_the_flag():
    with pytest.raises(ValueError, match=r"--path-prefix '/no/equals/sign': expected OLD=NEW"):
        parse_args(["--dataset", "imagenet", "--path-prefix", "/no/equals/sign"])
    with pytest.raises(ValueError, match=r"--path-prefix '=/x': expected OLD=NEW"):
        parse_path_prefix(["=/x"])


@pytest.mark.parametrize("dataset, writer, prefix", [("imagenet", write_imagenet_sample, IMAGENET_PREFIX),
                                                     ("nuswide_81", write_nuswide_sample, NUSWIDE_PREFIX)])
def test_preset_mapping_finds_images_under_a_temporary_root(tmp_path, dataset, writer, prefix):
    lists = writer(tmp_path / "lists")
    root = make_images(tmp_path / "root", lists, prefix)
    args = parse_args(["--dataset", dataset, "--list-dir", str(lists), "--data-path", str(root),
                       "--output-dir", str(tmp_path / "out")])
    assert args.path_prefix == [f"{prefix}="]  # the preset's mapping, now a config key of the run
    data = build_datasets(dataset, args.data_path, 24, 16, list_dir=args.list_dir, path_prefix=args.path_prefix)
    assert {split: len(ds) for split, ds in data.items()} == {
        "imagenet": {"train": 8, "test": 4, "database": 10}, "nuswide_81": {"train": 4, "test": 2, "database": 6},
    }[dataset]
    image, label, index = data["test"][1]
    assert tuple(image.shape) == (3, 16, 16) and int(index) == 1 and label.shape == ((100,) if dataset == "imagenet"
                                                                                     else (81,))
    assert str(data["test"].data_root / data["test"].paths[0]).startswith(str(root))


def test_missing_images_name_the_first_unmatched_path_and_the_prefix(tmp_path):
    lists = write_imagenet_sample(tmp_path / "lists")
    root = make_images(tmp_path / "root", lists, IMAGENET_PREFIX)
    with pytest.raises(FileNotFoundError) as error:  # no mapping: the authors' paths do not exist here
        build_datasets("imagenet", root, 24, 16, list_dir=lists)
    message = str(error.value)
    assert "8 of 8 images listed in" in message
    assert f"first unmatched path: {IMAGENET_PREFIX}image/n07_0.JPEG (absolute: not under the data root)" in message
    assert (f"found it as {root}/image/n07_0.JPEG: pass --path-prefix '{IMAGENET_PREFIX}=' (with --data-path "
            f"{root})") in message
    # nothing under the data root: the prefix all listed paths share, and what the data root must then hold
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        build_datasets("imagenet", empty, 24, 16, list_dir=lists, path_prefix=["/elsewhere/=/x/"])
    message = str(error.value)
    assert "--path-prefix '/elsewhere/=...' matches none of the listed paths" in message
    assert (f"every listed path starts with '{IMAGENET_PREFIX}': to use these lists unchanged pass --path-prefix "
            f"'{IMAGENET_PREFIX}=' and a --data-path holding image/n07_0.JPEG") in message


def test_check_data_uses_the_preset_mapping_and_hints(tmp_path, monkeypatch, capsys):
    lists = write_nuswide_sample(tmp_path / "lists")
    root = make_images(tmp_path / "root", lists, NUSWIDE_PREFIX)
    assert check_data.main(["--dataset", "nuswide_81", "--list-dir", str(lists), "--data-path", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"6 distinct images, 81 labels per line, --path-prefix {NUSWIDE_PREFIX}=" in out
    assert f"{lists / 'database.txt'}: 6 images, 6 ok, 0 missing, 0 undecodable" in out
    # the same lists without --dataset: no preset, so nothing is found; the hint names the prefix to map
    listed = [str(lists / n) for n in ("train.txt", "test.txt")]
    assert check_data.main(["--data-path", str(root), "--lists", *listed]) == 1
    out = capsys.readouterr().out
    assert f"  missing: {NUSWIDE_PREFIX}images/0_1000_ab0_m.jpg" in out
    assert f"first unmatched path: {NUSWIDE_PREFIX}images/0_1000_ab0_m.jpg, looked for {root}/" in out
    assert f"found it as {root}/images/0_1000_ab0_m.jpg: pass --path-prefix '{NUSWIDE_PREFIX}='" in out
    assert check_data.main(["--data-path", str(root), "--lists", *listed, "--path-prefix", f"{NUSWIDE_PREFIX}="]) == 0
    with pytest.raises(SystemExit):
        check_data.main(["--data-path", str(root), "--lists", *listed, "--path-prefix", "oops"])
    assert "--path-prefix 'oops': expected OLD=NEW" in capsys.readouterr().err


def test_shared_imagenet_lists_resolve_under_a_temporary_root(tmp_path, capsys):
    """The real upstream lists, their first lines' images made under a temporary root, checked as a user would."""
    if not (UPSTREAM / "imagenet" / "test.txt").is_file():
        pytest.skip(f"HashNet's upstream lists not found: {UPSTREAM} (docs/protocol.md#nus-wide-and-imagenet; "
                    f"../shared is absent on this machine)")
    lists = tmp_path / "lists"
    lists.mkdir()
    for split, n in (("train", 6), ("test", 3)):
        head = (UPSTREAM / "imagenet" / f"{split}.txt").read_text().splitlines()[:n]
        (lists / f"{split}.txt").write_text("\n".join(head) + "\n")
    (lists / "database.txt").write_text((lists / "train.txt").read_text())
    root = make_images(tmp_path / "imagenet", lists, IMAGENET_PREFIX)
    assert sorted(p.name for p in root.iterdir()) == ["image", "val_image"]
    assert check_data.main(["--dataset", "imagenet", "--list-dir", str(lists), "--data-path", str(root)]) == 0
    assert "all images ok" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("dataset, top_k, data_path", [("imagenet", 1000, "./datasets/imagenet/"),
                                                       ("nuswide_81", 5000, "./datasets/nuswide_81/"),
                                                       ("coco", 5000, "./datasets/COCO2014/")])
def test_presets_give_each_dataset_its_metric(tmp_path, dataset, top_k, data_path):
    args = parse_args(["--dataset", dataset, "--output-dir", str(tmp_path)])
    # data paths are stored absolute, so a run folder works from any directory
    assert (args.map_at, args.metric, args.data_path) == (top_k, f"mAP@{top_k}", os.path.abspath(data_path))
    coco = parse_args(["--dataset", "coco", "--output-dir", str(tmp_path)])
    differs = {k for k in PRESETS["default"] if getattr(args, k) != getattr(coco, k)}
    # otherwise the seed repository's COCO recipe (docs/protocol.md#seed-recipe)
    assert differs <= {"map_at", "data_path", "path_prefix"}
    assert parse_args(["--dataset", dataset, "--topK", "100", "--output-dir", str(tmp_path)]).metric == "mAP@100"
    assert parse_args(["--dataset", "toy", "--output-dir", str(tmp_path)]).metric == "mAP@all"


def test_imagenet_run_records_metric_mapping_and_protocol(tmp_path):
    """A small run on upstream-format ImageNet lists: config.json names the metric and carries the mapping;
    metrics.json the protocol's sizes; the report puts it in Table 1 under mAP@1000."""
    lists = write_imagenet_sample(tmp_path / "lists")
    root = make_images(tmp_path / "root", lists, IMAGENET_PREFIX, size=72)
    run = tmp_path / "runs" / "imagenet_16bits"
    run_cli(["main_single_gpu.py", "--dataset", "imagenet", "--list-dir", lists, "--data-path", root, "--bit", "16",
             "--epoch", "1", "--eval_epoch", "1", "--batch-size", "4", "--num_workers", "0", "--device", "cpu",
             "--backbone_weights", "none", "--resize_size", "72", "--crop_size", "64",
             "--output-dir", run.parent, "--run-name", run.name])
    config = json.loads((run / "config.json").read_text())
    assert (config["metric"], config["map_at"], config["path_prefix"]) == ("mAP@1000", 1000, [f"{IMAGENET_PREFIX}="])
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert (final["topk"], final["num_train"], final["num_query"], final["num_database"]) == (1000, 8, 4, 10)
    assert "mAP@1000" in (run / "log_train_16.txt").read_text()

    from test_plots_report import paper_table_lines, report
    text = report.main(["--runs", str(run), "--out", str(tmp_path / "report")]).read_text()
    rows = paper_table_lines(text)
    assert rows[2] == "| **ImageNet-100** · mAP@1000 | HashNet paper (ICCV 2017, Table 1) | 0.5059 | 0.6306 | " \
                      "0.6633 | 0.6835 |"
    assert rows[3] == f"|  | **this project, final epoch** | {final['map']:.4f} † | — | — | — |"
    assert "- ImageNet-100 (mAP@1000): 8 / 4 / 10 (`imagenet_16bits`); paper: 13,000 / 5,000 / upstream " \
           "database.txt" in text
    assert f"- † `{run}`: 4 queries, not 5000; 8 training images, not 13000." in text


def test_scripts_take_the_dataset(tmp_path):
    """DATASET=imagenet / nuswide_81 in the single-GPU scripts: the preset's data root and K, run folders named
    after the dataset; COCO stays the default. A stand-in `python` records the commands instead of training."""
    import shutil
    import subprocess

    from conftest import stand_in_python
    env, log = stand_in_python(tmp_path)
    for script, dataset in (("train_single_gpu.sh", "imagenet"), ("test_single_gpu.sh", "nuswide_81"),
                            ("train_single_gpu.sh", None)):
        run_env = {k: v for k, v in env.items() if k not in ("DATASET", "DATA_PATH", "TOPK")}
        if dataset:
            run_env["DATASET"] = dataset
        subprocess.run([shutil.which("sh"), str(REPO / "scripts" / script)], env=run_env, check=True, timeout=120)
    calls = log.read_text().splitlines()
    assert len(calls) == 12
    assert calls[0] == ("main_single_gpu.py --dataset imagenet --data-path ./datasets/imagenet/ --bit 16 --seed 0 "
                        "--batch-size 128 --learning_rate 0.001 --epoch 150 --eval_epoch 10 --topK 1000 "
                        "--output-dir output --run-name {dataset}_{bit}bits --resume auto")
    assert calls[7] == ("main_single_gpu.py --eval --dataset nuswide_81 --data-path ./datasets/nuswide_81/ --bit 64 "
                        "--seed 2000 --batch-size 128 --topK 5000 --pretrained "
                        "output/nuswide_81_64bits/model_best_64.pdparams --output-dir output "
                        "--run-name nuswide_81_64bits_eval")
    assert calls[10].startswith("main_single_gpu.py --dataset coco --data-path ./datasets/COCO2014/ --bit 48 "
                                "--seed 200 ") and "--topK 5000 " in calls[10]


def test_retrieval_database_resolves_upstream_paths(tmp_path):
    """predict.py / infer.py read the database through the same mapping (their --path-prefix, default the preset's)."""
    from predict import parse_args as predict_args
    from utils.retrieval.database import Database

    lists = write_nuswide_sample(tmp_path / "lists")
    root = make_images(tmp_path / "root", lists, NUSWIDE_PREFIX)
    checkpoint = tmp_path / "model_best_64.pdparams"
    checkpoint.write_bytes(b"")
    args = predict_args(["--dataset", "nuswide_81", "--list-dir", str(lists), "--data-path", str(root),
                         "--pretrained", str(checkpoint), "--img", str(root / "images" / "0_1000_ab0_m.jpg")])
    assert args.path_prefix == [f"{NUSWIDE_PREFIX}="]
    database = Database(args.dataset, args.data_path, args.list_dir, args.path_prefix)
    assert len(database) == 6 and database.image_path(5) == root / "images" / "5_1005_ab5_m.jpg"
    assert database.labels_of(root / "images" / "1_1001_ab1_m.jpg").nonzero()[0].tolist() == [3, 80]
    assert len(database.dataset(lambda image: np.asarray(image))) == 6
