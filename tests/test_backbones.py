"""The backbones of models/backbones.py (--backbone): torchvision weights through the converter giving torch's logits,
the weight-file messages, BatchNorm in train and eval mode, and a resnet18 run through training, its run folder,
predict.py, export_model.py and infer.py.

The torch reference runs in a subprocess (tests/torch_reference_backbones.py: torchvision's key names in plain torch),
so that the reference logits never come from a process that also holds Paddle.
"""
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

import tolerances
from conftest import assert_training_moved, run_cli, toy_args
from models import HashNet
from models.backbones import BACKBONE_NAMES, BACKBONES, build_network, network_shapes
from models.hashnet import normalize_images
from models.pretrained import backbone_state_from_file, convert_to_pdparams, load_pretrained
from test_plots_report import make_run, paper_table_lines, report, table_lines
from utils.train.checkpoint import load_model_state

TORCH_HELPER = Path(__file__).with_name("torch_reference_backbones.py")
TORCH_SKIP_REASON = "torch is not installed (pip install torch, CPU) - needed to write/read a .pth"
# torchvision's num_params of these networks (its weights tables): the converted files hold exactly them
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "vgg11_bn": 132_868_840}
RUN = ("--backbone", "resnet18", "--epoch", "1", "--bit", "16", "--crop-size", "32", "--resize-size", "36")


def relative_error(out, ref):
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    if importlib.util.find_spec("torch") is None:
        pytest.skip(TORCH_SKIP_REASON)
    out = tmp_path_factory.mktemp("torch_backbones")
    proc = subprocess.run([sys.executable, str(TORCH_HELPER), "--out-dir", str(out), *TORCHVISION_PARAMETERS],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMETERS))
def test_torchvision_weights_through_the_converter_give_torchs_logits(torch_reference, tmp_path, name):
    out = tmp_path / f"{name}_imagenet.pdparams"
    summary = convert_to_pdparams(torch_reference / f"{name}.pth", out)  # the backbone is read from the keys
    assert (summary["backbone"], summary["parameters"]) == (name, TORCHVISION_PARAMETERS[name])
    network = build_network(BACKBONES[name])
    report = load_pretrained(network, out, backbone=name)
    assert len(report["loaded"]) == len(network.state_dict())  # every parameter and BatchNorm statistic
    network.eval()
    with paddle.no_grad():
        logits = network(paddle.to_tensor(np.load(torch_reference / "input.npy"))).numpy()
    reference = np.load(torch_reference / f"{name}_logits.npy")
    assert logits.shape == reference.shape == (2, 1000) and np.abs(reference).max() > 1
    assert relative_error(logits, reference) < 1e-4


def test_hashnet_takes_the_backbone_from_the_file_and_replaces_the_classifier(torch_reference):
    path = torch_reference / "resnet18.pth"
    paddle.seed(0)
    model = HashNet(16, pretrained=path, backbone="resnet18")
    state, weights = model.state_dict(), backbone_state_from_file(path, "resnet18")
    assert not [name for name in state if name.startswith("fc.")]
    np.testing.assert_array_equal(state["layer4.1.bn2._variance"].numpy(), weights["layer4.1.bn2._variance"])
    assert state["hash_layer.weight"].shape == [512, 16] and state["feature_mean"].shape == [512]
    assert abs(float(model.hash_layer.weight.std()) - 0.01) < 1e-3 and float(model.hash_layer.bias.abs().max()) == 0


def test_a_file_of_another_backbone_is_named_in_the_error(torch_reference):
    with pytest.raises(ValueError) as error:
        convert_to_pdparams(torch_reference / "resnet18.pth", torch_reference / "x.pdparams", backbone="resnet34")
    message = str(error.value)
    assert "ResNet-34 weights in" in message and "missing keys (expected shape): layer1.2.conv1.weight" in message
    assert "names the backbone a file holds" in message


