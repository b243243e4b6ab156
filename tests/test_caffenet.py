"""CaffeNet (models/caffenet.py) and the .caffemodel reader and converter (models/caffemodel.py): synthetic Caffe files
written by tests/caffe_proto_writer.py, converted, loaded, and compared with the NumPy forward of
tests/numpy_reference_caffenet.py (docs/protocol.md#paper-recipe)."""
import numpy as np
import paddle
import pytest

import numpy_reference_caffenet as reference
from caffe_proto_writer import blob, caffenet_layers, layer, net
from models.caffemodel import (
    caffenet_state_from_file,
    convert,
    load_caffenet_weights,
    main,
    mean_pixel,
    read_blob,
    read_net,
)
from models.caffenet import IMAGENET_MEAN_BGR, CaffeNet, caffe_input, feature_map_sizes
from utils.runtime.errors import MissingFileError, UsageError

DIVISOR = 16  # CaffeNet with every width / 16: the real geometry, 3,000 times fewer weights
# Caffe-layout shapes at width / 16, written out here rather than taken from models/caffenet.py
SMALL_SHAPES = {"conv1": (6, 3, 11, 11), "conv2": (16, 3, 5, 5), "conv3": (24, 16, 3, 3), "conv4": (24, 12, 3, 3),
                "conv5": (16, 12, 3, 3), "fc6": (256, 16 * 6 * 6), "fc7": (256, 256), "fc8": (10, 256)}
REAL_SHAPES = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
               "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216), "fc7": (4096, 4096)}


def random_weights(shapes, seed=0):
    """He-scaled weights (conv1's outputs reach ~100, so LRN changes them by a factor ~2) and non-zero biases."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        weights[name] = (weight, rng.normal(0.5, 0.5, size=shape[0]).astype(np.float32))
    return weights


def write(path, encoded_layers, v1):
    path.write_bytes(net(encoded_layers, v1=v1))
    return path


@pytest.fixture(scope="module")
def weights():
    return random_weights(SMALL_SHAPES)


def images(size, count=2, seed=1):
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3, size, size), dtype=np.uint8)


def paddle_fc7(model, batch):
    model.eval()
    with paddle.no_grad():
        return model.fc7_features(paddle.to_tensor(batch)).numpy()


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# --- the network -------------------------------------------------------------------------------------------------

def test_lrn_is_caffes_formula():
    """Paddle's LocalResponseNorm as CaffeNet builds it equals Caffe's alpha / n over the 5 centred channels."""
    x = np.random.default_rng(0).normal(0.0, 80.0, size=(2, 12, 4, 4)).astype(np.float32)
    expected = reference.lrn(x.astype(np.float64))
    assert relative_error(expected, x) > 0.3  # the normaliser matters at this scale
    actual = CaffeNet(DIVISOR).norm(paddle.to_tensor(x)).numpy()
    assert relative_error(actual, expected) < 1e-6


def test_real_geometry_and_parameter_shapes():
    """At width 1 every parameter has CaffeNet's real shape (Paddle layout) and a 227 px image gives 6x6x256 pool5."""
    assert feature_map_sizes(227) == (55, 27, 13, 6)
    model = CaffeNet()
    state = model.state_dict()
    for name, shape in REAL_SHAPES.items():
        paddle_shape = shape[::-1] if name.startswith("fc") else shape
        assert tuple(state[f"{name}.weight"].shape) == paddle_shape
        assert tuple(state[f"{name}.bias"].shape) == (shape[0],)
    assert sorted(state) == sorted([f"{n}.{k}" for n in REAL_SHAPES for k in ("weight", "bias")] + ["mean_bgr"])
    model.eval()
    with paddle.no_grad():
        batch = paddle.to_tensor(images(227, count=1))
        assert tuple(model.pool5(batch).shape) == (1, 256, 6, 6)
        assert tuple(model.fc7_features(batch).shape) == (1, 4096)
    assert model.feature_dim == 4096


