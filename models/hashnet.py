"""HashNet (docs/protocol.md#network): a backbone's features (AlexNet's fc7 by default; the others of
models/backbones.py, docs/protocol.md#other-backbones), then a new hash layer; outputs the raw hash activation o.

The input is a uint8 image batch (N, 3, H, W) as the data pipeline hands it over; the conversion to float and the
ImageNet normalisation (docs/protocol.md#seed-recipe) are the network's first operation, so they run on the device in
training, evaluation, predict.py and the exported model alike, and the loader workers ship 4x fewer bytes. The
continuation tanh(scale * o) lives in the loss (utils/losses/hashnet_loss.py); the binary code is sign(o) with 0 -> +1
(utils/hashing/codes.binarize).
"""
import numpy as np
import paddle
import paddle.nn as nn

from models.alexnet import init_kaiming_
from models.backbones import DEFAULT_BACKBONE, backbone_spec, build_network
from models.divide_encode import DivideAndEncode
from models.pretrained import load_pretrained
from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
from utils.runtime.errors import UsageError

# A feature unit whose std over the training set is at most this fraction of the features' RMS is taken as constant and
# standardised to 0 (docs/protocol.md#training-from-scratch): dead ReLU units (std 0), and units that fire on an image
# or two at a level float32 rounding cannot resolve once divided by their std. Two engines' fc7 differ by ~1e-5 of
# the RMS (oneDNN against the dynamic graph, docs/testing.md#cross-engine-tolerances), so a kept unit's standardised
# value is known to ~1e-2 of its std at worst.
CONSTANT_FEATURE_RTOL = 1e-3
HASH_HEADS = ("linear", "divide_encode")  # the hash layer: one linear layer, or DNNH's divide-and-encode module


def normalize_images(x):
    """uint8 (N, 3, H, W) pixels -> float32 ImageNet-normalised input: x / 255, then (x - mean) / std per channel,
    the same operations in the same order as paddle.vision's ToTensor + Normalize (so the same floats).

    A floating-point batch is taken as already normalised and passed through (callers with their own pipeline).
    """
    if x.dtype != paddle.uint8:
        return x
    mean = paddle.to_tensor(IMAGENET_MEAN, dtype="float32").reshape([1, 3, 1, 1])
    std = paddle.to_tensor(IMAGENET_STD, dtype="float32").reshape([1, 3, 1, 1])
    return (paddle.cast(x, "float32") / 255.0 - mean) / std