def test_missing_weights_name_the_file_and_where_it_comes_from(tmp_path):
    path = tmp_path / "pretrained" / "resnet50-0676ba61.pth"
    with pytest.raises(FileNotFoundError) as error:
        backbone_state_from_file(path, "resnet50")
    message = str(error.value)
    assert f"ImageNet ResNet-50 weights not found: {path}" in message
    assert "put the file at pretrained/resnet50-0676ba61.pth (or pass its location with --backbone_weights)" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert "https://download.pytorch.org/models/resnet50-19c8e357.pth" in message  # the authors' torchvision's
    assert "--out pretrained/resnet50_imagenet.pdparams" in message
    assert "Or Paddle's own https://paddle-hapi.bj.bcebos.com/models/resnet50.pdparams (usable as is)" in message
    with pytest.raises(FileNotFoundError, match="Paddle's zoo publishes no ImageNet VGG-11-BN"):
        backbone_state_from_file(tmp_path / "vgg11_bn-6002323d.pth", "vgg11_bn")


def test_auto_weights_are_looked_up_by_the_backbones_file_names(tmp_path, monkeypatch, caplog):
    from utils.train import build
    monkeypatch.setattr(build, "PROJECT_ROOT", tmp_path)
    cfg = SimpleNamespace(backbone="resnet18", backbone_weights="auto")
    with caplog.at_level(logging.WARNING):
        assert build.resolve_backbone_weights(cfg, logging.getLogger("auto")) is None
    assert "no ImageNet ResNet-18 weights found (looked for pretrained/resnet18_imagenet.pdparams, " \
           "pretrained/resnet18-f37072fd.pth, pretrained/resnet18-5c106cde.pth, pretrained/resnet18.pdparams)" \
        in caplog.text
    (tmp_path / "pretrained").mkdir()
    for name in ("resnet18.pdparams", "resnet18-5c106cde.pth", "alexnet-owt-7be5be79.pth"):
        (tmp_path / "pretrained" / name).touch()
    assert build.resolve_backbone_weights(cfg, None) == str(tmp_path / "pretrained" / "resnet18-5c106cde.pth")
    cfg.backbone = None  # a configuration from before --backbone: AlexNet's files
    assert build.resolve_backbone_weights(cfg, None) == str(tmp_path / "pretrained" / "alexnet-owt-7be5be79.pth")


def test_a_kaiming_network_follows_paddle_seed_and_its_batchnorm_starts_as_the_identity():
    """HashNet builds the layers as zeros and init_kaiming_ draws every weight (NumPy, seeded from Paddle's RNG)."""
    def build(seed):
        paddle.seed(seed)
        return HashNet(8, backbone="resnet18", init="kaiming")

    first, again, other = build(0), build(0), build(1)
    for (name, value), repeat in zip(first.named_parameters(), again.parameters()):
        np.testing.assert_array_equal(value.numpy(), repeat.numpy(), err_msg=name)
    conv1 = first.conv1.weight.numpy()
    assert conv1.std() == pytest.approx((2.0 / (64 * 7 * 7)) ** 0.5, rel=0.03)
    assert not np.array_equal(conv1, other.conv1.weight.numpy())
    norms = [layer for layer in first.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D)]
    assert len(norms) == 20  # bn1, two per block, three downsampling ones
    for layer in norms:
        np.testing.assert_array_equal(layer.weight.numpy(), 1.0)
        np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_batchnorm_uses_the_batch_in_train_mode_and_the_running_statistics_in_eval_mode():
    paddle.seed(0)
    model = HashNet(16, backbone="resnet18", init="kaiming")
    images = paddle.to_tensor(np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    running = model.bn1._mean.numpy().copy()
    model.eval()
    with paddle.no_grad():
        alone, in_batch = model.fc7(images[:1]).numpy(), model.fc7(images).numpy()[:1]
        # an image's features are its own: batches of 1 and 4 differ by rounding only (tests/tolerances.py)
        tolerances.assert_fc7_agree(model, alone, in_batch, "ResNet-18 fc7, batch of 1 against 4")
        np.testing.assert_array_equal(model.bn1._mean.numpy(), running)
        model.train()
        pair, quad = model.fc7(images[:2]).numpy()[:1], model.fc7(images).numpy()[:1]
    assert np.abs(pair - quad).max() > 1e-2 * np.abs(quad).max()  # the batch's statistics
    assert np.abs(quad - in_batch).max() > 1e-2 * np.abs(in_batch).max()
    assert np.abs(model.bn1._mean.numpy() - running).max() > 1e-3  # the running statistics follow the batches


class ListLoader(list):
    """What train_one_epoch needs of a loader, over fixed batches."""
    batch_sampler = dataset = SimpleNamespace(set_epoch=lambda epoch: None)


def test_the_engine_trains_batchnorm_only_when_the_backbone_trains():
    """train_one_epoch: --train-scope all trains in train mode (BatchNorm statistics move), hash in eval mode."""
    from utils.losses.hashnet_loss import HashNetLoss
    from utils.train import build, engine
    from utils.train.recipes import recipe_for
    rng = np.random.default_rng(0)
    images = paddle.to_tensor(rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8))
    labels = paddle.to_tensor(np.eye(4, dtype=np.float32)[np.arange(8) % 4])
    batches = [(images[:4], labels[:4], paddle.arange(4)), (images[4:], labels[4:], paddle.arange(4, 8))]
    moved = {}
    for scope in ("all", "hash"):
        paddle.seed(0)
        cfg = SimpleNamespace(bit=16, backbone="resnet18", backbone_weights="none", init="kaiming", train_scope=scope,
                              recipe="seed", unit="epoch", rounds=1, continuation_step=1, epochs=1, log_freq=10,
                              sampling="sharded", learning_rate=1e-3, batch_size=4, lr_step=10, optimizer="sgd",
                              momentum=0.9, weight_decay=5e-4)
        model = build.build_model(cfg, logging.getLogger("bn"))
        optimizer, _ = recipe_for(cfg).optimizer(model)
        before = {name: p.numpy().copy() for name, p in model.named_parameters()}
        engine.train_one_epoch(model, HashNetLoss(16, 8, 0.1, 4), optimizer, ListLoader(batches), 1, cfg,
                               logging.getLogger("bn"))
        moved[scope] = {name for name, p in model.named_parameters() if not np.array_equal(p.numpy(), before[name])}
    assert {"bn1._mean", "layer4.1.bn2._variance", "conv1.weight", "hash_layer.weight"} <= moved["all"]
    assert moved["hash"] == {"hash_layer.weight", "hash_layer.bias"}


