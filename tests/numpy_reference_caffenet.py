"""CaffeNet's forward in NumPy (float64), written from Caffe's layer definitions, independently of models/caffenet.py:
the reference the converted Paddle network is compared with (tests/test_caffenet.py).

Weights in Caffe's layout: {name: (weight, bias)}, convolutions (out, in / groups, k, k), inner products (out, in).
"""
import math

import numpy as np

# name: (stride, padding, groups), from thuml/HashNet's train_val.prototxt
CONVS = {"conv1": (4, 0, 1), "conv2": (1, 2, 2), "conv3": (1, 1, 1), "conv4": (1, 1, 2), "conv5": (1, 1, 2)}


def convolution(x, weight, bias, stride, pad, groups):
    k = weight.shape[-1]
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    in_per_group, out_per_group = x.shape[1] // groups, weight.shape[0] // groups
    outputs = []
    for g in range(groups):
        patch = windows[:, g * in_per_group:(g + 1) * in_per_group]          # N, Cg, Ho, Wo, k, k
        kernels = weight[g * out_per_group:(g + 1) * out_per_group]          # Og, Cg, k, k
        outputs.append(np.tensordot(patch, kernels, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2))
    return np.concatenate(outputs, axis=1) + bias[None, :, None, None]


def max_pool(x, kernel=3, stride=2):
    """Caffe's MAX pooling, no padding: ceil((h - kernel) / stride) + 1 outputs, the last windows cut at the edge."""
    height, width = x.shape[2:]
    out_h = math.ceil((height - kernel) / stride) + 1
    out_w = math.ceil((width - kernel) / stride) + 1
    out = np.empty(x.shape[:2] + (out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = x[:, :, i * stride:min(i * stride + kernel, height),
                                j * stride:min(j * stride + kernel, width)].max(axis=(2, 3))
    return out


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's ACROSS_CHANNELS LRN: x / (k + alpha / size * sum of x^2 over the size channels centred on x) ^ beta,
    channels beyond the edges counted as 0."""
    channels = x.shape[1]
    before = (size - 1) // 2
    squares = np.pad(x ** 2, ((0, 0), (before, size - 1 - before), (0, 0), (0, 0)))
    window_sum = sum(squares[:, c:c + channels] for c in range(size))
    return x * (k + alpha / size * window_sum) ** -beta


def adaptive_average_pool(x, out_size=6):
    """Bins [floor(i * n / out), ceil((i + 1) * n / out)) per axis, averaged (Paddle's and torch's adaptive pool)."""
    def bins(n):
        return [(i * n // out_size, -(-(i + 1) * n // out_size)) for i in range(out_size)]

    out = np.empty(x.shape[:2] + (out_size, out_size))
    for i, (top, bottom) in enumerate(bins(x.shape[2])):
        for j, (left, right) in enumerate(bins(x.shape[3])):
            out[:, :, i, j] = x[:, :, top:bottom, left:right].mean(axis=(2, 3))
    return out


def relu(x):
    return np.maximum(x, 0.0)


def caffenet_fc7(images_rgb_uint8, weights, mean_bgr):
    """fc7 after its ReLU (inference: dropout is the identity) of uint8 RGB images (N, 3, H, W)."""
    x = images_rgb_uint8[:, ::-1].astype(np.float64) - np.asarray(mean_bgr, np.float64)[None, :, None, None]

    def conv(name, x):
        return relu(convolution(x, *map(np.float64, weights[name]), *CONVS[name]))

    x = lrn(max_pool(conv("conv1", x)))
    x = lrn(max_pool(conv("conv2", x)))
    x = max_pool(conv("conv5", conv("conv4", conv("conv3", x))))
    if x.shape[2:] != (6, 6):
        x = adaptive_average_pool(x)
    x = x.reshape(len(x), -1)
    for name in ("fc6", "fc7"):
        weight, bias = map(np.float64, weights[name])
        x = relu(x @ weight.T + bias)
    return x
