"""AlexNet backbone and ImageNet weight loaders (models/alexnet.py).

The torch reference runs in a subprocess (tests/torch_reference_alexnet.py) so that the
reference logits never come from a process that also holds Paddle.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from models import HashNet
from models.alexnet import AlexNet, expected_backbone_shapes, init_kaiming_
from models.pretrained import (
    DEFAULT_PRETRAINED_PATH,
    PRETRAINED_FLAG,
    TORCHVISION_URL,
    backbone_state_from_file,
    check_backbone_state,
    from_torch_layout,
    load_paddle_alexnet_state,
    load_pretrained,
    load_torchvision_state,
    paddle_alexnet_url,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCH_HELPER = Path(__file__).with_name("torch_reference_alexnet.py")
TORCH_MISSING = importlib.util.find_spec("torch") is None
TORCH_SKIP_REASON = "torch is not installed (pip install torch, CPU) - needed to write/read a .pth"


def eval_logits(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def run_checked(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory) -> Path:
    if TORCH_MISSING:
        pytest.skip(TORCH_SKIP_REASON)
    out_dir = tmp_path_factory.mktemp("torch_reference")
    run_checked([sys.executable, str(TORCH_HELPER), "--out-dir", str(out_dir)])
    return out_dir


@pytest.fixture(scope="module")
def paddle_zoo_file(tmp_path_factory):
    """paddle.vision's AlexNet with He-scaled random weights and non-zero biases (so logits are
    O(1) and a bias mix-up shows), saved with paddle.save; returns (path, model)."""
    paddle.seed(3)
    zoo = paddle.vision.models.AlexNet()
    for name, param in zoo.named_parameters():
        if name.endswith("weight"):
            fan_in = param.shape[1] * int(np.prod(param.shape[2:])) if param.ndim == 4 else param.shape[0]
            param.set_value(paddle.normal(0.0, (2.0 / fan_in) ** 0.5, shape=param.shape))
        else:
            param.set_value(paddle.uniform(param.shape, min=-0.1, max=0.1))
    path = tmp_path_factory.mktemp("paddle_zoo") / "AlexNet_pretrained.pdparams"
    paddle.save(zoo.state_dict(), str(path))
    return path, zoo


# --- network layout ---------------------------------------------------------------------


def test_parameter_names_and_shapes_are_torchvision_keys():
    model = AlexNet()
    found = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert found == expected_backbone_shapes()
    assert list(found)[:2] == ["features.0.weight", "features.0.bias"]
    assert list(found)[-2:] == ["classifier.6.weight", "classifier.6.bias"]
    assert tuple(AlexNet(num_classes=10).classifier[6].weight.shape) == (4096, 10)


def test_dropout_uses_torch_semantics():
    model = AlexNet()
    for index in (0, 3):
        assert model.classifier[index].p == 0.5
        assert model.classifier[index].mode == "upscale_in_train"


def test_init_kaiming_sets_fan_out_normal_convs_and_small_linears():
    paddle.seed(0)
    model = init_kaiming_(AlexNet())
    conv1 = model.features[0].weight.numpy()
    assert conv1.std() == pytest.approx((2.0 / (64 * 11 * 11)) ** 0.5, rel=0.03)
    conv5 = model.features[10].weight.numpy()
    assert conv5.std() == pytest.approx((2.0 / (256 * 3 * 3)) ** 0.5, rel=0.01)
    fc7 = model.classifier[4].weight.numpy()
    assert fc7.std() == pytest.approx(0.01, rel=0.01)
    assert abs(fc7.mean()) < 1e-4
    for name, value in model.state_dict().items():
        if name.endswith("bias"):
            assert not value.numpy().any(), name


# --- torchvision .pth -------------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["alexnet_tv.pth", "alexnet_tv_legacy.pth"])
def test_torchvision_pth_reproduces_torch_logits(torch_reference, file_name):
    model = AlexNet()
    report = load_pretrained(model, torch_reference / file_name)
    assert len(report["loaded"]) == 16 and report["skipped"] == []
    for size in (224, 64):
        expected = np.load(torch_reference / f"logits_{size}.npy")
        assert expected.shape == (2, 1000)
        assert expected.std() > 0.1  # logits large enough for the tolerance to mean something
        found = eval_logits(model, np.load(torch_reference / f"input_{size}.npy"))
        assert np.abs(found - expected).max() < 1e-4, size


def test_torchvision_linear_weights_are_transposed(torch_reference):
    state = load_torchvision_state(torch_reference / "alexnet_tv.pth")
    assert state["classifier.1.weight"].shape == (9216, 4096)
    assert state["classifier.6.weight"].shape == (4096, 1000)
    assert state["features.0.weight"].shape == (64, 3, 11, 11)
    assert all(array.dtype == np.float32 for array in state.values())


def test_convert_cli_round_trip(torch_reference, tmp_path):
    out = tmp_path / "pretrained" / "alexnet_imagenet.pdparams"
    result = run_checked(
        [sys.executable, "-m", "models.alexnet", "--convert",
         str(torch_reference / "alexnet_tv.pth"), "--out", str(out)],
        cwd=REPO_ROOT,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0] == str(out)
    assert "16 tensors, 61,100,840 parameters" in lines[1]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left

    converted = load_paddle_alexnet_state(out)
    original = load_torchvision_state(torch_reference / "alexnet_tv.pth")
    assert list(converted) == list(original)
    for name in original:
        np.testing.assert_array_equal(converted[name], original[name], err_msg=name)

    model = AlexNet()
    load_pretrained(model, out)
    x = np.load(torch_reference / "input_224.npy")
    expected = np.load(torch_reference / "logits_224.npy")
    assert np.abs(eval_logits(model, x) - expected).max() < 1e-4


def test_reading_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install torch.*python -m models\.alexnet --convert"):
        load_torchvision_state(path)


# --- Paddle's own ImageNet AlexNet --------------------------------------------------------


def test_paddle_zoo_file_gives_identical_logits(paddle_zoo_file):
    path, zoo = paddle_zoo_file
    model = AlexNet()
    report = load_pretrained(model, path)
    assert len(report["loaded"]) == 16
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = eval_logits(zoo, x)
    assert expected.std() > 0.1
    np.testing.assert_allclose(eval_logits(model, x), expected, rtol=1e-6, atol=1e-6)


def test_paddle_zoo_dropout_folding_matches_in_training_too(paddle_zoo_file):
    # zoo: x * mask at training, x * 0.5 at inference; ours: x * mask / 0.5 and identity,
    # with fc6/fc7 weights halved -> the same function in both modes (same mask from same seed).
    path, zoo = paddle_zoo_file
    model = AlexNet()
    load_pretrained(model, path)
    x = paddle.to_tensor(np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype("float32"))
    zoo.train()
    model.train()
    with paddle.no_grad():
        paddle.seed(7)
        expected = zoo(x).numpy()
        paddle.seed(7)
        found = model(x).numpy()
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_paddle_zoo_keys_map_to_ours_with_halved_fc6_fc7(paddle_zoo_file):
    path, zoo = paddle_zoo_file
    state = load_paddle_alexnet_state(path)
    assert set(state) == set(expected_backbone_shapes())
    zoo_state = zoo.state_dict()
    np.testing.assert_array_equal(state["features.10.weight"], zoo_state["_conv5._conv.weight"].numpy())
    np.testing.assert_array_equal(state["features.6.bias"], zoo_state["_conv3.bias"].numpy())
    np.testing.assert_array_equal(state["classifier.1.weight"], 0.5 * zoo_state["_fc6.weight"].numpy())
    np.testing.assert_array_equal(state["classifier.4.weight"], 0.5 * zoo_state["_fc7.weight"].numpy())
    np.testing.assert_array_equal(state["classifier.4.bias"], zoo_state["_fc7.bias"].numpy())
    np.testing.assert_array_equal(state["classifier.6.weight"], zoo_state["_fc8.weight"].numpy())



@pytest.mark.parametrize("module", ["models.pretrained", "models.alexnet"])
def test_convert_cli_writes_the_paddle_zoo_file_in_our_layout(paddle_zoo_file, tmp_path, module):
    path, _ = paddle_zoo_file
    out = tmp_path / "ours.pdparams"
    result = run_checked([sys.executable, "-m", module, "--convert", str(path), "--out", str(out)], cwd=REPO_ROOT)
    assert result.stdout.splitlines()[0] == str(out)
    converted = paddle.load(str(out), return_numpy=True)
    expected = load_paddle_alexnet_state(path)
    assert sorted(converted) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(converted[name], expected[name], err_msg=name)

def test_paddle_url_comes_from_paddle():
    assert paddle_alexnet_url() == (
        "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/AlexNet_pretrained.pdparams"
    )


# --- HashNet built from a weight file -------------------------------------------------------


def assert_hashnet_backbone_from(model, state):
    """Every backbone parameter of the HashNet equals the file's (our names, Paddle layout); the 1000-way
    ImageNet head is not part of it; the hash layer is new: N(0, 0.01) weights, zero bias."""
    ours = {name: value.numpy() for name, value in model.state_dict().items()}
    backbone = [name for name in state if not name.startswith("classifier.6.")]
    assert len(backbone) == 14 and not any(name.startswith("classifier.6.") for name in ours)
    for name in backbone:
        np.testing.assert_array_equal(ours[name], state[name], err_msg=name)
    weight = ours["hash_layer.weight"]
    assert weight.shape == (4096, 16) and weight.std() == pytest.approx(0.01, rel=0.05)
    assert not ours["hash_layer.bias"].any()
    assert not ours["feature_mean"].any() and (ours["feature_std"] == 1).all()


def test_hashnet_takes_convs_fc6_fc7_from_a_paddle_zoo_file(paddle_zoo_file):
    path, zoo = paddle_zoo_file
    paddle.seed(5)
    model = HashNet(16, pretrained=str(path))
    state = backbone_state_from_file(path)
    assert_hashnet_backbone_from(model, state)
    # fc6/fc7 are the zoo's, halved for the dropout convention (see load_paddle_alexnet_state)
    zoo_state = zoo.state_dict()
    np.testing.assert_array_equal(model.classifier[1].weight.numpy(), 0.5 * zoo_state["_fc6.weight"].numpy())
    np.testing.assert_array_equal(model.classifier[4].weight.numpy(), 0.5 * zoo_state["_fc7.weight"].numpy())
    # fc7 of the HashNet is the zoo network's fc7 at inference (the zoo scales fc6/fc7 inputs by 0.5)
    x = paddle.to_tensor(np.random.default_rng(4).standard_normal((2, 3, 224, 224)).astype("float32"))
    model.eval()
    zoo.eval()
    captured = []
    hook = zoo._fc7.register_forward_post_hook(lambda layer, inputs, output: captured.append(output.numpy()))
    with paddle.no_grad():
        zoo(x)
        found = model.extract_features(x).numpy()
    hook.remove()
    expected = np.maximum(captured[0], 0)  # fc7 ReLU
    assert expected.std() > 0.1
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_hashnet_takes_convs_fc6_fc7_from_a_torchvision_pth(torch_reference):
    paddle.seed(5)
    model = HashNet(16, pretrained=str(torch_reference / "alexnet_tv.pth"))
    assert_hashnet_backbone_from(model, load_torchvision_state(torch_reference / "alexnet_tv.pth"))


def test_load_pretrained_skips_the_head_and_leaves_the_hash_layer_alone(paddle_zoo_file):
    path, _ = paddle_zoo_file
    paddle.seed(5)
    model = HashNet(16)
    hash_before = model.hash_layer.weight.numpy().copy()
    report = load_pretrained(model, path, skip=("classifier.6.",))
    assert report["skipped"] == ["classifier.6.weight", "classifier.6.bias"]
    assert len(report["loaded"]) == 14 and report["loaded"][0] == "features.0.weight"
    state = backbone_state_from_file(path)
    np.testing.assert_array_equal(model.classifier[4].weight.numpy(), state["classifier.4.weight"])
    np.testing.assert_array_equal(model.hash_layer.weight.numpy(), hash_before)


def test_key_map_to_a_missing_parameter_is_named(paddle_zoo_file):
    path, _ = paddle_zoo_file
    with pytest.raises(ValueError, match=r"features\.0\.weight -> net\.features\.0\.weight"):
        load_pretrained(HashNet(16), path, skip=("classifier.6.",), key_map=lambda k: "net." + k)


def test_key_map_loads_into_other_names(paddle_zoo_file):
    path, _ = paddle_zoo_file
    holder = paddle.nn.Layer()
    holder.backbone = AlexNet(num_classes=16)
    report = load_pretrained(holder, path, skip=("classifier.6.",), key_map=lambda k: "backbone." + k)
    assert len(report["loaded"]) == 14 and report["loaded"][0] == "backbone.features.0.weight"
    np.testing.assert_array_equal(holder.backbone.features[0].weight.numpy(),
                                  backbone_state_from_file(path)["features.0.weight"])


def test_1000_class_head_into_other_class_count_names_the_shape(paddle_zoo_file):
    path, _ = paddle_zoo_file
    with pytest.raises(ValueError, match=re.escape("classifier.6.weight expected [4096, 10], found [4096, 1000]")):
        load_pretrained(AlexNet(num_classes=10), path)


# --- torch layout without torch ---------------------------------------------------------------


def test_torch_linear_layout_computes_what_torch_computes():
    """torch Linear: y = x W^T + b with W [out, in]; after from_torch_layout a Paddle Linear gives the same y.
    Needs no torch (the arrays are what a .pth holds), so the layout is covered where torch is missing."""
    rng = np.random.default_rng(0)
    torch_arrays = {"classifier.6.weight": rng.standard_normal((3, 5)).astype(np.float32),
                    "classifier.6.bias": rng.standard_normal(3).astype(np.float32),
                    "features.0.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32)}
    state = from_torch_layout(torch_arrays)
    np.testing.assert_array_equal(state["features.0.weight"], torch_arrays["features.0.weight"])  # convs as is
    linear = paddle.nn.Linear(5, 3)
    linear.weight.set_value(paddle.to_tensor(state["classifier.6.weight"]))
    linear.bias.set_value(paddle.to_tensor(state["classifier.6.bias"]))
    x = rng.standard_normal((2, 5)).astype(np.float32)
    expected = x @ torch_arrays["classifier.6.weight"].T + torch_arrays["classifier.6.bias"]
    np.testing.assert_allclose(linear(paddle.to_tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    square = rng.standard_normal((4, 4)).astype(np.float32)  # fc7 is square: shapes alone cannot tell
    np.testing.assert_array_equal(from_torch_layout({"classifier.4.weight": square})["classifier.4.weight"], square.T)


# --- error messages -------------------------------------------------------------------------


def full_state():
    # broadcast views: right shapes, no memory
    return {name: np.broadcast_to(np.float32(0), shape) for name, shape in expected_backbone_shapes().items()}


def test_missing_key_is_named_with_its_shape():
    state = full_state()
    del state["features.3.bias"]
    with pytest.raises(ValueError, match=re.escape("missing keys (expected shape): features.3.bias [192]")):
        check_backbone_state(state, expected_backbone_shapes())


def test_extra_key_is_named_with_its_shape():
    state = full_state()
    state["fc8.extra.weight"] = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=re.escape("unexpected keys (found shape): fc8.extra.weight [3, 2]")):
        check_backbone_state(state, expected_backbone_shapes())


def test_wrong_shape_is_named_expected_vs_found():
    state = full_state()
    state["classifier.1.weight"] = np.broadcast_to(np.float32(0), (4096, 9216))  # untransposed
    with pytest.raises(
        ValueError, match=re.escape("wrong shapes: classifier.1.weight expected [9216, 4096], found [4096, 9216]")
    ):
        check_backbone_state(state, expected_backbone_shapes())


def test_bad_file_lists_all_problems_and_the_path(tmp_path):
    path = tmp_path / "partial.pdparams"
    paddle.save(
        {
            "_conv1._conv.weight": np.zeros((64, 3, 11, 11), np.float32),
            "_conv1._conv.bias": np.zeros((65,), np.float32),
            "_fc9.weight": np.zeros((2,), np.float32),
        },
        str(path),
    )
    with pytest.raises(ValueError) as error:
        load_pretrained(AlexNet(), path)
    message = str(error.value)
    assert str(path) in message
    assert "missing keys (expected shape): features.3.weight [192, 64, 5, 5]" in message
    assert "classifier.6.bias [1000]" in message
    assert "unexpected keys (found shape): _fc9.weight [2]" in message
    assert "wrong shapes: features.0.bias expected [64], found [65]" in message


def test_unknown_pdparams_layout_is_rejected(tmp_path):
    path = tmp_path / "other.pdparams"
    paddle.save({"conv.weight": np.zeros((2,), np.float32)}, str(path))
    with pytest.raises(ValueError, match=r"neither Paddle's zoo AlexNet layout.*found keys: conv\.weight"):
        load_pretrained(AlexNet(), path)


def test_missing_file_says_where_to_put_it_and_where_it_comes_from(tmp_path):
    path = tmp_path / "pretrained" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained(AlexNet(), path)
    message = str(error.value)
    assert str(path) in message
    assert DEFAULT_PRETRAINED_PATH in message and PRETRAINED_FLAG in message
    assert TORCHVISION_URL in message
    assert paddle_alexnet_url() in message


def test_unreadable_pdparams_names_the_file(tmp_path):
    path = tmp_path / "garbage.pdparams"
    path.write_bytes(b"\x00 not a pickle")
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot be read as a Paddle .pdparams")):
        backbone_state_from_file(path)


def test_alexnets_files_and_sources_come_from_the_backbone_registry():
    """models/pretrained.py and models/caffemodel.py name no weight file or URL of their own: the registry's
    (models/backbones.py) are the only ones."""
    import models.caffemodel as caffemodel
    import models.pretrained as pretrained
    from models.backbones import BACKBONES, CAFFEMODEL_URL
    alexnet, caffenet = BACKBONES["alexnet"], BACKBONES["caffenet"]
    assert TORCHVISION_URL == alexnet.torchvision_url() == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert pretrained.TORCHVISION_SEED_URL == alexnet.torchvision_url("alexnet-owt-4df8aa71.pth")
    assert DEFAULT_PRETRAINED_PATH == "pretrained/alexnet-owt-7be5be79.pth" == alexnet.candidates[1]
    assert pretrained.DEFAULT_CONVERTED_PATH == "pretrained/alexnet_imagenet.pdparams" == alexnet.candidates[0]
    assert caffemodel.DEFAULT_CONVERTED_PATH == caffenet.candidates[0] == "pretrained/caffenet_imagenet.pdparams"
    assert caffemodel.DEFAULT_CAFFEMODEL_PATH == "pretrained/" + caffenet.extra_files[0]
    assert CAFFEMODEL_URL in caffenet.source
    for module in (pretrained, caffemodel):
        code = Path(module.__file__).read_text(encoding="utf-8").split('"""', 2)[2]  # after the module docstring
        for literal in ("download.pytorch.org", "bcebos.com", "alexnet-owt-", "alexnet_imagenet", "caffenet_imagenet",
                        "reference_caffenet.caffemodel"):
            assert literal not in code, (module.__name__, literal)