class HashNet(nn.Layer):
    """`HashNet(hash_bit, pretrained=path, backbone="alexnet")`; the backbone's parameter names are torchvision's
    (AlexNet: features.N, classifier.{1,4}; ResNet: conv1, bn1, layer1..4; VGG: features.N, classifier.{0,3}), so
    ImageNet weights load by name.

    `pretrained`: a local ImageNet weights file of that backbone (torchvision .pth or Paddle .pdparams) or None for
    a randomly initialised backbone (`init`: "paddle", the layers' own default initialisation, or "kaiming";
    "torchvision" is the older name of "paddle"; "none" fills the backbone with zeros instead of drawing 61 M random
    values, for a model whose every weight a checkpoint is about to replace: utils/train/build.build_model).

    `feature_mean` / `feature_std` standardise the features (fc7) before the hash layer. They are the identity (0 / 1)
    unless a from-scratch recipe sets them from training-set statistics (docs/protocol.md#training-from-scratch:
    without it a random backbone's common all-positive fc7 offset saturates every code to one sign pattern). They are
    buffers, so checkpoints and exported models carry them.

    BatchNorm layers (ResNet, VGG-BN) use the batch's statistics and update their running ones in train mode, as in
    the authors' PyTorch training, and use the running ones in eval mode, so that an image's code does not depend on
    its batch (docs/backbones.md#batchnorm; several processes: the engine shares rank 0's statistics).
    """

    def __init__(self, hash_bit, pretrained=None, init="paddle", backbone=DEFAULT_BACKBONE, hash_head="linear"):
        super().__init__()
        if hash_head not in HASH_HEADS:
            raise UsageError(f"hash_head must be one of {', '.join(HASH_HEADS)}, got {hash_head!r}")
        if hash_bit < 1:
            raise UsageError(f"--bit must be a positive number of bits, got {hash_bit}")
        spec = backbone_spec(backbone)
        self.hash_bit, self.backbone = hash_bit, spec.name
        if init not in ("paddle", "torchvision", "kaiming", "none"):
            raise UsageError(f"--init must be 'paddle' or 'kaiming', got {init!r}")
        if init in ("none", "kaiming"):
            # the global initializer replaces the layers' default ones (Xavier, ...) with zeros: those draws would be
            # thrown away (replaced by a checkpoint, or by init_kaiming_ below), about 0.6 s for AlexNet
            nn.initializer.set_global_initializer(nn.initializer.Constant(0.0), nn.initializer.Constant(0.0))
            try:
                network = build_network(spec)
            finally:
                nn.initializer.set_global_initializer(None)
        else:
            network = build_network(spec)
        if pretrained and spec.family == "caffenet":
            from models.caffemodel import load_caffenet_weights
            load_caffenet_weights(network, pretrained)  # a .caffemodel or its converted .pdparams (fc8 left out)
        elif pretrained:
            # the 1000-way ImageNet classifier is replaced by the hash layer
            load_pretrained(network, pretrained, skip=(spec.imagenet_classifier,), backbone=spec.name)
        # the layers up to the global pool, then (AlexNet, VGG) Dropout fc6 ReLU Dropout fc7 ReLU, keeping the
        # network's names (and for the head its indices), so that they are torchvision's
        for name in spec.pooled:
            setattr(self, name, network if spec.whole else getattr(network, name))
        if spec.head:
            setattr(self, spec.head, nn.Sequential(*list(getattr(network, spec.head).children())[:spec.head_layers]))
        self.pooled_layers, self.head_layers = spec.pooled, (spec.head,) if spec.head else ()
        if init == "kaiming" and not pretrained:
            init_kaiming_(self)  # the layers kept so far: not the ImageNet classifier that the hash layer replaces
        self.own_input = spec.own_input  # CaffeNet: BGR 0-255 minus the mean pixel, made by the network itself
        self.register_buffer("feature_mean", paddle.zeros([spec.feature_dim]), persistable=True)
        self.register_buffer("feature_std", paddle.ones([spec.feature_dim]), persistable=True)
        if hash_head == "divide_encode":  # DNNH's (docs/methods.md#dnnh): bit k sees only the k-th slice of fc7
            self.hash_layer = DivideAndEncode(spec.feature_dim, hash_bit)
        else:
            self.hash_layer = nn.Linear(
                spec.feature_dim, hash_bit,
                weight_attr=paddle.ParamAttr(learning_rate=10.0, initializer=nn.initializer.Normal(0.0, 0.01)),
                bias_attr=paddle.ParamAttr(learning_rate=10.0, initializer=nn.initializer.Constant(0.0)))

    def backbone_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("hash_layer.")]

    def backbone_state_names(self):
        """The state dict's entries of the backbone (its parameters and BatchNorm statistics): all but the hash layer
        and the fc7 standardisation, which is what a frozen-backbone run changes (utils/train/checkpoint.py)."""
        return [name for name in self.state_dict()
                if not name.startswith("hash_layer.") and name not in ("feature_mean", "feature_std")]

    def fc7(self, x):
        """The backbone's features of an image batch, before the standardisation: fc7 after its ReLU (AlexNet,
        VGG), the globally average-pooled last block (ResNet)."""
        if not self.own_input:
            x = normalize_images(x)
        for name in self.pooled_layers:
            x = getattr(self, name)(x)
        x = paddle.flatten(x, 1)
        for name in self.head_layers:
            x = getattr(self, name)(x)
        return x

    def standardize(self, fc7):
        """fc7 -> the hash layer's input (the identity unless a from-scratch recipe fitted the statistics; a constant
        unit's std is inf, so its input is 0)."""
        return (fc7 - self.feature_mean) / self.feature_std

    def fit_standardization(self, fc7):
        """Set the standardisation to the per-unit mean and std of `fc7` (n, feature_dim), the training images'
        features; a constant unit (CONSTANT_FEATURE_RTOL) gets std inf, so it adds nothing whatever the image.
        Returns {'images', 'constant_units', 'mean_of_means', 'mean_std'} (mean_std over the kept units)."""
        fc7 = np.asarray(fc7, dtype="float64")
        mean, std = fc7.mean(0), fc7.std(0)
        constant = std <= CONSTANT_FEATURE_RTOL * np.sqrt((fc7 ** 2).mean())
        self.feature_mean.set_value(paddle.to_tensor(mean.astype("float32")))
        self.feature_std.set_value(paddle.to_tensor(np.where(constant, np.inf, std).astype("float32")))
        return {"images": len(fc7), "constant_units": int(constant.sum()), "mean_of_means": float(mean.mean()),
                "mean_std": float(std[~constant].mean()) if (~constant).any() else 0.0}

    def extract_features(self, x):
        """The backbone's part of forward: the standardised fc7 the hash layer reads (utils/train/frozen.py computes it
        once per run when the backbone is frozen)."""
        return self.standardize(self.fc7(x))

    def forward(self, x):
        return self.hash_layer(self.extract_features(x))
