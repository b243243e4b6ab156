"""AlexNet backbone in the torchvision layout (every parameter name is torchvision's state-dict key).

Default initialisation is Paddle's own: Conv2D weights ~ N(0, sqrt(2 / fan_in)), Linear
weights Xavier-uniform, all biases 0. ``init_kaiming_`` offers the torchvision-style
alternative (Kaiming-normal fan_out convs, N(0, 0.01) Linear, zero biases).
ImageNet weights are loaded by models.pretrained (``python -m models.alexnet --convert ...`` runs its converter).
"""

from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

CONV_INDICES = (0, 3, 6, 8, 10)
LINEAR_INDICES = (1, 4, 6)
DROPOUT_P = 0.5
BATCHNORM_LAYERS = (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)


class AlexNet(nn.Layer):
    """torchvision-layout AlexNet; parameter names equal torchvision's state-dict keys."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2D(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2D(kernel_size=3, stride=2),
            nn.Conv2D(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2D(kernel_size=3, stride=2),
            nn.Conv2D(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2D(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2D(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2D(kernel_size=3, stride=2),
        )
        # Identity at 224x224 input; lets smaller images (toy data) run through fc6.
        self.avgpool = nn.AdaptiveAvgPool2D((6, 6))
        # Paddle's default dropout mode "upscale_in_train" is torch's semantics.
        self.classifier = nn.Sequential(
            nn.Dropout(DROPOUT_P),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(DROPOUT_P),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = paddle.flatten(x, 1)
        return self.classifier(x)


def init_kaiming_(model: nn.Layer) -> nn.Layer:
    """Re-initialise every Conv2D (Kaiming normal, fan_out, ReLU gain) and Linear (N(0, 0.01)) in ``model`` (any
    Layer, e.g. a HashNet), all their biases 0, and every BatchNorm to the identity (weight 1, bias 0), whatever the
    layers held before (HashNet builds them as zeros, so as not to draw their default initialisation first). Returns
    ``model``.

    The normal values come from a NumPy generator seeded by one draw of Paddle's RNG, so ``paddle.seed`` makes them
    reproducible: NumPy draws AlexNet's 61 M values in about half the time of Paddle's CPU kernel, and the same ones
    under every Paddle version."""
    rng = np.random.default_rng(paddle.randint(0, 2**31 - 1, [4]).numpy().tolist())  # randint's bounds are int32
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Conv2D):
            out_channels, _, kh, kw = layer.weight.shape
            std = (2.0 / (out_channels * kh * kw)) ** 0.5
        elif isinstance(layer, nn.Linear):
            std = 0.01
        elif isinstance(layer, BATCHNORM_LAYERS):
            layer.weight.set_value(paddle.ones(layer.weight.shape, dtype=layer.weight.dtype))
            layer.bias.set_value(paddle.zeros(layer.bias.shape, dtype=layer.bias.dtype))
            continue
        else:
            continue
        values = rng.standard_normal(layer.weight.shape, dtype=np.float32)  # the models' parameters are float32
        values *= np.float32(std)
        layer.weight.set_value(values)
        if layer.bias is not None:
            layer.bias.set_value(paddle.zeros(layer.bias.shape, dtype=layer.bias.dtype))
    return model


def expected_backbone_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Our key names and Paddle-layout shapes of ``AlexNet(num_classes)``'s parameters."""
    conv_shapes = {
        0: (64, 3, 11, 11),
        3: (192, 64, 5, 5),
        6: (384, 192, 3, 3),
        8: (256, 384, 3, 3),
        10: (256, 256, 3, 3),
    }
    linear_shapes = {1: (256 * 6 * 6, 4096), 4: (4096, 4096), 6: (4096, num_classes)}
    shapes: dict[str, tuple[int, ...]] = {}
    for index, shape in conv_shapes.items():
        shapes[f"features.{index}.weight"] = shape
        shapes[f"features.{index}.bias"] = (shape[0],)
    for index, shape in linear_shapes.items():
        shapes[f"classifier.{index}.weight"] = shape
        shapes[f"classifier.{index}.bias"] = (shape[1],)
    return shapes


if __name__ == "__main__":
    # the converter's older command name: run models.pretrained as the program (it imports this module, so no import
    # of it here, where it would close a cycle)
    import runpy

    runpy.run_module("models.pretrained", run_name="__main__", alter_sys=True)
