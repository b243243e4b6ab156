"""The paper recipe's solver (utils/optim/caffe_sgd.py) against a NumPy loop of Caffe's SGD update
(docs/protocol.md#paper-recipe): per-blob multipliers (the hash layer's ParamAttr x10 counted once), momentum across
learning-rate drops, an unused parameter, and a resume from a saved state equal to the straight run."""
import numpy as np
import paddle
import pytest

from utils.optim.caffe_sgd import CaffeSGD, caffe_blob_multipliers
from utils.runtime.errors import UsageError

BASE_LR, STEPSIZE, STEPS = 0.05, 3, 8
# train_val.prototxt's param blocks: (lr_mult, decay_mult)
PROTOTXT = {"backbone.weight": (1, 1), "backbone.bias": (2, 0), "hash_layer.weight": (10, 1),
            "hash_layer.bias": (20, 0), "spare.weight": (1, 1), "spare.bias": (2, 0)}


class Tiny(paddle.nn.Layer):
    """A backbone layer, a hash layer built like models/hashnet.py's (ParamAttr learning_rate 10), a frozen layer and
    a layer the loss does not use."""

    def __init__(self):
        super().__init__()
        paddle.seed(3)
        self.backbone = paddle.nn.Linear(6, 5)
        self.hash_layer = paddle.nn.Linear(5, 4, weight_attr=paddle.ParamAttr(learning_rate=10.0),
                                           bias_attr=paddle.ParamAttr(learning_rate=10.0))
        self.frozen = paddle.nn.Linear(4, 4)
        for param in self.frozen.parameters():
            param.stop_gradient = True
        self.spare = paddle.nn.Linear(2, 2)

    def forward(self, x):
        return paddle.tanh(self.hash_layer(paddle.nn.functional.relu(self.backbone(x))))


INPUTS = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")


def train(model, solver, steps, grads=None):
    lrs = []
    for _ in range(steps):
        out = model(paddle.to_tensor(INPUTS))
        ((out - 0.3) ** 2).sum().backward()
        if grads is not None:
            grads.append({name: (p.grad.numpy().copy() if p.grad is not None else None)
                          for name, p in model.named_parameters()})
        lrs.append(solver.get_lr())
        solver.step()
        solver.clear_grad()
    return lrs


def weights(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def caffe_loop(start, grads, momentum=0.9, weight_decay=5e-4):
    """Caffe's SGDSolver: Regularize, ComputeUpdateValue, Update, with lr = base * 0.5 ^ floor(iter / stepsize)."""
    w = {name: value.astype(np.float64) for name, value in start.items() if name in PROTOTXT}
    history = {name: np.zeros_like(value) for name, value in w.items()}
    for iteration, step_grads in enumerate(grads):
        rate = BASE_LR * 0.5 ** (iteration // STEPSIZE)
        for name, (lr_mult, decay_mult) in PROTOTXT.items():
            diff = np.zeros_like(w[name]) if step_grads[name] is None else step_grads[name].astype(np.float64)
            diff = diff + weight_decay * decay_mult * w[name]
            history[name] = momentum * history[name] + rate * lr_mult * diff
            w[name] = w[name] - history[name]
    return w


def test_update_matches_caffe_across_learning_rate_drops():
    model = Tiny()
    assert model.hash_layer.weight.optimize_attr["learning_rate"] == 10.0   # what Paddle's optimizers would apply
    start = weights(model)
    solver = CaffeSGD(model.named_parameters(), BASE_LR, stepsize=STEPSIZE)
    assert solver.multipliers() == {name: (float(a), float(b)) for name, (a, b) in PROTOTXT.items()}
    grads = []
    lrs = train(model, solver, STEPS, grads)
    assert lrs == pytest.approx([0.05] * 3 + [0.025] * 3 + [0.0125] * 2, rel=1e-12)
    assert solver.iteration == STEPS and solver.get_lr() == pytest.approx(0.0125)
    assert grads[0]["spare.weight"] is None and grads[0]["hash_layer.bias"] is not None
    want, got = caffe_loop(start, grads), weights(model)
    for name in PROTOTXT:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
        if name != "spare.bias":                     # no gradient, no decay: the one that stays
            assert not np.array_equal(got[name], start[name]), name
    np.testing.assert_array_equal(got["frozen.weight"], start["frozen.weight"])
    np.testing.assert_array_equal(got["spare.bias"], start["spare.bias"])


def test_resume_from_a_saved_state_equals_the_straight_run(tmp_path):
    straight = Tiny()
    train(straight, CaffeSGD(straight.named_parameters(), BASE_LR, stepsize=STEPSIZE), STEPS)

    first = Tiny()
    solver = CaffeSGD(first.named_parameters(), BASE_LR, stepsize=STEPSIZE)
    train(first, solver, 4)                                   # stops one step after the first drop
    paddle.save({"model": first.state_dict(), "optimizer": solver.state_dict()}, str(tmp_path / "state.pdckpt"))
    train(first, solver, 1)                                   # the saved state must not follow later steps
    state = paddle.load(str(tmp_path / "state.pdckpt"))
    resumed = Tiny()
    resumed.set_state_dict(state["model"])
    solver = CaffeSGD(resumed.named_parameters(), BASE_LR, stepsize=STEPSIZE)
    solver.set_state_dict(state["optimizer"])
    assert solver.iteration == 4 and solver.get_lr() == pytest.approx(0.025)
    train(resumed, solver, STEPS - 4)
    for name, value in weights(straight).items():
        np.testing.assert_array_equal(weights(resumed)[name], value, err_msg=name)


def test_multipliers_and_errors():
    assert caffe_blob_multipliers("hash_layer.weight", None) == (10.0, 1.0)
    assert caffe_blob_multipliers("hash_layer.bias", None) == (20.0, 0.0)
    assert caffe_blob_multipliers("features.0.weight", None) == (1.0, 1.0)
    assert caffe_blob_multipliers("classifier.4.bias", None) == (2.0, 0.0)
    model = Tiny()
    solver = CaffeSGD(model.named_parameters(), BASE_LR)
    state = solver.state_dict()
    del state["history"]["spare.bias"]
    with pytest.raises(UsageError, match=r"does not fit this model \(missing: \['spare.bias'\], not in the model"):
        solver.set_state_dict(state)
    with pytest.raises(UsageError, match=r"base learning rate must be > 0, got 0"):
        CaffeSGD(model.named_parameters(), 0)
    with pytest.raises(UsageError, match=r"no trainable parameter"):
        CaffeSGD(model.frozen.named_parameters(), BASE_LR)
