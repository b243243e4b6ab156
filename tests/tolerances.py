"""Cross-engine tolerances, derived from the magnitudes involved rather than tuned on one machine
(docs/testing.md#cross-engine-tolerances): what two engines (the dynamic graph, Paddle Inference with or without
oneDNN), or one engine at two batch shapes or process counts, may differ by on HashNet's fc7 and outputs.

Both compute the same float32 products and sum them in another order (blocking, vector width and FMA differ by kernel,
batch shape and CPU), so they differ by rounding only:

1. fc7, a priori (`fc7_tolerance`): each layer's output is a sum of at most N products (N: the largest fan-in).
   Whatever the order, each addition is rounded to within EPS/2 of its partial sum, and those n rounding errors,
   independent in sign, add up to about sqrt(n) EPS/2 of the partial sums' size, which is the layer's output scale
   (the probabilistic bound of Higham and Mary, SIAM J. Sci. Comput. 2019: lambda sqrt(n) u, u = EPS/2, taken with
   lambda = 2). A ReLU network keeps a relative error's size through the layers after it (they scale error and
   signal alike), so the L layers before fc7 add at most L of them: |delta fc7| <= L sqrt(N) EPS max|fc7|, max|fc7|
   being at least the features' scale. AlexNet at 64 px (L = 7, N = 9216): 8.0e-5 of max|fc7|, ~60x what the
   engines differ by (the errors of the layers do not add up with one sign, nor reach every unit's maximum).
2. outputs (`output_tolerance`): o_k = sum_j W_jk (fc7_j - mean_j) / std_j + b_k, so a difference delta in fc7 moves
   o_k by at most gain_k delta, gain_k = sum_j |W_jk| / std_j over the kept units (a constant unit's std is inf:
   it adds nothing, models.hashnet.CONSTANT_FEATURE_RTOL), with delta the measured max|delta fc7| where a test can
   run fc7 through both engines, else the a-priori bound above. Plus the hash layer's own rounding: the subtraction
   and division round each standardised input z_j to within EPS |z_j|, and the sum of n kept products adds about
   sqrt(n) EPS of sum_j |W_jk z_j| (as in 1.), so (sqrt(n) + 2) EPS (sum_j |W_jk z_j| + |b_k|).
3. codes: an output farther from 0 than its bound has the same sign in both engines. Nearer to 0, rounding could
   decide the sign, but only within the engines' actual difference, which is ~60x below the bound (the gain sums
   |W_jk| as if every unit's rounding had the sign of W_jk): `assert_outputs_agree` requires identical codes
   everywhere (the promise of utils/retrieval/fast_encoder.py), and where a test's outputs come from the a-priori
   bound (launcher runs: thousands of outputs, many of them near 0) only where the bound decides them.

Where a test runs the model in its process, `measured_output_tolerance` measures max|delta fc7| through a Paddle
Inference program of fc7 alone (the engine and batch shapes under test), checks it against 1., and propagates it
(2.); `apriori_output_tolerance` propagates the bound of 1. (a test that sees only outputs). `assert_*` log the
margin (actual / allowed) on the "tolerances" logger: `pytest --log-cli-level=INFO -o log_cli=true` prints them.
"""
import logging
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import paddle

EPS = float(np.finfo(np.float32).eps)  # 2**-23: float32 rounds a result to within EPS/2 of its value
LOG = logging.getLogger("tolerances")


def fan_ins(model):
    """The fan-in (products per output) of each convolution and linear layer of the backbone: every weighted layer
    but the hash layer."""
    sizes = []
    for name, layer in model.named_sublayers():
        if name.startswith("hash_layer"):
            continue
        if isinstance(layer, paddle.nn.Conv2D):
            sizes.append(int(np.prod(layer.weight.shape[1:])))  # [out, in / groups, kh, kw]
        elif isinstance(layer, paddle.nn.Linear):
            sizes.append(int(layer.weight.shape[0]))  # [in, out]
    return sizes


def fc7_tolerance(model, fc7):
    """A-priori bound on two engines' max|delta fc7| (docstring, 1.): depth x sqrt(largest fan-in) x EPS x max|fc7|.
    The depth counts every weighted layer (for a ResNet also the shortcut convolutions: more than its longest path)."""
    sizes = fan_ins(model)
    return len(sizes) * math.sqrt(max(sizes)) * EPS * float(np.abs(fc7).max())


def hash_inputs(model):
    """(W [features, bits] divided by std per row, so a constant unit's row is 0; the kept units' mask)."""
    weight = model.hash_layer.weight.numpy().astype("float64")
    std = model.feature_std.numpy().astype("float64")
    return weight / std[:, None], np.isfinite(std)


def output_tolerance(model, fc7, fc7_difference):
    """Bound on two engines' |delta o| per image and bit (docstring, 2.), for the dynamic graph's `fc7` of the images
    and a bound (or the measured max) `fc7_difference` on |delta fc7|."""
    scaled, kept = hash_inputs(model)
    gain = np.abs(scaled).sum(0)
    weight = model.hash_layer.weight.numpy().astype("float64")[kept]
    z = (np.asarray(fc7, "float64")[:, kept] - model.feature_mean.numpy()[kept]) / model.feature_std.numpy()[kept]
    rounding = (math.sqrt(kept.sum()) + 2) * EPS * (np.abs(z) @ np.abs(weight) + np.abs(model.hash_layer.bias.numpy()))
    return gain[None, :] * fc7_difference + rounding