def test_adaptive_pool_is_the_identity_at_6x6():
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 16, 6, 6)).astype(np.float32))
    assert np.array_equal(CaffeNet(DIVISOR).pool5_to_6x6(x).numpy(), x.numpy())


def test_too_small_an_image_is_named():
    model = CaffeNet(DIVISOR)
    model.eval()
    assert paddle_fc7(model, images(39, count=1)).shape == (1, 256)
    with pytest.raises(UsageError, match="at least 39 px; got 38 px"):
        paddle_fc7(model, images(38, count=1))


def test_caffe_input_is_bgr_minus_the_mean_pixel():
    rgb = np.array([[[[0]], [[100]], [[255]]]], dtype=np.uint8)  # R 0, G 100, B 255
    out = caffe_input(paddle.to_tensor(rgb), paddle.to_tensor([1.5, 2.0, 3.25])).numpy()
    np.testing.assert_array_equal(out.ravel(), np.array([255 - 1.5, 100 - 2.0, 0 - 3.25], dtype=np.float32))
    floats = paddle.to_tensor(np.ones((1, 3, 1, 1), np.float32))
    assert caffe_input(floats, paddle.to_tensor([1.0, 2.0, 3.0])) is floats


def test_dropout_only_in_training():
    model = CaffeNet(DIVISOR)
    batch = paddle.to_tensor(images(64, count=2))
    model.eval()
    first, second = model.fc7_features(batch).numpy(), model.fc7_features(batch).numpy()
    assert np.array_equal(first, second)
    model.train()
    paddle.seed(0)
    trained = model.fc7_features(batch).numpy()
    assert (trained == 0).mean() > (first == 0).mean() + 0.2  # drop7 zeroes about half


# --- reading Caffe files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("v1", [False, True], ids=["current", "v1"])
@pytest.mark.parametrize("floats", ["packed", "unpacked", "double"])
def test_read_net_layers_types_and_blobs(tmp_path, weights, v1, floats):
    small = {name: (weights[name][0][:2], weights[name][1][:2]) for name in ("conv1", "fc6")}
    path = write(tmp_path / "net.caffemodel", caffenet_layers(small, v1=v1, floats=floats), v1)
    layers = read_net(path)
    by_name = {layer.name: layer for layer in layers}
    assert [layer.name for layer in layers][:5] == ["data", "conv1", "relu1", "pool1", "norm1"]
    assert [by_name[name].type for name in ("data", "conv1", "relu1", "pool1", "norm1", "fc6", "drop6", "loss")] == \
        ["Data", "Convolution", "ReLU", "Pooling", "LRN", "InnerProduct", "Dropout", "SoftmaxWithLoss"]
    assert by_name["relu1"].blobs == ()
    conv_weight, fc_bias = by_name["conv1"].blobs[0], by_name["fc6"].blobs[1]
    assert conv_weight.shape == (2, 3, 11, 11) and conv_weight.legacy is v1
    assert fc_bias.shape == ((1, 1, 1, 2) if v1 else (2,))
    np.testing.assert_array_equal(conv_weight.data, small["conv1"][0].ravel())
    np.testing.assert_array_equal(fc_bias.data, small["fc6"][1])


@pytest.mark.parametrize("v1", [False, True], ids=["current", "v1"])
@pytest.mark.parametrize("size", [227, 71, 64])
def test_converted_network_matches_numpy_forward(tmp_path, weights, v1, size):
    """A synthetic caffemodel -> .pdparams -> CaffeNet gives the NumPy CaffeNet's fc7; the .caffemodel loaded directly
    gives the same numbers. 227 px: every pooling exact, no adaptive pool; 71 px: conv1 16 wide, so ceil rounding
    matters (pool1 8, pool2 4, pool5 2, then the adaptive pool to 6x6); 64 px: pool5 1x1."""
    source = write(tmp_path / "net.caffemodel", caffenet_layers(weights, v1=v1), v1)
    out = tmp_path / "caffenet.pdparams"
    convert(source, out, width_divisor=DIVISOR)
    model = CaffeNet(DIVISOR)
    load_caffenet_weights(model, out)
    batch = images(size)
    actual = paddle_fc7(model, batch)
    expected = reference.caffenet_fc7(batch, weights, IMAGENET_MEAN_BGR)
    assert (expected > 0).mean() > 0.3  # live features, not a dead ReLU
    assert relative_error(actual, expected) < 1e-4
    direct = CaffeNet(DIVISOR)
    load_caffenet_weights(direct, source)
    np.testing.assert_array_equal(paddle_fc7(direct, batch), actual)


