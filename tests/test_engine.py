"""The training engine end to end through main_single_gpu.py: outputs, exact resume, evaluation, errors."""
import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from conftest import assert_training_moved, run_cli, toy_args

# the toy preset's recipe, evaluated every epoch, the lr halved after epoch 1: a resume at epoch 1 crosses an lr step.
# A base lr of 6e-3, not the preset's 2e-3: over these 2 x 4 steps 2e-3 moved the mAP by less than the gap between
# two random networks' first epochs (0.3614 then 0.3643 against 0.3687 then 0.3693, random codes 0.3632; measured
# before the constant-unit standardisation of 2026-12-06), 6e-3 by enough to see (now 0.3788 then 0.3856).
# --encoder inference, whatever --encoder auto would pick for runs this small: the frozen backbone's features and
# every evaluation go through the Paddle Inference predictor that larger runs use, and config.json records the choice
TRAIN = ("--eval_epoch", "1", "--bit", "16", "--de_step", "1", "--learning-rate", "0.006", "--encoder", "inference")


def params(path):
    return {k: v.numpy() for k, v in paddle.load(str(path))["model"].items()}


def epoch_rows(run):
    return [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_epochs(small_toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "two"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "2", *TRAIN)])
    assert_training_moved(run)
    return run


@pytest.fixture(scope="module")
def resumed(small_toy, tmp_path_factory):
    """1 epoch, then --resume to 2, in one folder; `after_one` keeps a copy of the folder after epoch 1."""
    base = tmp_path_factory.mktemp("resumed")
    run = base / "one_plus_one"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "1", *TRAIN)])
    shutil.copytree(run, base / "after_one")
    backbone_inode = (run / "frozen_backbone_16.pdparams").stat().st_ino
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "2", *TRAIN), "--resume",
             run / "last_16.pdckpt"])
    assert_training_moved(run)
    return {"run": run, "after_one": base / "after_one", "backbone_inode": backbone_inode}


def test_training_learns(two_epochs):
    rows = epoch_rows(two_epochs)
    assert rows[1]["map"] > rows[0]["map"] > rows[0]["map_random_codes"], rows


def test_whole_network_training_under_the_fitted_standardisation_is_refused(tmp_path):
    """--dataset toy --train_scope all trained nothing (hash outputs 1e4-1e5, tanh saturated, every gradient 0):
    it is refused before anything runs, saying why and what to use instead."""
    from utils.train.options import STANDARDIZED_WHOLE_NETWORK, parse_args
    with pytest.raises(ValueError) as error:
        parse_args(["--dataset", "toy", "--train_scope", "all", "--output-dir", str(tmp_path)])
    assert str(error.value) == STANDARDIZED_WHOLE_NETWORK and "\n" not in str(error.value)
    assert "--train_scope hash" in str(error.value) and "--standardize_features false" in str(error.value)
    assert not list(tmp_path.iterdir())
    # the same network trained as a whole without the standardisation, or evaluated, is accepted
    assert parse_args(["--dataset", "toy", "--train_scope", "all", "--standardize_features", "false",
                       "--output-dir", str(tmp_path)]).train_scope == "all"
    checkpoint = tmp_path / "weights" / "x.pdparams"  # --eval checks that the checkpoint it is given exists
    checkpoint.parent.mkdir()
    checkpoint.touch()
    assert parse_args(["--dataset", "toy", "--train_scope", "all", "--eval", "--pretrained", str(checkpoint),
                       "--output-dir", str(tmp_path)]).eval


