"""CaffeNet (bvlc_reference_caffenet), the authors' backbone for the paper's Table 1 (docs/protocol.md#paper-recipe).

Layers as in thuml/HashNet ``caffe/models/train/<dataset>/train_val.prototxt``; every parameter is named after its
Caffe layer (``conv1.weight`` ... ``fc7.bias``), so the converted ``bvlc_reference_caffenet.caffemodel`` loads by
name (models/caffemodel.py)::

    conv1 96x11x11 /4  ReLU  max pool 3/2  LRN      conv2 256x5x5 pad 2, 2 groups  ReLU  max pool 3/2  LRN
    conv3 384x3x3 pad 1  ReLU   conv4 384x3x3 pad 1, 2 groups  ReLU   conv5 256x3x3 pad 1, 2 groups  ReLU  max pool 3/2
    [adaptive average pool to 6x6]  fc6 4096  ReLU  dropout 0.5   fc7 4096  ReLU  dropout 0.5

- Max pooling rounds up (Caffe's pooling output size is ceil((h - 3) / 2) + 1): ``ceil_mode=True``. At 227 px the
  maps are 55, 27, 13 and 6, so pool5 is already 6x6 and the adaptive pool returns its input unchanged (an average
  over one element); it only lets smaller inputs (tests, the toy set: 39 px and up) reach fc6, as in models/alexnet.py.
- LRN is ``paddle.nn.LocalResponseNorm(5, 1e-4, 0.75, k=1)``: Caffe's ``x / (k + alpha / n * sum of x^2 over the n = 5
  channels centred on x) ^ beta``. Paddle's docstring writes alpha without the 1 / n, but its code pads the channels
  by 2 on each side and averages the squares over 5 (avg_pool3d), which is Caffe's formula (tests/test_caffenet.py).
- Dropout scales by 1 / (1 - p) in training and is the identity in evaluation, like Caffe's dropout layer.
- Without weights the layers start from the prototxt's fillers (``init_caffe_fillers_``).

Input: ``CaffeNet.fc7_features(x)`` takes the pipeline's uint8 RGB batch (N, 3, H, W) and makes Caffe's input from it
on the device (``caffe_input``: RGB -> BGR, float 0-255, minus the mean pixel held in the ``mean_bgr`` buffer, which
checkpoints and exported models carry). A float batch is taken as already made. The authors' evaluation subtracts
this mean pixel; their training subtracts the mean image at the crop's offsets, which the pipeline's crops do not
carry, so training here uses the mean pixel too (a deviation, measured in docs/protocol.md#paper-recipe). Usage::

    from models.caffemodel import load_caffenet_weights
    net = CaffeNet()
    load_caffenet_weights(net, "pretrained/caffenet_imagenet.pdparams")   # or the .caffemodel itself
    features = net.fc7_features(uint8_rgb_batch)      # (N, 4096), after relu7 (and drop7 in train mode)

``width_divisor`` (1, 2, 4, 8 or 16) divides every layer's width: the same network, thinner, for fast tests.
"""
import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from utils.runtime.errors import UsageError

FEATURE_DIM = 4096
INPUT_SIZE = 227
POOL5_SIZE = 6
DROPOUT_P = 0.5
WIDTH_DIVISORS = (1, 2, 4, 8, 16)
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0
POOL_KERNEL, POOL_STRIDE = 3, 2
MIN_INPUT_SIZE = 39  # the smallest input whose every pooling gets 2 rows or more: conv1 8, pool1 4, pool2 2, pool5 1

# (name, output channels, kernel, stride, padding, groups) [thuml Caffe train_val.prototxt]
CONV_LAYERS = (
    ("conv1", 96, 11, 4, 0, 1),
    ("conv2", 256, 5, 1, 2, 2),
    ("conv3", 384, 3, 1, 1, 1),
    ("conv4", 384, 3, 1, 1, 2),
    ("conv5", 256, 3, 1, 1, 2),
)
FC_LAYERS = (("fc6", FEATURE_DIM), ("fc7", FEATURE_DIM))
# weight std and bias value of each layer's fillers, what Caffe starts from without weights [train_val.prototxt]
CAFFE_FILLERS = {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.01, 0.0), "conv4": (0.01, 1.0),
                 "conv5": (0.01, 1.0), "fc6": (0.005, 1.0), "fc7": (0.005, 1.0)}

# The ImageNet mean pixel, BGR: thuml/HashNet caffe/data/ilsvrc12/imagenet_mean.binaryproto (3 x 256 x 256) averaged
# over the image in float64; caffe/python/caffe/imagenet/ilsvrc_2012_mean.npy, whose average the authors' evaluation
# subtracts, holds the same image (docs/protocol.md#paper-recipe).
IMAGENET_MEAN_BGR = (104.0069879317889, 116.66876761696767, 122.6789143406786)