def test_wrong_shape_and_missing_layer_are_named(tmp_path, weights):
    wrong = dict(weights, conv2=(np.zeros((16, 6, 5, 5), np.float32), weights["conv2"][1]))
    path = write(tmp_path / "wrong.caffemodel", caffenet_layers(wrong, v1=True), True)
    with pytest.raises(UsageError) as error:
        caffenet_state_from_file(path, width_divisor=DIVISOR)
    assert str(path) in str(error.value)
    assert "conv2 weight has shape [16, 6, 5, 5], expected [16, 3, 5, 5]" in str(error.value)

    missing = {name: value for name, value in weights.items() if name != "fc7"}
    path = write(tmp_path / "missing.caffemodel", caffenet_layers(missing), False)
    with pytest.raises(UsageError, match=r"missing layers: fc7 \(weight \[256, 256\], bias \[256\]\)"):
        caffenet_state_from_file(path, width_divisor=DIVISOR)


def test_legacy_blob_shapes_follow_caffes_rule(tmp_path, weights):
    """A V1 bias stored as 1 x 1 x 1 x n loads; one stored as n x 1 x 1 x 1 does not (Caffe pads shapes in front)."""
    bias = weights["fc6"][1]
    bad = [layer("fc6", "InnerProduct", [blob(weights["fc6"][0], legacy=True), blob(bias.reshape(-1, 1, 1, 1),
                                                                                      legacy=True)], v1=True)]
    others = caffenet_layers({k: v for k, v in weights.items() if k != "fc6"}, v1=True, extra=False)
    path = write(tmp_path / "bad.caffemodel", others + bad, True)
    with pytest.raises(UsageError, match=r"fc6 bias has shape \[256, 1, 1, 1\], expected \[256\]"):
        caffenet_state_from_file(path, width_divisor=DIVISOR)


def test_wrong_layer_type_and_v0_layout_are_named(tmp_path, weights):
    renamed = caffenet_layers({k: v for k, v in weights.items() if k != "conv3"}, extra=False)
    renamed.append(layer("conv3", "InnerProduct", [blob(w) for w in weights["conv3"]]))
    path = write(tmp_path / "type.caffemodel", renamed, False)
    with pytest.raises(UsageError, match="layer conv3 is a InnerProduct, expected Convolution"):
        caffenet_state_from_file(path, width_divisor=DIVISOR)
    from caffe_proto_writer import bytes_field, string_field
    v0 = tmp_path / "v0.caffemodel"
    v0.write_bytes(bytes_field(2, bytes_field(1, string_field(1, "conv1") + string_field(2, "conv"))))
    with pytest.raises(UsageError, match="V0 layout"):
        read_net(v0)


def test_not_a_caffe_file(tmp_path):
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(net([layer("conv1", "Convolution", [blob(np.ones((2, 2), np.float32))])])[:-3])
    with pytest.raises(UsageError, match="truncated.caffemodel: not a readable Caffe NetParameter"):
        read_net(truncated)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(UsageError, match="no layers found"):
        read_net(empty)
    with pytest.raises(MissingFileError, match=r"absent.caffemodel.*http://dl.caffe.berkeleyvision.org/"
                                               r"bvlc_reference_caffenet.caffemodel"):
        read_net(tmp_path / "absent.caffemodel")


