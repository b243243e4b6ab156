"""Caffe weight files read in this project's own code (no Caffe, no protobuf package, no schema), and CaffeNet's
ImageNet weights from them (docs/protocol.md#paper-recipe).

- ``read_net(path)``: the layers (name, type, blobs) of a ``.caffemodel``, a serialized ``caffe.NetParameter``, in
  either layout: the current one (``layer``, types as strings, blobs sized by ``shape``) or the V1 one of files written
  before 2015 (``layers``, types as an enum, blobs sized by num / channels / height / width), which
  ``bvlc_reference_caffenet.caffemodel`` uses. ``read_blob(path)``: a ``.binaryproto`` (one BlobProto: a mean image).
- ``caffenet_state(layers, source)``: conv1 ... fc7 under CaffeNet's names in Paddle's layout (Caffe's inner-product
  weights (out, in) transposed to Linear's (in, out); convolutions are (out, in / groups, kh, kw) in both), after
  checking every layer is there with Caffe's shapes; fc8 and the rest are left out.
- ``load_caffenet_weights(model, path)``: a ``.caffemodel`` or the ``.pdparams`` the converter writes.
- Converter, once, so training reads a plain .pdparams::

      python -m models.caffemodel --convert bvlc_reference_caffenet.caffemodel \\
          --out pretrained/caffenet_imagenet.pdparams [--mean imagenet_mean.binaryproto]

  The mean: CaffeNet subtracts a mean pixel held in its ``mean_bgr`` buffer (models/caffenet.py). By default that is
  ``IMAGENET_MEAN_BGR``, the authors' ``imagenet_mean.binaryproto`` averaged over the image; ``--mean`` takes the
  average of the given file instead. Either way it is written into the .pdparams with the weights, so no mean file is
  read at run time.

Field numbers, from BVLC caffe ``src/caffe/proto/caffe.proto`` (the same in thuml/HashNet's copy):
NetParameter: ``layer`` 100 (LayerParameter), ``layers`` 2 (V1LayerParameter). LayerParameter: ``name`` 1, ``type`` 2
(string), ``blobs`` 7. V1LayerParameter: ``layer`` 1 (the older V0 layout, not read), ``name`` 4, ``type`` 5 (enum
LayerType), ``blobs`` 6. BlobProto: ``num`` 1, ``channels`` 2, ``height`` 3, ``width`` 4, ``data`` 5 (packed float),
``diff`` 6, ``shape`` 7 (BlobShape: ``dim`` 1, packed int64), ``double_data`` 8 (packed double), ``double_diff`` 9.
As Caffe's Blob::FromProto does: double_data is taken when present, else data; a blob with any of num / channels /
height / width set is sized by those four (legacy shape), else by ``shape``.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from models.backbones import BACKBONES, CAFFEMODEL_NAME, CAFFEMODEL_URL, PRETRAINED_DIR
from models.caffenet import IMAGENET_MEAN_BGR, caffe_blob_shapes
from models.protobuf_wire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    WireFormatError,
    iter_fields,
    packed_varints,
)
from utils.runtime.errors import MissingFileError, UsageError
from utils.runtime.fileio import atomic_write

DEFAULT_CAFFEMODEL_PATH = f"{PRETRAINED_DIR}/{CAFFEMODEL_NAME}"
DEFAULT_CONVERTED_PATH = f"{PRETRAINED_DIR}/{BACKBONES['caffenet'].converted_file}"
MEAN_FILE_SOURCES = ("thuml/HashNet caffe/data/ilsvrc12/imagenet_mean.binaryproto, or Caffe's "
                     "data/ilsvrc12/get_ilsvrc_aux.sh (http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz)")
MEAN_KEY = "mean_bgr"

NET_LAYER, NET_V1_LAYERS = 100, 2
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
V1_V0_LAYER, V1_NAME, V1_TYPE, V1_BLOBS = 1, 4, 5, 6
BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1

# V1LayerParameter.LayerType numbers -> the current type names, as Caffe's UpgradeV1LayerType maps them
V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 7: "EuclideanLoss",
    8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col", 12: "ImageData", 13: "InfogainLoss",
    14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
    20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise", 26: "Power",
    27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData", 30: "ArgMax", 31: "Threshold",
    32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp",
    39: "Deconvolution",
}
# the layer type each converted layer must have
CAFFENET_LAYER_TYPES = {"conv1": "Convolution", "conv2": "Convolution", "conv3": "Convolution",
                        "conv4": "Convolution", "conv5": "Convolution", "fc6": "InnerProduct", "fc7": "InnerProduct"}


@dataclass(frozen=True)
class CaffeBlob:
    """One BlobProto: ``shape`` as stored (the four legacy dims when ``legacy``) and the flat float32 values."""
    shape: tuple
    legacy: bool
    data: np.ndarray


@dataclass(frozen=True)
class CaffeLayer:
    name: str
    type: str
    blobs: tuple


def _parse_blob(view, where):
    legacy_dims = [0, 0, 0, 0]
    legacy = False
    shape = None
    floats, doubles = [], []
    for number, wire_type, value in iter_fields(view):
        if number in BLOB_LEGACY_DIMS and wire_type == VARINT:
            legacy_dims[number - 1] = value
            legacy = True
        elif number == BLOB_SHAPE and wire_type == LENGTH_DELIMITED:
            shape = []
            for dim_number, dim_type, dim in iter_fields(value):
                if dim_number == SHAPE_DIM:
                    shape += packed_varints(dim) if dim_type == LENGTH_DELIMITED else [dim]
        elif number == BLOB_DATA and wire_type in (LENGTH_DELIMITED, FIXED32):  # packed, or one unpacked value
            floats.append(np.frombuffer(value, dtype="<f4"))
        elif number == BLOB_DOUBLE_DATA and wire_type in (LENGTH_DELIMITED, FIXED64):
            doubles.append(np.frombuffer(value, dtype="<f8"))
    values = doubles or floats
    # one copy out of the file's bytes (concatenate copies; float32 data needs no second copy)
    data = np.concatenate(values).astype(np.float32, copy=False) if values else np.zeros(0, np.float32)
    shape = tuple(legacy_dims) if legacy else tuple(shape or ())
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise UsageError(f"{where}: shape {list(shape)} holds {int(np.prod(shape, dtype=np.int64))} values but the "
                         f"blob has {data.size}")
    return CaffeBlob(shape=shape, legacy=legacy, data=data)


def _text(view):
    return bytes(view).decode("utf-8", errors="replace")


def _parse_layer(view, v1, where):
    name, type_name, blob_views = "", "", []
    name_field, type_field, blobs_field = (V1_NAME, V1_TYPE, V1_BLOBS) if v1 else (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS)
    for number, wire_type, value in iter_fields(view):
        if number == name_field and wire_type == LENGTH_DELIMITED:
            name = _text(value)
        elif number == type_field:
            type_name = V1_LAYER_TYPES.get(value, f"V1 type {value}") if v1 else _text(value)
        elif number == blobs_field and wire_type == LENGTH_DELIMITED:
            blob_views.append(value)
        elif v1 and number == V1_V0_LAYER and wire_type == LENGTH_DELIMITED:
            raise UsageError(f"{where} uses Caffe's V0 layout (before 2014), which this reader does not read; "
                             f"upgrade the file once with Caffe's tools/upgrade_net_proto_binary")
    blobs = tuple(_parse_blob(blob, f"{where} ({name or 'unnamed'}) blob {i}") for i, blob in enumerate(blob_views))
    return CaffeLayer(name=name, type=type_name, blobs=blobs)


def _read_bytes(path, what):
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(what(path))
    return path, path.read_bytes()


def _caffemodel_missing(path):
    return (f"Caffe weights not found: {path}. Nothing is downloaded at run time: get {CAFFEMODEL_NAME} from "
            f"{CAFFEMODEL_URL}, put it at {DEFAULT_CAFFEMODEL_PATH} (or pass its path) and convert it once with "
            f"`python -m models.caffemodel --convert {DEFAULT_CAFFEMODEL_PATH} --out {DEFAULT_CONVERTED_PATH}`")


def read_net(path):
    """The layers of a ``.caffemodel`` (either layout), in file order, as CaffeLayer(name, type, blobs)."""
    path, data = _read_bytes(path, _caffemodel_missing)
    current, v1 = [], []
    try:
        for number, wire_type, value in iter_fields(data):
            if number == NET_LAYER and wire_type == LENGTH_DELIMITED:
                current.append(_parse_layer(value, False, f"{path}: layer {len(current)}"))
            elif number == NET_V1_LAYERS and wire_type == LENGTH_DELIMITED:
                v1.append(_parse_layer(value, True, f"{path}: V1 layer {len(v1)}"))
    except WireFormatError as error:
        raise UsageError(f"{path}: not a readable Caffe NetParameter ({error})") from error
    if current and v1:
        raise UsageError(f"{path}: holds both the current `layer` list ({len(current)}) and the V1 `layers` list "
                         f"({len(v1)}); Caffe refuses such a file too")
    if not (current or v1):
        raise UsageError(f"{path}: no layers found: not a Caffe .caffemodel (a serialized NetParameter)")
    return current or v1


def read_blob(path):
    """A ``.binaryproto`` (a bare BlobProto, e.g. Caffe's ImageNet mean image) as a float32 array of its shape."""
    def missing(p):
        return f"Caffe blob file not found: {p}. The ImageNet mean image: {MEAN_FILE_SOURCES}"

    path, data = _read_bytes(path, missing)
    try:
        blob = _parse_blob(data, str(path))
    except WireFormatError as error:
        raise UsageError(f"{path}: not a readable Caffe BlobProto ({error})") from error
    return blob.data.reshape(blob.shape)


def mean_pixel(path):
    """The mean pixel (B, G, R) of a Caffe mean image file (3 x H x W, or 1 x 3 x H x W), averaged in float64."""
    image = read_blob(path)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise UsageError(f"{path}: a mean image has shape 3 x H x W (BGR); found {list(image.shape)}")
    return tuple(float(v) for v in image.astype(np.float64).mean(axis=(1, 2)))


def _shape_matches(blob, expected):
    if blob.legacy:  # Caffe's rule for legacy blobs: the expected shape, padded in front with 1s to 4 axes
        return len(expected) <= 4 and blob.shape == (1,) * (4 - len(expected)) + tuple(expected)
    return blob.shape == tuple(expected)


def caffenet_state(layers, source, width_divisor=1):
    """conv1 ... fc7 of ``layers`` (from read_net) as {``conv1.weight``: array, ...} in Paddle's layout, after checking
    each layer is present once, has the right type and a weight and a bias of Caffe's shapes. Every problem is named
    in one UsageError (``source``: the file, for the message)."""
    expected = caffe_blob_shapes(width_divisor)
    found = {}
    for layer in layers:
        if layer.name in expected:
            found.setdefault(layer.name, []).append(layer)
    problems = []
    missing = [name for name in expected if name not in found]
    if missing:
        names = ", ".join(layer.name for layer in layers if layer.name) or "(none)"
        problems.append("missing layers: " + ", ".join(
            f"{name} (weight {list(expected[name][0])}, bias {list(expected[name][1])})" for name in missing)
            + f"; the file's layers: {names}")
    state = {}
    for name, (weight_shape, bias_shape) in expected.items():
        if name not in found:
            continue
        if len(found[name]) > 1:
            problems.append(f"layer {name} appears {len(found[name])} times")
            continue
        layer = found[name][0]
        if layer.type != CAFFENET_LAYER_TYPES[name]:
            problems.append(f"layer {name} is a {layer.type or 'layer of no type'}, expected "
                            f"{CAFFENET_LAYER_TYPES[name]}")
            continue
        if len(layer.blobs) != 2:
            problems.append(f"layer {name} has {len(layer.blobs)} blobs, expected 2 (weight, bias)")
            continue
        for kind, blob, shape in (("weight", layer.blobs[0], weight_shape), ("bias", layer.blobs[1], bias_shape)):
            if not _shape_matches(blob, shape):
                problems.append(f"{name} {kind} has shape {list(blob.shape)}, expected {list(shape)}")
                continue
            array = blob.data.reshape(shape)
            if kind == "weight" and array.ndim == 2:
                array = array.T  # Caffe InnerProduct (out, in) -> Paddle Linear (in, out)
            state[f"{name}.{kind}"] = np.ascontiguousarray(array, dtype=np.float32)
    if problems:
        raise UsageError(f"{source}: not CaffeNet's weights (bvlc_reference_caffenet, conv1 ... fc7"
                         f"{'' if width_divisor == 1 else f', width / {width_divisor}'}): " + "; ".join(problems))
    return state


def caffenet_state_from_file(path, width_divisor=1, mean=None):
    """CaffeNet's state ({name: array}, with ``mean_bgr``) from a ``.caffemodel`` or a converted ``.pdparams``.
    ``mean``: a mean image file whose average becomes ``mean_bgr``, or None for the value already in a .pdparams (a
    .caffemodel: IMAGENET_MEAN_BGR)."""
    path = Path(path)
    if path.suffix == ".pdparams":
        if not path.is_file():
            raise MissingFileError(_caffemodel_missing(path))
        state = _read_pdparams(path, width_divisor)
    else:
        state = caffenet_state(read_net(path), str(path), width_divisor)
        state[MEAN_KEY] = np.asarray(IMAGENET_MEAN_BGR, dtype=np.float32)
    if mean is not None:
        state[MEAN_KEY] = np.asarray(mean_pixel(mean), dtype=np.float32)
    return state


def _read_pdparams(path, width_divisor):
    try:
        loaded = paddle.load(str(path), return_numpy=True)
    except Exception as error:  # paddle raises assorted types for foreign or corrupt files
        raise UsageError(f"{path}: cannot be read as a Paddle .pdparams ({type(error).__name__}: {error})") from error
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a state dict (name -> array), found {type(loaded).__name__}")
    expected = {f"{name}.weight": weight for name, (weight, _) in caffe_blob_shapes(width_divisor).items()}
    expected.update({f"{name}.bias": bias for name, (_, bias) in caffe_blob_shapes(width_divisor).items()})
    expected = {key: shape[::-1] if key.startswith("fc") and key.endswith(".weight") else shape
                for key, shape in expected.items()}
    expected[MEAN_KEY] = (3,)
    problems = [f"missing {key} {list(shape)}" for key, shape in expected.items() if key not in loaded]
    problems += [f"{key} has shape {list(np.shape(loaded[key]))}, expected {list(shape)}"
                 for key, shape in expected.items() if key in loaded and tuple(np.shape(loaded[key])) != shape]
    problems += [f"unexpected key {key}" for key in loaded if key not in expected]
    if problems:
        raise UsageError(f"{path}: not a converted CaffeNet (python -m models.caffemodel --convert ...): "
                         + "; ".join(problems))
    return {key: np.asarray(value, dtype=np.float32) for key, value in loaded.items()}


def load_caffenet_weights(model, path, mean=None, prefix=""):
    """Copy CaffeNet weights (and the mean pixel) from a ``.caffemodel`` or a converted ``.pdparams`` into ``model``:
    a CaffeNet, or a network holding one under ``prefix`` (e.g. ``"backbone."``). Returns the model keys set."""
    model_state = model.state_dict()
    width_divisor = _width_divisor_of(model_state, prefix)
    state = caffenet_state_from_file(path, width_divisor, mean)
    absent = [prefix + key for key in state if prefix + key not in model_state]
    if absent:
        raise UsageError(f"model {type(model).__name__} has no parameter {', '.join(absent)} for the CaffeNet "
                         f"weights of {path} (wrong prefix {prefix!r}?)")
    for key, array in state.items():
        target = model_state[prefix + key]
        target.set_value(paddle.to_tensor(array).astype(target.dtype))
    return [prefix + key for key in state]


def _width_divisor_of(model_state, prefix):
    key = f"{prefix}conv1.weight"
    if key not in model_state:
        raise UsageError(f"the model has no {key}: not a CaffeNet (wrong prefix {prefix!r}?)")
    return caffe_blob_shapes()["conv1"][0][0] // model_state[key].shape[0]


def convert(source, out, mean=None, width_divisor=1):
    """Write CaffeNet's weights and mean pixel from ``source`` (a .caffemodel) to ``out`` (.pdparams, atomically)."""
    state = caffenet_state_from_file(source, width_divisor, mean)
    atomic_write(Path(out), lambda tmp: paddle.save(state, tmp))
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m models.caffemodel",
        description="Convert CaffeNet's ImageNet weights (a .caffemodel) into a .pdparams of models/caffenet.py's "
                    "CaffeNet (conv1 ... fc7 and the mean pixel), so training reads no Caffe file.")
    parser.add_argument("--convert", required=True, metavar="CAFFEMODEL",
                        help=f"local {CAFFEMODEL_NAME} ({CAFFEMODEL_URL})")
    parser.add_argument("--out", default=DEFAULT_CONVERTED_PATH, help=f"default {DEFAULT_CONVERTED_PATH}")
    parser.add_argument("--mean", default=None, metavar="BINARYPROTO",
                        help=f"mean image whose average pixel the network subtracts (default: {IMAGENET_MEAN_BGR}, "
                             f"the average of {MEAN_FILE_SOURCES})")
    args = parser.parse_args(argv)

    def run(_argv):
        state = convert(args.convert, args.out, args.mean)
        parameters = sum(array.size for key, array in state.items() if key != MEAN_KEY)
        mean = ", ".join(f"{v:.4f}" for v in state[MEAN_KEY])
        print(f"converted {args.convert} -> {args.out}: conv1 ... fc7, {parameters:,} parameters (Linear weights "
              f"[in, out]), mean pixel BGR ({mean})")

    from utils.runtime.failure import run_cli
    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