def test_run_folder_contents(two_epochs):
    names = {p.name for p in two_epochs.iterdir()}
    assert {"config.json", "log_train_16.txt", "epochs.jsonl", "metrics.json", "last_16.pdckpt",
            "model_best_16.pdparams", "model_best_16.pdopt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave no temp files
    config = json.loads((two_epochs / "config.json").read_text())
    assert config["bit"] == 16 and config["train_scope"] == "hash" and config["seed"] == 0  # the seed's 16-bit seed
    rows = [json.loads(line) for line in (two_epochs / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"loss", "lr", "scale", "map", "map_random_codes"} <= set(r) for r in rows)
    log = (two_epochs / "log_train_16.txt").read_text()
    assert "config: " in log and "Epoch[001/002], Step[0004/0004], Loss:" in log and "mAP@200:" in log
    # --encoder inference (recorded in config.json): the backbone ran through Paddle Inference, and the run says so
    final = json.loads((two_epochs / "metrics.json").read_text())["final"]
    assert config["encoder"] == "inference" and final["encoder"] == "inference"
    # --plots false (the tests' runs, conftest.toy_args): no figure drawn, none said to be
    assert config["plots"] is False and not [n for n in names if n.endswith(".png")] and "plots:" not in log


def test_a_frozen_runs_job_counts_every_view_and_both_evaluation_sets():
    """What --encoder auto decides by in a frozen backbone's run: the images each process encodes."""
    from utils.train import build
    datasets = {"train": [0] * 100, "test": [0] * 10, "database": [0] * 50}
    for views, expected in ((0, 160), (1, 160), (3, 360)):
        assert build.frozen_backbone_images(SimpleNamespace(frozen_views=views), datasets) == expected, views


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


def test_a_frozen_backbone_is_written_once_and_the_checkpoints_name_it(two_epochs):
    """--train-scope hash: the backbone's weights in a file of their own; both checkpoints hold the hash layer and
    the standardisation with that file's name and sha256, and read back whole."""
    from models.alexnet import expected_backbone_shapes
    from utils.runtime.fileio import sha256_of
    from utils.train.checkpoint import load_model_state
    backbone = two_epochs / "frozen_backbone_16.pdparams"
    last, best = (paddle.load(str(two_epochs / name)) for name in ("last_16.pdckpt", "model_best_16.pdparams"))
    changed = {"hash_layer.weight", "hash_layer.bias", "feature_mean", "feature_std"}
    assert set(last["model"]) == set(best["model"]) == changed
    assert last["frozen_backbone"] == best["frozen_backbone"] == {"file": backbone.name, "sha256": sha256_of(backbone)}
    alexnet = {name for name in expected_backbone_shapes() if not name.startswith("classifier.6.")}  # no fc8
    assert set(paddle.load(str(backbone))) == alexnet
    whole = load_model_state(two_epochs / "model_best_16.pdparams")
    assert set(whole) == alexnet | changed
    np.testing.assert_array_equal(whole["hash_layer.weight"].numpy(), best["model"]["hash_layer.weight"].numpy())
    assert (two_epochs / "model_best_16.pdparams").stat().st_size < 1e6 < 2e8 < backbone.stat().st_size


def test_a_checkpoint_apart_from_its_frozen_backbone_is_refused_naming_the_file(two_epochs, tmp_path):
    from utils.train.checkpoint import load_model_state
    alone, backbone = tmp_path / "model_best_16.pdparams", tmp_path / "frozen_backbone_16.pdparams"
    shutil.copy(two_epochs / alone.name, alone)
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{alone} holds the weights a frozen-backbone run trained, not its backbone, which is in {backbone} "
            f"(written once per run): not found. Copy the run folder whole")):
        load_model_state(alone)
    paddle.save({"features.0.weight": paddle.zeros([1])}, str(backbone))
    with pytest.raises(ValueError, match=re.escape(f"{backbone} is not the backbone {alone} was trained with (sha256 ")
                       + r"[0-9a-f]{12} recorded, [0-9a-f]{12} found\)"):
        load_model_state(alone)


def test_resume_continues_exactly(two_epochs, resumed):
    """Parameters, memory bank, optimizer state, lr schedule, losses, mAPs and the best checkpoint: 2 epochs equal
    1 + resume + 1, across an lr step (--lr-step 1) and with a new best epoch in the resumed part."""
    run = resumed["run"]
    straight_rows, resumed_rows = epoch_rows(two_epochs), epoch_rows(run)
    assert [r["epoch"] for r in resumed_rows] == [1, 2]  # the resumed run appends to the same folder
    # TRAIN's base lr 6e-3 x 32 / 64, halved after epoch 1
    assert [r["lr"] for r in straight_rows] == pytest.approx([3e-3, 1.5e-3])
    for key in ("lr", "loss", "scale", "map"):
        assert [r[key] for r in resumed_rows] == [r[key] for r in straight_rows], key
    a, b = paddle.load(str(run / "last_16.pdckpt")), paddle.load(str(two_epochs / "last_16.pdckpt"))
    assert set(a["model"]) == set(b["model"])
    for key in b["model"]:
        np.testing.assert_array_equal(a["model"][key].numpy(), b["model"][key].numpy(), err_msg=key)
    for key in ("U", "Y"):
        np.testing.assert_array_equal(a["criterion"][key].numpy(), b["criterion"][key].numpy(), err_msg=key)
    assert a["scheduler"] == b["scheduler"]
    assert a["best"]["epoch"] == b["best"]["epoch"] == 2 and a["best"]["map"] == b["best"]["map"]
    best_a, best_b = params_of(run / "model_best_16.pdparams"), params_of(two_epochs / "model_best_16.pdparams")
    for key in best_b:
        np.testing.assert_array_equal(best_a[key], best_b[key], err_msg=key)
    # the resumed run kept the frozen backbone's file (the checkpoints before it name it) rather than rewrite it
    assert (run / "frozen_backbone_16.pdparams").stat().st_ino == resumed["backbone_inode"]


