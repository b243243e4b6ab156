"""The deep baselines of Table 1: DHN (utils/losses/dhn_loss.py), DNNH (models/divide_encode.py,
utils/losses/dnnh_loss.py) and CNNH (utils/losses/cnnh_loss.py). Each loss's value and its gradient with respect to the
network's outputs are checked against an independent NumPy re-implementation in float64. The reference gradients are
derived by hand, and the hand derivations are themselves checked against central differences of the reference. The
file also checks the properties each method relies on.

Tolerances follow from float32 rounding (eps = 1.2e-7); the references are float64, exact by comparison:
- a loss value is a mean of m terms (m <= ~500 here), each a few float32 operations from exact (a few eps relative).
  The rounding errors of the sums have independent signs and add up like sqrt(m) eps (Higham and Mary 2019, as in
  tests/tolerances.py): below 3e-6 of a value of order 1. rtol = 1e-5 leaves a margin of 3 or more.
- a gradient entry is a sum of terms of both signs, so its error scales with the largest terms, not with the entry
  itself: grad / max|grad| is compared with atol 1e-5 (tests/test_loss.py does the same), on the same argument.
- central differences of the float64 references, step 1e-6: truncation error ~1e-12 times the third derivative, and
  rounding error ~eps64 * |f| / 1e-6 ~ 1e-10. rtol 1e-6 of max|grad| leaves a wide margin for both.
"""
import itertools

import numpy as np
import paddle
import pytest

from models.divide_encode import DivideAndEncode
from utils.losses.cnnh_loss import CNNHLoss, _sweep, cnnh_target_codes, target_code_objective
from utils.losses.dhn_loss import DHNLoss, log_cosh_quantization
from utils.losses.dnnh_loss import DNNHLoss, piecewise_threshold
from utils.runtime.errors import UsageError

RTOL = 1e-5  # float32 loss values of order 1 (module docstring)
GRAD_ATOL = 1e-5  # float32 gradients, relative to the largest entry (module docstring)