def layer_widths(width_divisor=1):
    """{layer name: output channels} of CaffeNet with every width divided by ``width_divisor``."""
    if width_divisor not in WIDTH_DIVISORS:
        raise UsageError(f"CaffeNet width_divisor must be one of {WIDTH_DIVISORS} (so every group of conv2, conv4 "
                         f"and conv5 keeps whole channels), got {width_divisor!r}")
    return {name: width // width_divisor for name, width, *_ in CONV_LAYERS + FC_LAYERS}


def caffe_blob_shapes(width_divisor=1):
    """{layer name: (weight shape, bias shape)} in Caffe's layout (convolutions (out, in / groups, kh, kw), inner
    products (out, in)): what bvlc_reference_caffenet.caffemodel holds for conv1 ... fc7 at width_divisor 1."""
    widths = layer_widths(width_divisor)
    shapes = {}
    in_channels = 3
    for name, _, kernel, _, _, groups in CONV_LAYERS:
        shapes[name] = ((widths[name], in_channels // groups, kernel, kernel), (widths[name],))
        in_channels = widths[name]
    in_features = in_channels * POOL5_SIZE * POOL5_SIZE
    for name, _ in FC_LAYERS:
        shapes[name] = ((widths[name], in_features), (widths[name],))
        in_features = widths[name]
    return shapes


def caffe_pool_size(size):
    """Caffe's max-pool output size (no padding): ceil((size - kernel) / stride) + 1."""
    return math.ceil((size - POOL_KERNEL) / POOL_STRIDE) + 1


def feature_map_sizes(input_size):
    """Side of the conv1, pool1, pool2 and pool5 maps for a square input of ``input_size`` px (227 -> 55, 27, 13, 6).
    Raises UsageError when some pooling would get less than 2 rows (Caffe's output would be empty)."""
    conv1 = (input_size - CONV_LAYERS[0][2]) // CONV_LAYERS[0][3] + 1
    sizes = [conv1]
    for _ in range(3):  # conv2 ... conv5 keep the size (stride 1, 'same' padding)
        if sizes[-1] < 2:
            raise UsageError(f"CaffeNet needs images of at least {MIN_INPUT_SIZE} px; got {input_size} px")
        sizes.append(caffe_pool_size(sizes[-1]))
    return tuple(sizes)


def caffe_input(x, mean_bgr):
    """uint8 RGB (N, 3, H, W) -> Caffe's input: BGR, float32 0-255, minus ``mean_bgr`` (3 values, B G R) per channel
    (as Caffe's data layer and the authors' predict_parallel.py make it). A float batch is returned unchanged."""
    if x.dtype != paddle.uint8:
        return x
    bgr = paddle.flip(paddle.cast(x, "float32"), axis=[1])
    return bgr - paddle.reshape(mean_bgr, [1, 3, 1, 1])


class CaffeNet(nn.Layer):
    """bvlc_reference_caffenet up to fc7 (see the module docstring); parameters named conv1 ... fc7."""

    def __init__(self, width_divisor=1):
        super().__init__()
        widths = layer_widths(width_divisor)
        in_channels = 3
        for name, _, kernel, stride, padding, groups in CONV_LAYERS:
            setattr(self, name, nn.Conv2D(in_channels, widths[name], kernel, stride=stride, padding=padding,
                                          groups=groups))
            in_channels = widths[name]
        self.pool = nn.MaxPool2D(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm = nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)
        self.pool5_to_6x6 = nn.AdaptiveAvgPool2D((POOL5_SIZE, POOL5_SIZE))
        self.fc6 = nn.Linear(in_channels * POOL5_SIZE * POOL5_SIZE, widths["fc6"])
        self.fc7 = nn.Linear(widths["fc6"], widths["fc7"])
        self.dropout = nn.Dropout(DROPOUT_P)
        self.feature_dim = widths["fc7"]
        self.register_buffer("mean_bgr", paddle.to_tensor(IMAGENET_MEAN_BGR, dtype="float32"), persistable=True)
        init_caffe_fillers_(self)

    def pool5(self, x):
        """The convolutional part: uint8 RGB (or an already made float input) -> pool5 (N, 256, h, w)."""
        x = caffe_input(x, self.mean_bgr)
        if paddle.in_dynamic_mode():
            feature_map_sizes(min(x.shape[2:]))  # a clear error for too small an image
        x = self.norm(self.pool(F.relu(self.conv1(x))))
        x = self.norm(self.pool(F.relu(self.conv2(x))))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        return self.pool(F.relu(self.conv5(x)))

    def fc7_features(self, x):
        """fc7 after relu7 (and drop7 in train mode) of an image batch: (N, 4096), what the hash layer reads."""
        x = paddle.flatten(self.pool5_to_6x6(self.pool5(x)), 1)
        x = self.dropout(F.relu(self.fc6(x)))
        return self.dropout(F.relu(self.fc7(x)))

    def forward(self, x):
        return self.fc7_features(x)


def init_caffe_fillers_(model):
    """Give conv1 ... fc7 of a CaffeNet the prototxt's fillers: Gaussian weights (std 0.01 convolutions, 0.005 fc6
    and fc7) and constant biases (0 for conv1 and conv3, 1 elsewhere). Paddle's RNG: paddle.seed makes it repeatable."""
    for name, (std, bias) in CAFFE_FILLERS.items():
        layer = getattr(model, name)
        layer.weight.set_value(paddle.normal(0.0, std, shape=layer.weight.shape).astype(layer.weight.dtype))
        layer.bias.set_value(paddle.full(layer.bias.shape, bias, dtype=layer.bias.dtype))
    return model