def test_every_backbone_builds_with_its_feature_size():
    paddle.seed(0)
    for name in ("resnet34", "vgg13"):  # one more of each family than the tests above (VGG without BatchNorm)
        with paddle.LazyGuard():
            model = HashNet(8, backbone=name)
        assert model.feature_mean.shape == [BACKBONES[name].feature_dim] and model.hash_layer.weight.shape[1] == 8
    # the 14 of the authors' PyTorch code, then the paper recipe's CaffeNet (tests/test_paper_recipe.py)
    assert len(BACKBONE_NAMES) == 15 and BACKBONE_NAMES[0] == "alexnet" and BACKBONE_NAMES[-1] == "caffenet"
    with pytest.raises(ValueError, match="--backbone 'resnet20' is not one of alexnet, resnet18, "):
        HashNet(8, backbone="resnet20")


def test_resnet_features_are_the_global_average_of_layer4():
    """At 64 px layer4 is 2 x 2 (at 32 px, the crop of the other tests, it is 1 x 1 and flattening equals pooling):
    fc7 is layer4's mean over its positions, 512 numbers an image, whatever the crop."""
    paddle.seed(0)
    model = HashNet(16, backbone="resnet18")
    model.eval()
    images = paddle.to_tensor(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    with paddle.no_grad():
        x = normalize_images(images)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(model, name)(x)
        fc7 = model.fc7(images).numpy()
        assert fc7.shape == (2, 512)
        assert model(images).shape == [2, 16]
    assert x.shape == [2, 512, 2, 2]
    layer4 = x.numpy()
    assert np.abs(layer4 - layer4.mean((2, 3), keepdims=True)).max() > 1e-2 * np.abs(layer4).max()  # 4 positions differ
    np.testing.assert_allclose(fc7, layer4.mean((2, 3)), rtol=1e-5, atol=1e-6 * np.abs(layer4).max())


# The layers the authors' PyTorch HashNet keeps of the ImageNet classifier: the first six children, fc6 and fc7 with
# their ReLU and Dropout (torchvision's VGG classifier is Linear ReLU Dropout Linear ReLU Dropout Linear; AlexNet's
# starts with its Dropout and ends fc7 with its ReLU)
AUTHORS_HEADS = {"vgg": ("Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"),
                 "alexnet": ("Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU")}


def test_the_head_keeps_the_authors_layers():
    for name, spec in BACKBONES.items():
        if spec.family not in AUTHORS_HEADS:
            continue
        with paddle.LazyGuard():
            head = list(getattr(HashNet(8, backbone=name), spec.head).children())
        assert tuple(type(layer).__name__ for layer in head) == AUTHORS_HEADS[spec.family], name
        assert [layer.p for layer in head if isinstance(layer, paddle.nn.Dropout)] == [0.5, 0.5], name
        assert [layer.weight.shape[1] for layer in head if isinstance(layer, paddle.nn.Linear)] == [4096, 4096], name


def test_vgg_features_go_through_the_last_dropout_in_train_mode_only():
    """fc7 held at 1 (zero weights, bias 1): the final Dropout zeroes about half of it and doubles the rest in train
    mode, and passes it unchanged in eval mode. A head without that Dropout gives 1 in both."""
    model = HashNet(8, backbone="vgg11", init="none")
    model.classifier[3].bias.set_value(paddle.ones([4096]))
    images = paddle.to_tensor(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    paddle.seed(0)
    model.train()
    trained = model.fc7(images).numpy()
    model.eval()
    np.testing.assert_array_equal(model.fc7(images).numpy(), np.ones((2, 4096), np.float32))
    assert set(np.unique(trained)) == {0.0, 2.0}
    assert 0.45 < (trained == 0).mean() < 0.55  # p = 0.5 over 8192 units: 0.5 +- 0.0055


def torchvision_layout(spec, rng):
    """A torchvision state dict of `spec`'s ImageNet network made with NumPy: torch's names (BatchNorm's running_mean,
    running_var and num_batches_tracked) and layout (Linear weights [out, in]); random values, variances positive."""
    arrays = {}
    for ours, shape in network_shapes(spec).items():
        stem, _, last = ours.rpartition(".")
        if last == "_mean":
            arrays[f"{stem}.running_mean"] = rng.normal(0.0, 1.0, shape).astype(np.float32)
            arrays[f"{stem}.num_batches_tracked"] = np.array(1000, np.int64)
        elif last == "_variance":
            arrays[f"{stem}.running_var"] = rng.uniform(2.0, 3.0, shape).astype(np.float32)
        else:
            arrays[ours] = rng.normal(0.0, 0.01, shape[::-1] if len(shape) == 2 else shape).astype(np.float32)
    return arrays


def test_torch_batchnorm_statistics_become_paddles_mean_and_variance_without_torch(tmp_path, monkeypatch):
    """The key map of a .pth (models/pretrained.py TORCH_BATCHNORM_NAMES) without torch: reading the file is the
    only step that needs it (read_torch_arrays), so a stand-in reads the same arrays from an .npz under the .pth name,
    and `import torch` fails throughout. The converted .pdparams then loads into a HashNet: every BatchNorm layer's
    _mean is torch's running_mean and its _variance torch's running_var."""
    from models import pretrained
    torch_state = torchvision_layout(BACKBONES["resnet18"], np.random.default_rng(0))
    pth = tmp_path / "resnet18-numpy.pth"
    with open(pth, "wb") as f:
        np.savez(f, **torch_state)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(pretrained, "read_torch_arrays", lambda path, backbone=None: dict(np.load(path)))
    summary = convert_to_pdparams(pth, tmp_path / "resnet18_imagenet.pdparams")  # the backbone read from the keys
    assert (summary["backbone"], summary["statistics"]) == ("resnet18", 2 * 4800)  # 20 BatchNorm layers' mean, var
    model = HashNet(16, pretrained=tmp_path / "resnet18_imagenet.pdparams", backbone="resnet18")
    state = model.state_dict()
    statistics = [name[:-len(".running_mean")] for name in torch_state if name.endswith(".running_mean")]
    assert len(statistics) == 20
    for layer in statistics:
        np.testing.assert_array_equal(state[f"{layer}._mean"].numpy(), torch_state[f"{layer}.running_mean"])
        np.testing.assert_array_equal(state[f"{layer}._variance"].numpy(), torch_state[f"{layer}.running_var"])
    np.testing.assert_array_equal(state["layer4.1.conv2.weight"].numpy(), torch_state["layer4.1.conv2.weight"])
    assert not any("num_batches_tracked" in name for name in state)


# ------------------------------------------------------------------------------------------- a resnet18 run
@pytest.fixture(scope="module")
def resnet_run(small_toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("backbone_runs") / "resnet18"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, *RUN)])
    assert_training_moved(run)
    return run