def test_binaryproto_mean(tmp_path):
    image = np.random.default_rng(0).uniform(0, 255, size=(3, 8, 8)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob(image[None], legacy=True))
    np.testing.assert_array_equal(read_blob(path), image[None])
    assert mean_pixel(path) == pytest.approx(tuple(image.astype(np.float64).mean(axis=(1, 2))), rel=1e-12)
    gray = tmp_path / "gray.binaryproto"
    gray.write_bytes(blob(image[:1]))
    with pytest.raises(UsageError, match=r"shape 3 x H x W \(BGR\); found \[1, 8, 8\]"):
        mean_pixel(gray)


def test_converter_cli_real_shapes_and_mean(tmp_path, capsys):
    """`python -m models.caffemodel --convert` on a V1 file of CaffeNet's real shapes (legacy blob dims, as the BVLC
    file): every tensor in Paddle's layout (fc weights transposed), fc8 dropped, the --mean file's average kept."""
    shapes = dict(REAL_SHAPES, fc8=(1000, 4096))
    arrays = {name: (np.arange(np.prod(shape), dtype=np.float32).reshape(shape),  # every value tells its place
                     np.arange(shape[0], dtype=np.float32)) for name, shape in shapes.items()}
    source = write(tmp_path / "bvlc_reference_caffenet.caffemodel", caffenet_layers(arrays, v1=True), True)
    mean_file = tmp_path / "imagenet_mean.binaryproto"
    mean_file.write_bytes(blob(np.stack([np.full((4, 4), v, np.float32) for v in (10.0, 20.0, 30.5)])[None],
                               legacy=True))
    out = tmp_path / "pretrained" / "caffenet_imagenet.pdparams"
    assert main(["--convert", str(source), "--out", str(out), "--mean", str(mean_file)]) == 0
    assert "56,868,224 parameters" in capsys.readouterr().out
    state = paddle.load(str(out), return_numpy=True)
    assert sorted(state) == sorted([f"{n}.{k}" for n in REAL_SHAPES for k in ("weight", "bias")] + ["mean_bgr"])
    np.testing.assert_array_equal(state["fc6.weight"][[0, 9215, 17], [0, 4095, 3000]],
                                  arrays["fc6"][0][[0, 4095, 3000], [0, 9215, 17]])
    np.testing.assert_array_equal(state["conv2.weight"], arrays["conv2"][0])
    np.testing.assert_array_equal(state["fc7.bias"], arrays["fc7"][1])
    np.testing.assert_array_equal(state["mean_bgr"], np.array([10.0, 20.0, 30.5], np.float32))
    assert list(out.parent.iterdir()) == [out]  # written atomically: no temporary file left


def test_converter_cli_reports_a_bad_file(tmp_path, weights, capsys):
    source = write(tmp_path / "small.caffemodel", caffenet_layers(weights), False)
    assert main(["--convert", str(source), "--out", str(tmp_path / "out.pdparams")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {source}: not CaffeNet's weights")
    assert "conv1 weight has shape [6, 3, 11, 11], expected [96, 3, 11, 11]" in err
    assert not (tmp_path / "out.pdparams").exists()


def test_pdparams_of_the_wrong_width_is_named(tmp_path, weights):
    source = write(tmp_path / "small.caffemodel", caffenet_layers(weights), False)
    out = tmp_path / "small.pdparams"
    convert(source, out, width_divisor=DIVISOR)
    state = caffenet_state_from_file(out, width_divisor=DIVISOR)
    np.testing.assert_array_equal(state["mean_bgr"], np.asarray(IMAGENET_MEAN_BGR, np.float32))
    with pytest.raises(UsageError, match=r"small.pdparams: not a converted CaffeNet.*conv1.weight has shape "
                                         r"\[6, 3, 11, 11\], expected \[12, 3, 11, 11\]"):
        load_caffenet_weights(CaffeNet(8), out)