def params_of(path):
    from utils.train.checkpoint import load_model_state
    return {k: v.numpy() for k, v in load_model_state(path).items()}


def test_resume_keeps_the_best_so_far(resumed, small_toy, tmp_path):
    """A resumed run compares its epochs with the best stored in the checkpoint: a worse epoch does not overwrite
    model_best. The checkpoint after epoch 1 is given a best mAP no epoch can beat (1.0)."""
    run = tmp_path / "resume_best"
    shutil.copytree(resumed["after_one"], run)
    state = paddle.load(str(run / "last_16.pdckpt"))
    state["best"] = dict(state["best"], map=1.0)
    from utils.train import checkpoint  # written with its checksum: a file changed behind it would be refused
    checkpoint.save(state, run / "last_16.pdckpt", "the last checkpoint, edited")
    best_before = (run / "model_best_16.pdparams").read_bytes()
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "2", *TRAIN), "--resume",
             run / "last_16.pdckpt"])
    assert_training_moved(run)
    assert (run / "model_best_16.pdparams").read_bytes() == best_before
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final_epoch"] == 2 and metrics["best_epoch"] == 1
    assert paddle.load(str(run / "last_16.pdckpt"))["best"]["epoch"] == 1


def test_hash_layer_learns_at_ten_times_the_backbone_rate():
    """docs/protocol.md#network: the new hash layer's learning rate is 10x the rest. One momentum-SGD step from rest
    moves each parameter by -lr * its multiplier * its gradient."""
    from utils.train.recipes.seed import SeedRecipe
    paddle.seed(0)
    with paddle.utils.unique_name.guard():
        from models import HashNet
        model = HashNet(8, init="kaiming")
    cfg = SimpleNamespace(recipe="seed", learning_rate=0.5, batch_size=64, lr_step=50, optimizer="sgd", momentum=0.9,
                          weight_decay=0.0)
    optimizer, _ = SeedRecipe(cfg).optimizer(model)
    model.eval()  # no dropout: the gradient is a plain function of the input
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype("float32"))
    (model(x) * paddle.to_tensor(np.random.default_rng(1).standard_normal((4, 8)).astype("float32"))).sum().backward()
    watched = {"hash_layer.weight": 10.0, "hash_layer.bias": 10.0, "classifier.4.weight": 1.0,
               "classifier.1.bias": 1.0, "features.10.weight": 1.0}
    named = dict(model.named_parameters())
    before = {name: named[name].numpy().copy() for name in watched}
    grads = {name: named[name].grad.numpy().copy() for name in watched}
    optimizer.step()
    for name, multiplier in watched.items():
        change, grad = named[name].numpy() - before[name], grads[name]
        assert np.abs(grad).max() > 0, name
        ratio = float((change * grad).sum() / (grad * grad).sum())  # least-squares change / gradient
        assert ratio == pytest.approx(-0.5 * multiplier, rel=1e-3), name


