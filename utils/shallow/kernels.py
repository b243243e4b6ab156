"""What the kernel-based supervised baselines (BRE, KSH, SDH) share: the Gaussian RBF kernel from features to a set of
anchor points taken from the training set, the hash values computed from it a block of rows at a time, and the checks
of their count and weight parameters.

Each method keeps its authors' bandwidth rule (see its module); here the bandwidth is the `width` in
exp(-||x - a||^2 / (2 width)), a squared length.
"""
import numpy as np

from utils.runtime.errors import UsageError

# rows of features turned into kernel values at once by rbf_project: 4096 x 1000 anchors is 33 MB of float64, so
# encoding a 100,000-image database never holds its whole (n, m) kernel
CHUNK_ROWS = 4096


def squared_distances(features, anchors):
    """(n, m) squared Euclidean distances, clipped at 0 against the round-off of the expanded form."""
    sq = (features * features).sum(axis=1)[:, None] + (anchors * anchors).sum(axis=1)[None, :]
    return np.maximum(sq - 2.0 * features @ anchors.T, 0.0)


def rbf(features, anchors, width):
    """(n, m) exp(-||x - a||^2 / (2 width))."""
    return np.exp(-squared_distances(features, anchors) / (2.0 * width))


def rbf_project(features, anchors, width, weights, centre=None, bias=None):
    """(rbf(features, anchors, width) - centre) @ weights + bias, a block of CHUNK_ROWS rows at a time."""
    out = np.empty((features.shape[0], weights.shape[1]))
    for start in range(0, features.shape[0], CHUNK_ROWS):
        kernel = rbf(features[start:start + CHUNK_ROWS], anchors, width)
        if centre is not None:
            kernel -= centre
        out[start:start + CHUNK_ROWS] = kernel @ weights
    if bias is not None:
        out += bias
    return out


def sample_rows(n, count, rng):
    """`count` distinct row indices of n, drawn at random (the authors' randsample / randperm without replacement)."""
    return rng.choice(n, size=count, replace=False)


def check_width(model, width, rule):
    if not width > 0:
        raise UsageError(f"{model.name}: the RBF kernel width ({rule}) is 0: the training features are all identical; "
                         f"fit needs at least two distinct feature vectors")


def check_count(model, key, minimum=1):
    value = model.params[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{model.name}: {key} must be an integer >= {minimum} (the authors' value is "
                         f"{model.defaults[key]}), got {value!r}")


def check_number(model, key, minimum=0.0, strict=True):
    """A real parameter > minimum (strict) or >= minimum."""
    value = model.params[key]
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
    if not number or not (value > minimum if strict else value >= minimum):
        relation = ">" if strict else ">="
        raise UsageError(f"{model.name}: {key} must be a finite number {relation} {minimum:g} (the authors' value is "
                         f"{model.defaults[key]:g}), got {value!r}")
