"""A tiny protobuf writer for the tests: synthetic Caffe files (NetParameter in the current and the V1 layout,
BlobProto) built byte by byte, independently of models/caffemodel.py's reader.

Field numbers from BVLC caffe src/caffe/proto/caffe.proto (see models/caffemodel.py's docstring). Wire format: each
field is a varint key (number << 3 | wire type), then a varint (type 0), 8 bytes (1), a varint length and the bytes
(2) or 4 bytes (5).
"""
import struct

import numpy as np

# V1LayerParameter.LayerType, the numbers caffe.proto gives
V1_TYPE_NUMBERS = {"Data": 5, "Convolution": 4, "ReLU": 18, "Pooling": 17, "LRN": 15, "InnerProduct": 14,
                   "Dropout": 6, "SoftmaxWithLoss": 21, "Accuracy": 1}


def varint(value):
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(number, wire_type):
    return varint(number << 3 | wire_type)


def varint_field(number, value):
    return key(number, 0) + varint(value)


def bytes_field(number, payload):
    return key(number, 2) + varint(len(payload)) + payload


def string_field(number, text):
    return bytes_field(number, text.encode("utf-8"))


def blob(array, legacy=False, floats="packed"):
    """A BlobProto of ``array``. ``legacy``: sized by num/channels/height/width (the shape padded in front with 1s to
    4 axes, as old Caffe files store biases and fc weights), else by ``shape``. ``floats``: "packed" (data, one
    length-delimited field), "unpacked" (data, one fixed32 field per value) or "double" (double_data, packed)."""
    array = np.asarray(array)
    out = b""
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        for number, dim in zip((1, 2, 3, 4), dims):
            out += varint_field(number, dim)
    else:
        out += bytes_field(7, bytes_field(1, b"".join(varint(d) for d in array.shape)))
    flat = array.ravel()
    if floats == "packed":
        out += bytes_field(5, flat.astype("<f4").tobytes())
    elif floats == "unpacked":
        out += b"".join(key(5, 5) + struct.pack("<f", v) for v in flat)
    elif floats == "double":
        out += bytes_field(8, flat.astype("<f8").tobytes())
    else:
        raise ValueError(floats)
    return out


def layer(name, type_name, blobs=(), v1=False, bottom="", top=""):
    """A LayerParameter (name 1, type 2 as a string, bottom 3, top 4, blobs 7) or, with ``v1``, a V1LayerParameter
    (bottom 2, top 3, name 4, type 5 as the enum, blobs 6), with ``blobs`` already encoded."""
    if v1:
        out = string_field(2, bottom) if bottom else b""
        out += (string_field(3, top) if top else b"") + string_field(4, name)
        out += varint_field(5, V1_TYPE_NUMBERS[type_name])
        return out + b"".join(bytes_field(6, b) for b in blobs)
    out = string_field(1, name) + string_field(2, type_name)
    out += (string_field(3, bottom) if bottom else b"") + (string_field(4, top) if top else b"")
    return out + b"".join(bytes_field(7, b) for b in blobs)


def net(layers, v1=False, name="CaffeNet"):
    """A NetParameter: name 1, then the layers as field 2 (V1 ``layers``) or 100 (``layer``)."""
    return string_field(1, name) + b"".join(bytes_field(2 if v1 else 100, encoded) for encoded in layers)


def caffenet_layers(weights, v1=False, floats="packed", extra=True):
    """Encoded layers of a CaffeNet whose conv1 ... fc8 blobs are ``weights`` ({name: (weight, bias)}, Caffe's
    layout), with the blob-less layers around them (data, ReLU, pooling, LRN, dropout, loss) when ``extra``.
    V1 files store blobs with legacy shapes, as Caffe wrote them before 2015."""
    order = ["data", "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3",
             "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8",
             "loss"]
    types = {"data": "Data", "relu": "ReLU", "pool": "Pooling", "norm": "LRN", "drop": "Dropout", "loss":
             "SoftmaxWithLoss", "conv": "Convolution", "fc": "InnerProduct"}
    encoded = []
    for name in order:
        type_name = types[name.rstrip("0123456789")]
        if name in weights:
            blobs = [blob(array, legacy=v1, floats=floats) for array in weights[name]]
        elif name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8") or not extra:
            continue  # a learnable layer the caller left out on purpose, or only the learnable layers wanted
        else:
            blobs = []
        encoded.append(layer(name, type_name, blobs, v1=v1))
    return encoded