@pytest.mark.parametrize("flag", ["bit", "batch_size", "epoch", "eval_epoch", "step_continuation", "de_step"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_training_flags_must_be_positive(flag, value, tmp_path):
    from utils.train.options import parse_args
    with pytest.raises(ValueError, match=f"^--{flag} must be >= 1, got {value}$"):
        parse_args(["--dataset", "toy", "--output-dir", str(tmp_path), f"--{flag}", value])


def test_checkpoint_with_missing_or_unexpected_keys_is_refused_naming_them(tmp_path):
    from models import HashNet
    from utils.train.checkpoint import load_model_weights
    with paddle.utils.unique_name.guard():
        model = HashNet(16)
    state = dict(model.state_dict())
    del state["classifier.4.bias"]
    state["extra.weight"] = paddle.zeros([2])
    path = tmp_path / "model_best_16.pdparams"
    paddle.save(state, str(path))
    with pytest.raises(ValueError, match=r"does not fit HashNet: missing keys \['classifier.4.bias'\], "
                                         r"unexpected keys \['extra.weight'\]"):
        load_model_weights(model, path)
    del state["extra.weight"]
    paddle.save(state, str(path))
    with pytest.raises(ValueError, match=r"missing keys \['classifier.4.bias'\], unexpected keys \[\]"):
        load_model_weights(model, path)


def test_a_model_built_from_a_checkpoint_holds_that_checkpoint_alone(two_epochs, tmp_path):
    """build_model(weights=...) (--eval, --resume, --pretrained, predict.py): every value is the checkpoint's, no
    ImageNet file is read (an absent one is no error), and a missing checkpoint is named by the flag that gave it."""
    import logging

    from utils.train import build, checkpoint
    cfg = SimpleNamespace(bit=16, backbone="alexnet", backbone_weights=str(tmp_path / "absent.pth"), init="kaiming",
                          train_scope="hash")
    path = two_epochs / "model_best_16.pdparams"
    model = build.build_model(cfg, logging.getLogger("test"), weights=path)
    expected = checkpoint.load_model_state(path)
    assert sorted(model.state_dict()) == sorted(expected)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected[name].numpy(), err_msg=name)
    assert all(p.stop_gradient for p in model.backbone_parameters())  # --train-scope hash still holds
    missing = tmp_path / "last_16.pdckpt"
    message = f"^resume checkpoint \\(--resume\\) not found: {re.escape(str(missing))}$"
    with pytest.raises(FileNotFoundError, match=message):
        build.build_model(cfg, logging.getLogger("test"), weights=missing, what=build.RESUME_FILE)


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

    from utils.train import build
    from utils.train.options import parse_args
    monkeypatch.setattr(build, "PROJECT_ROOT", tmp_path)  # an empty pretrained/ folder
    cfg = parse_args(["--dataset", "coco", "--output-dir", str(tmp_path)])
    logger = logging.getLogger("test-warning")
    with caplog.at_level(logging.WARNING, logger="test-warning"):
        assert build.resolve_backbone_weights(cfg, logger) is None
    assert "no ImageNet AlexNet weights found" in caplog.text and "far from the paper" in caplog.text
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    assert build.resolve_backbone_weights(cfg, logger) == str(tmp_path / "pretrained" / "alexnet-owt-7be5be79.pth")
    toy = parse_args(["--dataset", "toy", "--output-dir", str(tmp_path)])
    assert build.resolve_backbone_weights(toy, logger) is None  # the toy preset is from scratch on purpose


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
    # the seed's recipe from a random backbone barely moves in 3 steps (docs/protocol.md#training-from-scratch): ~1e-5
    # of each parameter, still 20x the float32 rounding of a weight-decay-only step
    assert_training_moved(run, min_change=1e-6)
    log = (run / "log_train_16.txt").read_text()
    assert "9 train, 4 query, 13 database images, 80 classes" in log
    assert "no ImageNet AlexNet weights found" in log  # the COCO recipe warns when it starts from scratch
    metrics = json.loads((run / "metrics.json").read_text())["final"]
    assert metrics["topk"] == 5000 and metrics["num_database"] == 13 and 0 < metrics["map"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert (config["crop_size"], config["resize_size"], config["continuation_step"]) == (224, 256, 20)


def test_training_leaves_the_best_checkpoints_database_codes_for_predict(two_epochs, small_toy, tmp_path, capsys):
    """The best checkpoint's database codes from its evaluation are in the run's retrieval folder, where predict.py
    finds them (no encoding), and they are the codes predict.py computes itself."""
    import predict
    query = str(small_toy["data_path"] / (small_toy["list_dir"] / "test.txt").read_text().split()[0])
    common = ["--pretrained", str(two_epochs), "--img", query, "--num_workers", "0", "--json"]
    assert predict.main(common) == 0
    found = capsys.readouterr()
    assert "(200 x 16 bits, cached)" in found.err and "recomputing" not in found.err, found.err
    assert predict.main([*common, "--save_path", str(tmp_path)]) == 0
    computed = capsys.readouterr()
    assert "encoding 200 images once" in computed.err
    np.testing.assert_array_equal(np.load(two_epochs / "retrieval" / "database_code_16.npy"),
                                  np.load(tmp_path / "database_code_16.npy"))
    assert computed.out == found.out.replace(str(two_epochs / "retrieval"), str(tmp_path))