def dygraph_fc7(model, images, batch_size=64):
    """The dynamic graph's fc7 of uint8 `images` (numpy [N, 3, H, W]), in batches."""
    with paddle.no_grad():
        return np.concatenate([model.fc7(paddle.to_tensor(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])


def assert_within(what, difference, tolerance):
    """|difference| <= tolerance (arrays broadcast); returns the margin, the largest actual / allowed."""
    ratio = float(np.max(difference / tolerance))
    LOG.info("%s: max|difference| %.3g, allowed %.3g..%.3g, margin (actual / allowed) %.3g", what,
             float(np.max(difference)), float(np.min(tolerance)), float(np.max(tolerance)), ratio)
    assert ratio <= 1, (f"{what}: differs by up to {np.max(difference):.3g}, {ratio:.3g} x the rounding bound "
                        f"(tests/tolerances.py)")
    return ratio


def assert_fc7_agree(model, fc7, reference, what="fc7"):
    """`fc7` within the a-priori bound of the dynamic graph's `reference`; returns the measured max|delta fc7|."""
    assert fc7.shape == reference.shape
    difference = np.abs(fc7.astype("float64") - reference)
    assert_within(what, difference.max(), fc7_tolerance(model, reference))
    return float(difference.max())


def assert_outputs_agree(raw, reference, tolerance, what="outputs", all_codes=True, distinct_codes=True):
    """Outputs within `tolerance` (per image and bit, output_tolerance) of the dynamic graph's `reference`, and the
    same codes (sign, 0 -> +1): all of them, or with all_codes=False those the tolerance decides (docstring, 3.);
    on codes that differ between images (equal codes everywhere would prove little), unless distinct_codes=False
    (an unstandardised random network gives every image one code: docs/protocol.md#training-from-scratch)."""
    from utils.hashing.codes import binarize
    assert raw.shape == reference.shape
    assert_within(what, np.abs(raw.astype("float64") - reference), tolerance)
    decided = np.abs(reference) > tolerance
    LOG.info("%s: %d of %d outputs within their bound of 0", what, (~decided).sum(), decided.size)
    same = binarize(raw) == binarize(reference)
    checked = same if all_codes else same[decided]
    bounds = np.broadcast_to(tolerance, same.shape)
    assert checked.all(), (f"{what}: {(~same).sum()} codes differ, at outputs |o| = {np.abs(reference)[~same][:5]} "
                           f"(bounds {bounds[~same][:5]})")
    assert not distinct_codes or len(np.unique(binarize(reference), axis=0)) > 1, f"{what}: one code for every image"


class _Features(paddle.nn.Layer):
    """model.fc7 alone as a layer, so that it can be saved as a program (the model's other layers ride along unused)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.fc7(x)


def fc7_predictor(model, crop_size, enable_mkldnn=True):
    """A Paddle Inference predictor of eval-mode `model`'s fc7 (uint8 images in), with or without oneDNN: the engine
    an exported program or --encoder inference runs, on fc7 alone."""
    from utils.retrieval import fast_encoder
    folder = Path(tempfile.mkdtemp(prefix="tolerances_fc7_"))
    try:
        program = fast_encoder.save_program(_Features(model), folder, crop_size)
        return fast_encoder.Predictor(fast_encoder.create_predictor(
            folder / program, folder / fast_encoder.PARAMS_FILE, enable_mkldnn=enable_mkldnn))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measured_fc7_difference(model, images, enable_mkldnn=True, batch_sizes=(None,), what="predictor"):
    """(the dynamic graph's fc7 of uint8 `images`, in one batch; max|delta fc7| between it and a Paddle Inference fc7
    program run on batches of each of `batch_sizes`, None: all images at once), each checked against fc7_tolerance."""
    reference = dygraph_fc7(model, images, batch_size=len(images))
    predictor = fc7_predictor(model, images.shape[-1], enable_mkldnn)
    difference = 0.0
    for size in batch_sizes:
        size = size or len(images)
        fc7 = np.concatenate([predictor(images[i:i + size]) for i in range(0, len(images), size)])
        difference = max(difference, assert_fc7_agree(model, fc7, reference, f"{what} fc7, batches of {size}"))
    return reference, difference


def measured_output_tolerance(model, images, enable_mkldnn=True, batch_sizes=(None,), what="predictor"):
    """output_tolerance of `model` on uint8 `images` with the measured max|delta fc7| (measured_fc7_difference)."""
    return output_tolerance(model, *measured_fc7_difference(model, images, enable_mkldnn, batch_sizes, what))


def apriori_output_tolerance(model, images):
    """output_tolerance of `model` on uint8 `images` with the a-priori fc7 bound (a test that sees only outputs)."""
    reference = dygraph_fc7(model, images)
    return output_tolerance(model, reference, fc7_tolerance(model, reference))
