"""The authors' continuation, the ScaleTanH layer of the paper recipe (docs/protocol.md#paper-recipe): y = tanh(scale x)
with a scale that grows with the training forward passes.

The layer (thuml/HashNet `scale_tanh_layer.cpp`) counts calls of its Reshape: Caffe runs it once when it sets the net
up and again before every forward pass. The counter is therefore one ahead of the training forward passes. When it
reaches a multiple of step_size, scale = init_scale * (1 + gamma * counter) ** power, and that scale applies to the
forward pass that just incremented it. `counts_setup_pass=False` starts the counter at 0 instead, as thuml's PyTorch
code does. The seed recipe's per-epoch continuation is utils/losses/hashnet_loss.continuation_scale.
"""
import paddle

from utils.runtime.errors import UsageError

__all__ = ["ScaleTanH"]


class ScaleTanH:
    """The continuation's state and activation: call `step()` before each training forward pass, then `self(x)`.

    Evaluation codes are sign(x), which no scale changes, so evaluation neither steps nor applies it. The autograd of
    tanh(scale x) is scale (1 - y^2) dy, the layer's own backward. state_dict() / set_state_dict() hold the counter:
    a resumed run continues with the same scales.
    """

    def __init__(self, init_scale=1.0, gamma=0.005, power=0.5, step_size=200, counts_setup_pass=True):
        if not isinstance(step_size, int) or step_size < 1:
            raise UsageError(f"ScaleTanH: step_size must be a positive integer, got {step_size!r}")
        self.init_scale, self.gamma, self.power = float(init_scale), float(gamma), float(power)
        self.step_size = step_size
        self.start = 1 if counts_setup_pass else 0
        self.counter = self.start

    @property
    def forward_passes(self):
        """Training forward passes stepped so far."""
        return self.counter - self.start

    @property
    def scale(self):
        """The scale the last multiple of step_size the counter reached set (init_scale before the first)."""
        reached = self.counter - self.counter % self.step_size
        if reached == 0:
            return self.init_scale
        return self.init_scale * (1.0 + self.gamma * reached) ** self.power

    def step(self):
        """Before a training forward pass: advance the counter; returns the scale that pass uses."""
        self.counter += 1
        return self.scale

    def __call__(self, x):
        return paddle.tanh(self.scale * x)

    def state_dict(self):
        return {"counter": self.counter, "counts_setup_pass": bool(self.start)}

    def set_state_dict(self, state):
        if bool(state["counts_setup_pass"]) != bool(self.start):
            raise UsageError(f"ScaleTanH: the checkpoint counted the set-up pass: {state['counts_setup_pass']}, this "
                             f"run: {bool(self.start)}; resume with the setting the run started with")
        self.counter = int(state["counter"])
