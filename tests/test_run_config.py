"""A run folder is enough: predict.py, export_model.py + infer.py and main_single_gpu.py --eval take the bit width,
data and image sizes from the run's config.json, from any current directory; explicit flags win, with a warning
when they contradict training; old configs with relative paths are read sensibly."""
import json
import os
import shutil

import numpy as np
import paddle
import pytest

import export_model
import predict
from conftest import REPO, run_cli
from deploy.inference_python import infer
from utils.config.flags import given_flags
from utils.config.run_folder import resolve_checkpoint, run_config_for
from utils.datasets.toy import ensure_toy_dataset
from utils.train.options import get_parser, parse_args

TRAIN_FLAGS = ["--dataset", "mylists", "--bit", "32", "--crop_size", "64", "--resize_size", "72"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of training on a list-file dataset (toy images, lists in their own folder, 32 bits, 72/64 px)."""
    base = tmp_path_factory.mktemp("run_config")
    root = ensure_toy_dataset(base / "root", seed=3, num_images=40, num_test=6, num_train=16)
    lists = base / "lists"
    lists.mkdir()
    for name in ("train.txt", "test.txt", "database.txt", "classes.txt"):
        shutil.move(str(root / name), lists / name)
    run = base / "output" / "run"
    run_cli(["main_single_gpu.py", *TRAIN_FLAGS, "--list-dir", lists, "--data-path", root, "--epoch", "1",
             "--batch-size", "16", "--num_workers", "0", "--device", "cpu", "--backbone_weights", "none",
             "--output-dir", run.parent, "--run-name", run.name], timeout=900)
    db = [line.split()[0] for line in (lists / "database.txt").read_text().splitlines()]
    return {"base": base, "root": root, "lists": lists, "run": run, "db": db}


def test_training_wrote_absolute_data_paths(trained):
    config = json.loads((trained["run"] / "config.json").read_text())
    assert config["data_path"] == str(trained["root"]) and config["list_dir"] == str(trained["lists"])
    assert (config["bit"], config["crop_size"], config["resize_size"]) == (32, 64, 72)
    # training took optimizer steps (non-zero momentum) and wrote its checkpoints
    state = paddle.load(str(trained["run"] / "last_32.pdckpt"))
    velocity = [v for k, v in state["optimizer"].items() if "velocity" in k]
    assert state["epoch"] == 1 and velocity and any(float(np.abs(v.numpy()).sum()) > 0 for v in velocity)
    assert (trained["run"] / "model_best_32.pdparams").is_file()


def test_predict_from_another_folder_with_only_the_run_folder(trained, tmp_path):
    """The issue's 'done means': cd elsewhere, --pretrained <run> --img <database image> --topk 10 --json."""
    index = 4
    image = trained["root"] / trained["db"][index]
    proc = run_cli([REPO / "predict.py", "--pretrained", trained["run"], "--img", image, "--topk", "10", "--json"],
                   cwd=tmp_path, env={"PYTHONWARNINGS": ""})
    entry = json.loads(proc.stdout.splitlines()[0])
    assert entry["bit"] == 32 and len(entry["results"]) == 10
    distances = [r["distance"] for r in entry["results"]]
    position = [r["index"] for r in entry["results"]].index(index)
    assert distances[position] == 0 and all(d == 0 for d in distances[:position])  # first, after only 0-ties
    assert distances == sorted(distances)
    assert entry["query_label_names"]  # the labels and names of the listed query: classes.txt next to the lists
    assert "warning" not in proc.stderr and "No ccache found" not in proc.stderr
    # the database codes were cached in the run folder (with its sizes), not in the current folder
    sidecar = json.loads((trained["run"] / "retrieval" / "database_code_32.json").read_text())
    assert (sidecar["preprocess"]["resize_size"], sidecar["preprocess"]["crop_size"]) == (72, 64)
    assert sidecar["database_list"]["path"] == str(trained["lists"] / "database.txt")
    assert not (tmp_path / "output").exists()


def test_checkpoint_inside_the_run_folder_and_explicit_flags(trained, tmp_path, capsys):
    image = str(trained["root"] / trained["db"][0])
    common = ["--img", image, "--json", "--save_path", str(tmp_path), "--num_workers", "0"]
    args = predict.parse_args(["--pretrained", str(trained["run"] / "last_32.pdckpt"), *common])
    assert (args.bit, args.crop_size, args.resize_size, args.dataset) == (32, 64, 72, "mylists")
    assert (args.data_path, args.list_dir) == (str(trained["root"]), str(trained["lists"]))
    assert capsys.readouterr().err == ""

    # the same data root written differently: no message; a contradicting size: a warning, and the flag wins
    args = predict.parse_args(["--pretrained", str(trained["run"]), "--data-path", str(trained["root"]) + "/",
                               "--crop_size", "56", *common])
    err = capsys.readouterr().err
    assert args.crop_size == 56 and args.resize_size == 72
    assert err.strip() == (f"warning: --crop_size 56 contradicts how the model was trained (crop_size = 64 in "
                           f"{trained['run'] / 'config.json'}); its codes will not match training. Drop --crop_size "
                           f"to use the run's value.")
    # another database is a note, not a warning
    other = tmp_path / "other_lists"
    shutil.copytree(trained["lists"], other)
    args = predict.parse_args(["--pretrained", str(trained["run"]), "--list-dir", str(other), *common])
    err = capsys.readouterr().err
    assert args.list_dir == str(other) and err.startswith(f"note: --list-dir {other} instead of the run's")

    # a folder without the asked bit width says which checkpoints it has
    with pytest.raises(FileNotFoundError, match=r"neither model_best_64\.pdparams nor last_64\.pdckpt .*"
                                                r"has last_32\.pdckpt, model_best_32\.pdparams"):
        predict.parse_args(["--pretrained", str(trained["run"]), "--bit", "64", *common])


def test_export_carries_the_database_and_infer_needs_only_the_model_dir(trained, tmp_path, capsys):
    model_dir = tmp_path / "inference"
    assert export_model.main(["--pretrained", str(trained["run"]), "--save-inference-dir", str(model_dir)]) == 0
    meta = json.loads((model_dir / "export_meta.json").read_text())
    assert (meta["bit"], meta["resize_size"], meta["crop_size"]) == (32, 72, 64)
    assert meta["database"] == {"dataset": "mylists", "data_path": str(trained["root"]),
                                "list_dir": str(trained["lists"])}
    capsys.readouterr()
    index = 2
    cwd = os.getcwd()
    os.chdir(tmp_path)  # any folder
    try:
        assert infer.main(["--model-dir", str(model_dir), "--img", str(trained["root"] / trained["db"][index]),
                           "--json", "--num_workers", "0", "--enable_mkldnn", "false"]) == 0
    finally:
        os.chdir(cwd)
    entry = json.loads(capsys.readouterr().out.splitlines()[0])
    position = [r["index"] for r in entry["results"]].index(index)
    assert all(r["distance"] == 0 for r in entry["results"][:position + 1]) and entry["bit"] == 32
    # --codes-only still prints codes
    assert infer.main(["--model-dir", str(model_dir), "--img", str(trained["root"] / trained["db"][index]),
                       "--codes-only", "--json", "--enable_mkldnn", "false"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["bit"] == 32 and len(row["code"]) == 32


def test_eval_from_the_run_folder(trained, tmp_path):
    proc = run_cli([REPO / "main_single_gpu.py", "--eval", "--pretrained", trained["run"], "--output-dir", tmp_path,
                    "--run-name", "eval", "--num_workers", "0", "--device", "cpu"], cwd=tmp_path, timeout=900)
    config = json.loads((tmp_path / "eval" / "config.json").read_text())
    assert (config["bit"], config["crop_size"], config["resize_size"], config["dataset"]) == (32, 64, 72, "mylists")
    assert config["pretrained"] == str(trained["run"] / "model_best_32.pdparams")
    assert config["list_dir"] == str(trained["lists"]) and config["backbone_weights"] == "none"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["final"]
    assert metrics["num_database"] == len(trained["db"])
    trained_metrics = json.loads((trained["run"] / "metrics.json").read_text())["final"]
    assert metrics["map"] == pytest.approx(trained_metrics["map"], abs=1e-6)  # the same model, data and sizes
    assert "no ImageNet AlexNet weights found" not in proc.stderr  # every weight comes from the checkpoint


# ------------------------------------------------------------------------------------------------ config reading
def write_config(folder, **values):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(values))
    return folder


def test_old_relative_paths_resolve_against_the_training_folder_then_the_project(tmp_path):
    start = tmp_path / "project"
    (start / "datasets" / "mine").mkdir(parents=True)
    (start / "lists").mkdir()
    run = write_config(start / "output" / "old", run_dir="output/old", data_path="./datasets/mine",
                       list_dir="lists", dataset="mine", bit=16, list_prefix_map="a=b", epochs=3)
    values = run_config_for(run / "model_best_16.pdparams")["values"]
    assert values["data_path"] == str(start / "datasets" / "mine") and values["list_dir"] == str(start / "lists")
    assert values["list_prefix_map"] == "a=b" and "epochs" not in values  # data keys generically, no training keys

    moved = tmp_path / "elsewhere" / "renamed"  # moved: the training folder is unknown, so the project root
    shutil.copytree(run, moved)
    values = run_config_for(moved)["values"]
    assert values["data_path"] == str(REPO / "datasets" / "mine")

    assert run_config_for(tmp_path) is None  # no config.json: flags and presets as before
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        run_config_for(tmp_path)


def test_a_run_folder_written_at_7316a2e_is_read_under_todays_keys(small_toy, tmp_path):
    """tests/data/config_7316a2e.json is the config.json main_single_gpu.py wrote at commit 7316a2e (--dataset toy
    --bit 16 --map-at 150 --epochs 2 --eval-every 1 --lr-step 1), before the keys took their flags' names: topK,
    epoch, eval_epoch, de_step, step_continuation. Read back (run_folder.OLD_KEYS), --eval and predict.py take its
    mAP@150, bit width, sizes and data as they take today's."""
    old = json.loads((REPO / "tests" / "data" / "config_7316a2e.json").read_text())
    assert (old["topK"], old["epoch"], old["de_step"]) == (150, 2, 1) and "map_at" not in old  # as written then
    # its data paths were that machine's: the generated toy lists stand in for them
    run = write_config(tmp_path / "old_run", **dict(old, data_path=str(small_toy["data_path"]),
                                                    list_dir=str(small_toy["list_dir"])))
    (run / "model_best_16.pdparams").write_bytes(b"")  # only its name is resolved here
    values = run_config_for(run)["values"]
    assert values["map_at"] == 150 and "topK" not in values
    assert (values["bit"], values["crop_size"], values["resize_size"], values["dataset"]) == (16, 64, 72, "toy")

    evaluation = parse_args(["--eval", "--pretrained", str(run), "--output-dir", str(tmp_path)])
    assert (evaluation.map_at, evaluation.metric, evaluation.bit, evaluation.crop_size) == (150, "mAP@150", 16, 64)
    assert evaluation.list_dir == str(small_toy["list_dir"])
    assert parse_args(["--eval", "--pretrained", str(run), "--map-at", "20", "--output-dir",
                       str(tmp_path)]).metric == "mAP@20"  # a flag still wins
    query = predict.parse_args(["--pretrained", str(run), "--img", "query.jpg"])
    assert (query.bit, query.crop_size, query.resize_size) == (16, 64, 72)
    assert (query.data_path, query.list_dir) == (str(small_toy["data_path"]), str(small_toy["list_dir"]))


def test_given_flags_tells_typed_flags_from_defaults():
    parser = get_parser()
    assert given_flags(parser, ["--bit", "64", "--data_path", "x", "--eval"]) == {"bit", "data_path", "eval"}
    assert given_flags(parser, []) == set()
    assert parser.parse_args([]).bit == 64  # defaults are restored


def test_resolve_checkpoint_of_a_folder(tmp_path):
    (tmp_path / "last_16.pdckpt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, 16) == tmp_path / "last_16.pdckpt"
    (tmp_path / "model_best_16.pdparams").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, 16) == tmp_path / "model_best_16.pdparams"
    assert np.all([resolve_checkpoint(tmp_path / "last_16.pdckpt", 99).name == "last_16.pdckpt"])
