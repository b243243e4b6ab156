"""The training engine end to end through main_single_gpu.py: outputs, exact resume, evaluation, errors."""
import json

import numpy as np
import paddle
import pytest

from conftest import run_cli, toy_args


def params(path):
    return {k: v.numpy() for k, v in paddle.load(str(path))["model"].items()}


@pytest.fixture(scope="module")
def two_epochs(small_toy, tmp_path_factory):
    """2 epochs, whole network trained (dropout and backbone gradients included), evaluated every epoch."""
    run = tmp_path_factory.mktemp("runs") / "two"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "2", "--eval_epoch", "1",
                                             "--train_scope", "all", "--bit", "16")])
    return run


def test_run_folder_contents(two_epochs):
    names = {p.name for p in two_epochs.iterdir()}
    assert {"config.json", "log_train_16.txt", "epochs.jsonl", "metrics.json", "last_16.pdckpt",
            "model_best_16.pdparams", "model_best_16.pdopt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave no temp files
    config = json.loads((two_epochs / "config.json").read_text())
    assert config["bit"] == 16 and config["train_scope"] == "all" and config["seed"] == 0  # the seed's 16-bit seed
    rows = [json.loads(line) for line in (two_epochs / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"loss", "lr", "scale", "map", "map_random_codes"} <= set(r) for r in rows)
    log = (two_epochs / "log_train_16.txt").read_text()
    assert "config: " in log and "Epoch[001/002], Step[0004/0004], Loss:" in log and "mAP@200:" in log


def test_last_checkpoint_holds_everything_to_resume(two_epochs):
    state = paddle.load(str(two_epochs / "last_16.pdckpt"))
    assert {"model", "optimizer", "scheduler", "criterion", "epoch", "best", "bit", "config"} <= set(state)
    assert state["epoch"] == 2 and state["bit"] == 16
    assert state["model"]["hash_layer.weight"].shape == [4096, 16]
    bank = state["criterion"]["U"].numpy()
    assert bank.shape == (128, 16) and (np.abs(bank).sum(1) > 0).all()  # every training item was written
    assert np.abs(bank).max() <= 1.0  # tanh outputs
    rows = [json.loads(line) for line in (two_epochs / "epochs.jsonl").read_text().splitlines()]
    assert state["best"]["map"] == pytest.approx(max(r["map"] for r in rows))
    best = paddle.load(str(two_epochs / "model_best_16.pdparams"))
    assert set(best) == set(state["model"])


def test_resume_continues_exactly(two_epochs, small_toy, tmp_path):
    run = tmp_path / "one_plus_one"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "1", "--eval_epoch", "1",
                                             "--train_scope", "all", "--bit", "16")])
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "2", "--eval_epoch", "1",
                                             "--train_scope", "all", "--bit", "16"),
             "--resume", run / "last_16.pdckpt"])
    resumed, straight = params(run / "last_16.pdckpt"), params(two_epochs / "last_16.pdckpt")
    assert set(resumed) == set(straight)
    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
    bank_a = paddle.load(str(run / "last_16.pdckpt"))["criterion"]["U"].numpy()
    bank_b = paddle.load(str(two_epochs / "last_16.pdckpt"))["criterion"]["U"].numpy()
    np.testing.assert_array_equal(bank_a, bank_b)
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # the resumed run appends to the same folder


def test_eval_reproduces_the_logged_map(two_epochs, small_toy, tmp_path):
    run = tmp_path / "eval"
    run_cli(["main_single_gpu.py", "--eval", "--pretrained", two_epochs / "model_best_16.pdparams",
             *toy_args(small_toy, run, "--bit", "16")])
    metrics = json.loads((run / "metrics.json").read_text())["final"]
    trained = json.loads((two_epochs / "metrics.json").read_text())
    assert metrics["map"] == pytest.approx(trained["best"]["map"], abs=1e-12)
    assert metrics["num_query"] == 40 and metrics["num_database"] == 200 and metrics["topk"] == 200


def test_checkpoint_of_another_bit_width_is_a_clear_error(two_epochs, small_toy, tmp_path):
    proc = run_cli(["main_single_gpu.py", "--eval", "--pretrained", two_epochs / "model_best_16.pdparams",
                    *toy_args(small_toy, tmp_path / "bad", "--bit", "64")], check=False)
    assert proc.returncode != 0
    assert "holds a 16-bit model" in proc.stderr and "--bit is 64" in proc.stderr


def test_eval_without_checkpoint_is_a_clear_error(small_toy, tmp_path):
    proc = run_cli(["main_single_gpu.py", "--eval", *toy_args(small_toy, tmp_path / "x")], check=False)
    assert proc.returncode != 0 and "--eval needs --pretrained" in proc.stderr


def test_missing_imagenet_weights_warn_on_real_data(tmp_path, monkeypatch, caplog):
    import logging

    from utils import engine
    from utils.config import parse_args
    monkeypatch.setattr(engine, "PROJECT_ROOT", tmp_path)  # an empty pretrained/ folder
    cfg = parse_args(["--dataset", "coco", "--output-dir", str(tmp_path)])
    logger = logging.getLogger("test-warning")
    with caplog.at_level(logging.WARNING, logger="test-warning"):
        assert engine.resolve_backbone_weights(cfg, logger) is None
    assert "no ImageNet AlexNet weights found" in caplog.text and "far from the paper" in caplog.text
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    assert engine.resolve_backbone_weights(cfg, logger) == str(tmp_path / "pretrained" / "alexnet-owt-7be5be79.pth")
    toy = parse_args(["--dataset", "toy", "--output-dir", str(tmp_path)])
    assert engine.resolve_backbone_weights(toy, logger) is None  # the toy preset is from scratch on purpose


def test_real_coco_images_train_and_evaluate(tmp_path):
    """The COCO path (224 px crops, 80 labels, the seed's recipe) on the 13 real images in ../shared/coco_lite."""
    from conftest import SHARED
    lite = SHARED / "coco_lite"
    if not (lite / "lists" / "train.txt").is_file():
        pytest.skip(f"real COCO images not found: {lite} (lists/train.txt)")
    run = tmp_path / "coco_lite"
    run_cli(["main_single_gpu.py", "--dataset", "coco", "--list-dir", lite / "lists", "--data-path", lite,
             "--bit", "16", "--batch-size", "4", "--epoch", "1", "--num_workers", "0", "--device", "cpu",
             "--output-dir", tmp_path, "--run-name", run.name])
    log = (run / "log_train_16.txt").read_text()
    assert "9 train, 4 query, 13 database images, 80 classes" in log
    assert "no ImageNet AlexNet weights found" in log  # the COCO recipe warns when it starts from scratch
    metrics = json.loads((run / "metrics.json").read_text())["final"]
    assert metrics["topk"] == 5000 and metrics["num_database"] == 13 and 0 < metrics["map"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert (config["crop_size"], config["resize_size"], config["step_continuation"]) == (224, 256, 20)
