"""Caffe's SGD solver as the paper recipe runs it (docs/protocol.md#paper-recipe): per-blob learning-rate and decay
multipliers, momentum with the learning rate inside, and the "step" learning-rate policy, counted in iterations.

For every parameter w with gradient g, at iteration k (0-based: the number of updates made before):

    lr_k = base_lr * gamma ** floor(k / stepsize)
    v    = momentum * v + lr_k * lr_mult * (g + weight_decay * decay_mult * w)
    w    = w - v

(thuml/HashNet `sgd_solver.cpp`, `solver.prototxt`, the `param` blocks of `train_val.prototxt`).
paddle.optimizer.Momentum keeps the learning rate outside v (v = momentum v + g; w -= lr v), which differs from this
after every learning-rate drop, so the update is written here; the schedule is paddle.optimizer.lr.StepDecay, stepped
once per update.

The multipliers come from `multipliers(name, param)` alone. The ParamAttr learning rate Paddle's own optimizers multiply
in (`param.optimize_attr["learning_rate"]`, 10 on the hash layer of models/hashnet.py) is not applied, so the hash
layer's x10 counts once.
"""
import paddle

from utils.runtime.errors import UsageError

__all__ = ["CaffeSGD", "caffe_blob_multipliers"]


def caffe_blob_multipliers(name, param):
    """(lr_mult, decay_mult) of the authors' train_val.prototxt: the hash layer (`hash_layer.*`, their fc8_flickr)
    weights 10 / 1, bias 20 / 0; every other weight 1 / 1, every other bias 2 / 0."""
    is_bias = name.endswith(".bias")
    if name.startswith("hash_layer."):
        return (20.0, 0.0) if is_bias else (10.0, 1.0)
    return (2.0, 0.0) if is_bias else (1.0, 1.0)


class CaffeSGD:
    """CaffeSGD(model.named_parameters(), base_lr) with the engine's optimizer interface: step(), clear_grad(),
    get_lr(), state_dict(), set_state_dict().

    Parameters with stop_gradient are left out. A parameter without a gradient at a step is updated with g = 0
    (momentum and decay go on), as Caffe updates every learnable blob. The schedule advances in step(): get_lr() is the
    rate of the next update, and the engine must not step a scheduler of its own for this solver.
    """

    def __init__(self, named_parameters, base_lr, multipliers=caffe_blob_multipliers, momentum=0.9,
                 weight_decay=5e-4, stepsize=2000, gamma=0.5):
        if not base_lr > 0:
            raise UsageError(f"CaffeSGD: the base learning rate must be > 0, got {base_lr}")
        if not isinstance(stepsize, int) or stepsize < 1:
            raise UsageError(f"CaffeSGD: stepsize must be a positive number of iterations, got {stepsize!r}")
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self._params = []
        for name, param in named_parameters:
            if param.stop_gradient:
                continue
            lr_mult, decay_mult = multipliers(name, param)
            self._params.append((name, param, float(lr_mult), float(decay_mult)))
        if not self._params:
            raise UsageError("CaffeSGD: no trainable parameter (every one has stop_gradient set)")
        self._history = {name: paddle.zeros_like(param) for name, param, _, _ in self._params}
        self._schedule = paddle.optimizer.lr.StepDecay(learning_rate=base_lr, step_size=stepsize, gamma=gamma)

    @property
    def iteration(self):
        """Updates made so far (Caffe's iter_)."""
        return self._schedule.last_epoch

    def get_lr(self):
        return float(self._schedule())

    def multipliers(self):
        """{name: (lr_mult, decay_mult)} of the trained parameters."""
        return {name: (lr_mult, decay_mult) for name, _, lr_mult, decay_mult in self._params}

    @paddle.no_grad()
    def step(self):
        rate = self.get_lr()
        for name, param, lr_mult, decay_mult in self._params:
            grad = param.grad
            diff = paddle.zeros_like(param) if grad is None else grad
            if decay_mult * self.weight_decay:
                diff = diff + (self.weight_decay * decay_mult) * param
            self._history[name] = self.momentum * self._history[name] + (rate * lr_mult) * diff
            param.subtract_(self._history[name])
        self._schedule.step()

    def clear_grad(self, set_to_zero=True):
        for _, param, _, _ in self._params:
            param.clear_gradient(set_to_zero)

    def state_dict(self):
        return {"history": dict(self._history), "schedule": self._schedule.state_dict()}

    def set_state_dict(self, state):
        history = state["history"]
        if set(history) != set(self._history):
            missing, extra = sorted(set(self._history) - set(history)), sorted(set(history) - set(self._history))
            raise UsageError(f"CaffeSGD: the checkpoint's solver state does not fit this model (missing: {missing}, "
                             f"not in the model: {extra}); resume with the model the run was started with")
        for name, value in history.items():
            if list(value.shape) != list(self._history[name].shape):
                raise UsageError(f"CaffeSGD: the checkpoint's momentum of {name} has shape {list(value.shape)}, "
                                 f"the model's parameter {list(self._history[name].shape)}")
            self._history[name] = paddle.assign(value).astype(self._history[name].dtype)
        self._schedule.set_state_dict(state["schedule"])