def test_the_run_records_its_backbone_and_every_entry_point_reads_it(resnet_run, small_toy):
    import predict
    from utils.train.options import parse_args
    config = json.loads((resnet_run / "config.json").read_text())
    assert (config["backbone"], config["crop_size"]) == ("resnet18", 32)
    state = load_model_state(resnet_run / "last_16.pdckpt")
    assert state["hash_layer.weight"].shape == [512, 16] and "layer4.1.conv2.weight" in state
    image = str(Path(small_toy["data_path"]) / "images" / "000001.png")
    assert predict.parse_args(["--pretrained", str(resnet_run), "--img", image]).backbone == "resnet18"
    evaluation = parse_args(["--eval", "--pretrained", str(resnet_run), "--output-dir", str(resnet_run.parent)])
    assert (evaluation.backbone, evaluation.crop_size) == ("resnet18", 32)
    with pytest.raises(ValueError, match="this model's backbone is alexnet: was the checkpoint trained with another "
                                         "--backbone"):
        predict.load_model(16, resnet_run / "model_best_16.pdparams", "alexnet")


def test_a_run_folder_without_the_key_is_an_alexnet_run(tmp_path):
    import predict
    for name, config in (("old", {"bit": 16, "dataset": "toy"}), ("vgg", {"bit": 16, "backbone": "vgg16"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        (tmp_path / name / "model_best_16.pdparams").touch()
    parsed = {name: predict.parse_args(["--pretrained", str(tmp_path / name), "--img", "x.png"]).backbone
              for name in ("old", "vgg")}
    assert parsed == {"old": "alexnet", "vgg": "vgg16"}


def test_export_and_infer_give_the_dynamic_graphs_codes(resnet_run, small_toy, tmp_path):
    import export_model
    import predict
    from deploy.inference_python.infer import HashInference
    from utils.datasets.image_list import build_transform
    from utils.retrieval.search import load_batch
    assert export_model.main(["--pretrained", str(resnet_run), "--save-inference-dir", str(tmp_path / "inf")]) == 0
    meta = json.loads((tmp_path / "inf" / "export_meta.json").read_text())
    assert (meta["backbone"], meta["bit"], meta["crop_size"]) == ("resnet18", 16, 32)
    root = Path(small_toy["data_path"])
    images = [root / line.split()[0] for line in (Path(small_toy["list_dir"]) / "test.txt").read_text().splitlines()]
    model = predict.load_model(16, resnet_run / "model_best_16.pdparams", "resnet18")
    with paddle.no_grad():
        reference = model(paddle.to_tensor(load_batch(images, build_transform(False, 36, 32)))).numpy()
    raw = HashInference(tmp_path / "inf", enable_mkldnn=True).encode_paths(images, batch_size=16)
    # rounding only: the oneDNN fc7 difference on these batch shapes propagated through the hash layer
    tolerance = tolerances.measured_output_tolerance(model, load_batch(images, build_transform(False, 36, 32)),
                                                     batch_sizes=(16,), what="ResNet-18 export")
    assert raw.shape == (40, 16)
    tolerances.assert_outputs_agree(raw, reference, tolerance, "ResNet-18 exported program")


def test_the_report_tells_backbones_apart(tmp_path):
    make_run(tmp_path, "coco_48_alexnet", 48, final_map=0.70)
    resnet = make_run(tmp_path, "coco_48_resnet50", 48, final_map=0.80)
    config = json.loads((resnet / "config.json").read_text())
    (resnet / "config.json").write_text(json.dumps({**config, "backbone": "resnet50"}))
    text = report.main(["--runs", str(tmp_path), "--out", str(tmp_path / "r")]).read_text()
    assert "| backbone | alexnet | resnet50 |" in table_lines(text)
    cells = "| — | — | 0.7000 † / 0.8000 [resnet50] † | — |"  # the paper's AlexNet numbers: the other network marked
    assert f"|  | **this project, final epoch** {cells}" in paper_table_lines(text)
    assert "trains on resnet50: the reference rows are AlexNet's" in text