def central_difference(f, x, step=1e-6):
    """d f / d x of a scalar float64 function, entry by entry."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += step
        down[idx] -= step
        grad[idx] = (f(up) - f(down)) / (2 * step)
    return grad


def assert_grad_close(actual, expected, atol=GRAD_ATOL, err_msg=""):
    scale = np.abs(expected).max()
    assert scale > 0, "a zero reference gradient checks nothing"
    np.testing.assert_allclose(actual / scale, expected / scale, atol=atol, err_msg=err_msg)


def multi_hot(rng, n, classes, density=0.4, empty=()):
    """Random multi-hot labels, every item with a label except the rows in `empty`."""
    y = (rng.random((n, classes)) < density).astype(np.float64)
    y[np.arange(n), rng.integers(0, classes, n)] = 1.0
    y[list(empty)] = 0.0
    return y


def run(criterion, o, y, ind):
    """(loss, d loss / d o) of a project criterion on NumPy inputs."""
    outputs = paddle.to_tensor(o.astype(np.float32), stop_gradient=False)
    loss = criterion(outputs, paddle.to_tensor(y.astype(np.float32)), paddle.to_tensor(np.asarray(ind, np.int64)))
    loss.backward()
    return float(loss), outputs.grad.numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------------------------- DHN

def dhn_reference(o, y, bank_u, bank_y, alpha, lam):
    """(loss, d loss / d o) of DHN for one batch against a bank that already holds it: the pairs' mean negative
    log-likelihood plus lam * mean log cosh(|u| - 1), u = tanh(o). The bank is a constant (it carries no gradient)."""
    u = np.tanh(o)
    s = (y @ bank_y.T > 0).astype(np.float64)
    theta = alpha * u @ bank_u.T
    pair = np.logaddexp(0.0, theta) - s * theta
    x = np.abs(u) - 1.0
    quant = np.log(np.cosh(x))
    loss = pair.mean() + lam * quant.mean()
    # by hand: d pair / d theta = sigmoid(theta) - s; d theta / d u = alpha * bank rows; d log cosh(|u| - 1) / d u =
    # tanh(|u| - 1) sign(u); d u / d o = 1 - u^2
    grad_u = alpha * (1.0 / (1.0 + np.exp(-theta)) - s) @ bank_u / pair.size + lam * np.tanh(x) * np.sign(u) / x.size
    return loss, grad_u * (1.0 - u * u)


def test_dhn_matches_reference_over_steps_with_its_bank():
    rng = np.random.default_rng(0)
    num_train, bit, classes, alpha, lam = 10, 5, 4, 0.5, 0.1
    labels = multi_hot(rng, num_train, classes, empty=[6])
    criterion = DHNLoss(bit, num_train, alpha=alpha, num_class=classes, quantization_weight=lam)
    bank_u, bank_y = np.zeros((num_train, bit)), np.zeros((num_train, classes))
    # overlapping batches: each step sees the codes the earlier steps left in the bank, and rewrites some of them
    for step, ind in enumerate([[0, 3, 5, 7], [5, 1, 2, 9], [7, 0, 8, 4, 6]]):
        o = 1.5 * rng.standard_normal((len(ind), bit))
        loss, grad = run(criterion, o, labels[ind], ind)
        bank_u[ind], bank_y[ind] = np.tanh(o), labels[ind]
        ref_loss, ref_grad = dhn_reference(o, labels[ind], bank_u, bank_y, alpha, lam)
        np.testing.assert_allclose(loss, ref_loss, rtol=RTOL, err_msg=f"loss at step {step}")
        assert_grad_close(grad, ref_grad, err_msg=f"gradient at step {step}")
        # the hand-derived reference gradient is the derivative of the reference loss
        numeric = central_difference(lambda x: dhn_reference(x, labels[ind], bank_u, bank_y, alpha, lam)[0], o)
        assert_grad_close(ref_grad, numeric, atol=1e-6)
    np.testing.assert_allclose(criterion.U.numpy(), bank_u, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(criterion.Y.numpy(), bank_y)


def test_dhn_bank_persists_and_resumes():
    rng = np.random.default_rng(1)
    labels = multi_hot(rng, 6, 3)
    first = DHNLoss(bit=4, num_train=6, num_class=3)
    assert first.scale == 1.0 and not first.weighted
    o1 = rng.standard_normal((2, 4))
    run(first, o1, labels[[0, 3]], [0, 3])
    run(first, rng.standard_normal((1, 4)), labels[[1]], [1])
    np.testing.assert_allclose(first.U.numpy()[[0, 3]], np.tanh(o1), rtol=1e-6)  # not overwritten by the next call
    np.testing.assert_array_equal(first.U.numpy()[[2, 4, 5]], 0.0)
    assert set(first.state_dict()) == {"U", "Y"}
    # a resumed criterion continues with the same bank, so the next step is the same
    resumed = DHNLoss(bit=4, num_train=6, num_class=3)
    resumed.set_state_dict(first.state_dict())
    o3 = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(run(resumed, o3, labels[[2, 4, 5]], [2, 4, 5])[0],
                                  run(first, o3, labels[[2, 4, 5]], [2, 4, 5])[0])


def test_dhn_quantisation_is_zero_at_plus_minus_one():
    codes = paddle.to_tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    assert float(log_cosh_quantization(codes)) == 0.0
    # outputs far enough out that tanh is exactly ±1 in float32
    assert float(log_cosh_quantization(paddle.tanh(paddle.to_tensor([[20.0, -20.0, 30.0]])))) == 0.0
    assert float(log_cosh_quantization(paddle.to_tensor([[0.5, -0.2]]))) > 0.0


# --------------------------------------------------------------------------------------------------------------- DNNH

def dnnh_reference(o, y, margin, eps):
    """(loss, d loss / d o) of DNNH, one triplet at a time: b = g(sigmoid(o)) with the paper's threshold function g,
    then the mean over the valid triplets of max(0, margin - (|b_a - b_n|^2 - |b_a - b_p|^2))."""
    s = 1.0 / (1.0 + np.exp(-o))
    inside = (s >= 0.5 - eps) & (s <= 0.5 + eps)
    b = np.where(s > 0.5 + eps, 1.0, np.where(inside, s, 0.0))
    total, count, grad_b = 0.0, 0, np.zeros_like(b)
    for a, p, n in itertools.product(range(len(o)), repeat=3):
        if a == p or y[a] @ y[p] <= 0 or y[a] @ y[n] > 0:
            continue
        count += 1
        hinge = margin - (np.sum((b[a] - b[n]) ** 2) - np.sum((b[a] - b[p]) ** 2))
        if hinge > 0:
            total += hinge
            # by hand: d/d b_a = 2 (b_n - b_p), d/d b_p = 2 (b_p - b_a), d/d b_n = 2 (b_a - b_n)
            grad_b[a] += 2 * (b[n] - b[p])
            grad_b[p] += 2 * (b[p] - b[a])
            grad_b[n] += 2 * (b[a] - b[n])
    count = max(count, 1)
    # g' is 1 inside the band, 0 outside; sigmoid' = s (1 - s)
    return total / count, grad_b / count * inside * s * (1 - s), count


def dnnh_hinges(o, y, margin, eps):
    s = 1.0 / (1.0 + np.exp(-o))
    b = np.where(s > 0.5 + eps, 1.0, np.where((s >= 0.5 - eps) & (s <= 0.5 + eps), s, 0.0))
    d = ((b[:, None] - b[None]) ** 2).sum(-1)
    return margin - (d[:, None, :] - d[:, :, None])


def test_dnnh_matches_reference():
    rng = np.random.default_rng(2)
    bit, classes, margin, eps = 6, 3, 1.3, 0.1
    y = multi_hot(rng, 7, classes, density=0.3, empty=[4])
    o = rng.uniform(-1.5, 1.5, (7, bit))
    # no output on a band edge and no hinge at its kink, where float32 and float64 could take different branches
    s = 1.0 / (1.0 + np.exp(-o))
    assert np.abs(np.abs(s - 0.5) - eps).min() > 1e-3 and np.abs(dnnh_hinges(o, y, margin, eps)).min() > 1e-3
    ref_loss, ref_grad, count = dnnh_reference(o, y, margin, eps)
    assert count > 20 and ref_loss > 0  # real triplets, some of them violated
    loss, grad = run(DNNHLoss(bit, classes, margin=margin, epsilon=eps), o, y, np.arange(7))
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    assert_grad_close(grad, ref_grad)
    assert (grad[~((s >= 0.5 - eps) & (s <= 0.5 + eps))] == 0).all()
    numeric = central_difference(lambda x: dnnh_reference(x, y, margin, eps)[0], o)
    assert_grad_close(ref_grad, numeric, atol=1e-6)


def test_dnnh_zero_when_every_triplet_meets_the_margin():
    # two classes, codes near 0.9 and 0.1 on all 4 bits: |b_a - b_n|^2 = 4 * 0.64 > margin 1, |b_a - b_p|^2 ~ 0.
    # epsilon 0.5 makes g the identity, so this is the hinge's zero, not the threshold's
    y = np.array([[1.0, 0], [1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    s = np.array([0.9, 0.88, 0.91, 0.1, 0.12])[:, None] + np.linspace(0, 0.01, 4)[None]
    o = np.log(s / (1 - s))
    assert dnnh_reference(o, y, 1.0, 0.5)[2] == 18  # 3 anchors x 2 positives x 2 negatives, and 2 x 1 x 3
    loss, grad = run(DNNHLoss(4, 2, margin=1.0, epsilon=0.5), o, y, np.arange(5))
    assert loss == 0.0 and (grad == 0).all()
    # the same codes under labels that pair the far codes violate the margin
    assert run(DNNHLoss(4, 2, margin=1.0, epsilon=0.5), o, y[[0, 3, 4, 1, 2]], np.arange(5))[0] > 0


def test_dnnh_batch_without_triplets():
    y = np.array([[1.0, 0], [0, 1.0], [0, 0]])  # nobody has a positive
    loss, grad = run(DNNHLoss(3, 2), np.ones((3, 3)), y, np.arange(3))
    assert loss == 0.0 and (grad == 0).all()


def test_threshold_function_and_its_gradient():
    eps = 0.1
    o = np.linspace(-3, 3, 61)
    s = 1.0 / (1.0 + np.exp(-o))
    x = paddle.to_tensor(o.astype(np.float32), stop_gradient=False)
    sig = paddle.nn.functional.sigmoid(x)
    b = piecewise_threshold(sig, eps)
    b.sum().backward()
    inside = (s >= 0.5 - eps + 1e-6) & (s <= 0.5 + eps - 1e-6)
    below, above = s < 0.5 - eps - 1e-6, s > 0.5 + eps + 1e-6
    assert inside.sum() > 5 and below.sum() > 5 and above.sum() > 5
    np.testing.assert_array_equal(b.numpy()[below], 0.0)
    np.testing.assert_array_equal(b.numpy()[above], 1.0)
    np.testing.assert_allclose(b.numpy()[inside], s[inside], rtol=1e-6)
    grad = x.grad.numpy()
    np.testing.assert_array_equal(grad[below | above], 0.0)  # no gradient outside the band
    np.testing.assert_allclose(grad[inside], (s * (1 - s))[inside], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- divide-and-encode

def test_divide_and_encode_slices_and_reference():
    paddle.seed(3)
    layer = DivideAndEncode(10, 4)
    assert layer.slices() == [(0, 3), (3, 6), (6, 8), (8, 10)]  # sizes as equal as possible, longer ones first
    assert DivideAndEncode(8, 4).slices() == [(0, 2), (2, 4), (4, 6), (6, 8)]
    layer.bias.set_value(paddle.to_tensor([0.1, -0.2, 0.3, 0.0]))
    w, bias = layer.weight.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
    x = np.random.default_rng(3).standard_normal((5, 10))
    xt = paddle.to_tensor(x.astype(np.float32), stop_gradient=False)
    out = layer(xt)
    # each unit a fully connected layer on its own slice
    ref = np.stack([x[:, a:b] @ w[a:b] + bias[k] for k, (a, b) in enumerate(layer.slices())], axis=1)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-7)
    # gradients: d sum(c * out) / d w_f = sum_n c[n, k(f)] x[n, f]; / d x[n, f] = c[n, k(f)] w_f
    c = np.random.default_rng(4).standard_normal((5, 4))
    (out * paddle.to_tensor(c.astype(np.float32))).sum().backward()
    owner = np.concatenate([[k] * (b - a) for k, (a, b) in enumerate(layer.slices())])
    assert_grad_close(layer.weight.grad.numpy(), (c[:, owner] * x).sum(0))
    assert_grad_close(xt.grad.numpy(), c[:, owner] * w)
    assert_grad_close(layer.bias.grad.numpy(), c.sum(0))


def test_divide_and_encode_bit_depends_only_on_its_slice():
    paddle.seed(5)
    layer = DivideAndEncode(23, 5)  # slices of 5, 5, 5, 4, 4
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 23)).astype(np.float32)
    base = layer(paddle.to_tensor(x)).numpy()
    for k, (a, b) in enumerate(layer.slices()):
        other = rng.standard_normal(x.shape).astype(np.float32)
        other[:, a:b] = x[:, a:b]  # slice k kept, everything else changed
        out = layer(paddle.to_tensor(other)).numpy()
        np.testing.assert_array_equal(out[:, k], base[:, k], err_msg=f"bit {k}")
        assert (np.delete(out, k, axis=1) != np.delete(base, k, axis=1)).all()


def test_divide_and_encode_init_and_learning_rate():
    paddle.seed(6)
    layer = DivideAndEncode(4096, 48)
    w = layer.weight.numpy()
    assert w.shape == (4096,) and abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    assert layer.weight.optimize_attr["learning_rate"] == 10.0 and layer.bias.optimize_attr["learning_rate"] == 10.0
    assert set(layer.state_dict()) == {"weight", "bias"}
    with pytest.raises(UsageError, match="bits=8, in_features=4"):
        DivideAndEncode(4, 8)


# --------------------------------------------------------------------------------------------------------------- CNNH

def similarity(labels):
    s = np.where(labels @ labels.T > 0, 1.0, -1.0)
    np.fill_diagonal(s, 1.0)
    return s


def naive_sweep(codes, labels, rows, bit_orders, max_halvings=30):
    """The paper's coordinate descent written without its bookkeeping: for every entry, the objective along that
    coordinate is evaluated from scratch, f(d) = ||(H + d E_ij)(H + d E_ij)^T - q S||^2, its first and second
    derivatives at 0 read off the quartic through five of its values, then the Newton step in the box [-1, 1],
    halved until f decreases (from the box's end downhill when f''(0) <= 0)."""
    h = codes.copy()
    q = h.shape[1]
    s = similarity(labels)
    for t, i in enumerate(rows):
        for j in bit_orders[t]:
            def f(d):
                moved = h.copy()
                moved[i, j] += d
                return np.sum((moved @ moved.T - q * s) ** 2)
            grid = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
            coef = np.polyfit(grid, [f(d) for d in grid], 4)  # exact for a quartic, up to rounding
            g1, g2 = coef[3], 2 * coef[2]
            if g1 == 0:
                continue
            low, high = -1 - h[i, j], 1 - h[i, j]
            d = min(max(-g1 / g2, low), high) if g2 > 0 else (high if g1 < 0 else low)
            f0 = f(0.0)
            for _ in range(max_halvings):
                if d == 0 or f(d) < f0:
                    break
                d /= 2
            else:
                d = 0.0
            h[i, j] += d
    return h


@pytest.mark.parametrize("n, q, seed", [(9, 3, 7), (4, 8, 10), (6, 3, 10)])
def test_cnnh_sweep_matches_naive_coordinate_descent(n, q, seed):
    # (4, 8): more bits than items, f''(0) <= 0 for many entries; in the last two cases some first steps raise f and
    # must be halved (seeds found by searching for sweeps that the halving changes), so both safeguards are exercised
    rng = np.random.default_rng(seed)
    labels = multi_hot(rng, n, 4, density=0.2, empty=[n // 2])
    codes = rng.uniform(-1, 1, (n, q))
    rows, bit_orders = rng.permutation(n), rng.permuted(np.tile(np.arange(q), (n, 1)), axis=1)
    codes_t = codes.T.copy()
    residual = codes @ codes.T - q * similarity(labels)  # float64 here, so only the bookkeeping is under test
    before = np.sum(residual ** 2)
    changed = _sweep(codes_t, residual, rows, bit_orders)
    expected = naive_sweep(codes, labels, rows, bit_orders)
    assert changed >= n  # most entries moved
    np.testing.assert_allclose(codes_t.T, expected, rtol=1e-9, atol=1e-9)
    # the residual kept by rank-2 updates is the residual of the new codes
    np.testing.assert_allclose(residual, codes_t.T @ codes_t - q * similarity(labels), atol=1e-9)
    assert np.sum(residual ** 2) < before


def test_cnnh_target_codes_fit_the_labels_better_than_random_codes():
    rng = np.random.default_rng(8)
    labels = multi_hot(rng, 40, 6, density=0.15, empty=[3])  # an item without labels is still similar to itself
    bits = 8
    history = []
    codes = cnnh_target_codes(labels, bits, iterations=10, seed=0, history=history)
    assert codes.shape == (40, bits) and codes.dtype == np.float32 and set(np.unique(codes)) == {-1.0, 1.0}
    assert all(b <= a * (1 + 1e-6) for a, b in zip(history, history[1:])), history  # never increases
    assert history[-1] < 0.9 * history[0]

    def objective(h):  # ||S - H H^T / q||^2 / n^2, computed here independently
        return np.mean((similarity(labels) - h @ h.T / bits) ** 2)

    np.testing.assert_allclose(target_code_objective(labels, codes), objective(codes.astype(np.float64)), rtol=1e-6)
    random_codes = [np.where(rng.random((40, bits)) < 0.5, 1.0, -1.0) for _ in range(20)]
    assert objective(codes.astype(np.float64)) < 0.8 * min(objective(h) for h in random_codes)


def test_cnnh_target_codes_recover_two_disjoint_classes():
    labels = np.zeros((10, 2))
    labels[[0, 2, 4, 6, 8], 0] = 1
    labels[[1, 3, 5, 7, 9], 1] = 1
    codes = cnnh_target_codes(labels, 4, iterations=10, seed=1)
    first, second = codes[0::2], codes[1::2]
    assert (first == first[0]).all() and (second == second[0]).all()  # the same code within a class
    np.testing.assert_array_equal(second[0], -first[0])  # and opposite codes across: S = H H^T / q exactly
    assert target_code_objective(labels, codes) == 0.0


def test_cnnh_target_codes_are_seeded():
    labels = multi_hot(np.random.default_rng(9), 30, 5, density=0.2)
    a = cnnh_target_codes(labels, 6, iterations=3, seed=4)
    np.testing.assert_array_equal(a, cnnh_target_codes(labels, 6, iterations=3, seed=4))
    assert (a != cnnh_target_codes(labels, 6, iterations=3, seed=5)).any()


def test_cnnh_loss_matches_reference_and_carries_its_targets():
    rng = np.random.default_rng(10)
    targets = np.where(rng.random((8, 5)) < 0.5, 1.0, -1.0)
    criterion = CNNHLoss(targets)
    assert criterion.scale == 1.0
    ind = np.array([6, 1, 1, 3])
    o = 1.5 * rng.standard_normal((4, 5))
    loss, grad = run(criterion, o, np.zeros((4, 3)), ind)
    np.testing.assert_allclose(loss, np.mean((o - targets[ind]) ** 2), rtol=RTOL)
    assert_grad_close(grad, 2 * (o - targets[ind]) / o.size)  # d mean((o - t)^2) / d o, by hand
    # checkpoints carry the targets: a criterion built with placeholders and loaded from the state dict is the same
    assert set(criterion.state_dict()) == {"targets"}
    resumed = CNNHLoss(np.zeros_like(targets))
    resumed.set_state_dict(criterion.state_dict())
    np.testing.assert_array_equal(resumed.targets.numpy(), targets)
    assert run(resumed, o, np.zeros((4, 3)), ind)[0] == loss
    with pytest.raises(ValueError, match="5-bit targets.*width 4"):
        criterion(paddle.zeros([2, 4]), paddle.zeros([2, 3]), paddle.to_tensor([0, 1]))
