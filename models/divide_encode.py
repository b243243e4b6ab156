"""DNNH's divide-and-encode module (Lai, Pan, Liu, Yan, "Simultaneous Feature Learning and Hash Coding with Deep
Neural Networks", CVPR 2015): the hash layer of the DNNH baseline of HashNet's Table 1 (docs/methods.md#dnnh).

The input features are cut into `bits` contiguous slices, and slice k feeds unit k alone, through a fully connected
layer of its own. Each bit thus sees its own part of the features, which the paper gives as the way to reduce the
redundancy between bits. With in_features = s * bits + r, slices 0 .. r-1 hold s + 1 features and the others s:

    o_k = sum_{f in slice k} w_f x_f + b_k

Every feature belongs to exactly one slice, so the per-slice layers together hold one weight per feature (`weight`,
shape [in_features]) and one bias per bit (`bias`, shape [bits]).

forward returns the pre-sigmoid values o (n, bits). The paper's unit is sigmoid(o) and its code is sigmoid >= 0.5, the
same as o >= 0, so the project's evaluation code sign(o) (0 -> +1) is DNNH's code. The sigmoid and the paper's
threshold function belong to the loss (utils/losses/dnnh_loss.py), like HashNet's tanh.

Initialisation and learning rate are those of the project's hash layer (models/hashnet.py): weights from N(0, 0.01),
bias 0, both with a learning rate 10x the backbone's. The caffe-dnnh prototxts draw the slice weights from N(0, 0.1);
the project's value keeps DNNH's new layer on the same footing as the other methods' hash layers.
"""
import paddle
import paddle.nn as nn

from utils.runtime.errors import UsageError

__all__ = ["DivideAndEncode"]


class DivideAndEncode(nn.Layer):
    """`DivideAndEncode(in_features, bits)`: (n, in_features) -> (n, bits) pre-sigmoid values."""

    def __init__(self, in_features, bits):
        super().__init__()
        if bits < 1 or in_features < bits:
            raise UsageError(f"divide-and-encode needs 1 <= bits <= in_features (one feature per slice at least); "
                             f"got bits={bits}, in_features={in_features}")
        self.in_features, self.bits = int(in_features), int(bits)
        # sizes as equal as possible: the first `num_long` slices take one feature more
        self.slice_size, self.num_long = divmod(self.in_features, self.bits)
        self.weight = self.create_parameter(
            [self.in_features],
            attr=paddle.ParamAttr(learning_rate=10.0, initializer=nn.initializer.Normal(0.0, 0.01)))
        self.bias = self.create_parameter(
            [self.bits], is_bias=True,
            attr=paddle.ParamAttr(learning_rate=10.0, initializer=nn.initializer.Constant(0.0)))

    def slices(self):
        """[(start, stop)] of each bit's features, in bit order."""
        bounds, start = [], 0
        for k in range(self.bits):
            stop = start + self.slice_size + (1 if k < self.num_long else 0)
            bounds.append((start, stop))
            start = stop
        return bounds

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"DivideAndEncode was built for {self.in_features} input features; got {x.shape[-1]}")
        z = x * self.weight  # each feature times its own weight: the products of all the per-slice layers at once
        # The slices are contiguous, so summing each slice is a reshape per group of equal-sized slices and a sum over
        # the last axis. Each output is a sum of its own slice's products only, whatever the other slices hold.
        long_end = self.num_long * (self.slice_size + 1)
        sums = []
        if self.num_long:
            sums.append(z[:, :long_end].reshape([-1, self.num_long, self.slice_size + 1]).sum(axis=-1))
        if self.num_long < self.bits:
            sums.append(z[:, long_end:].reshape([-1, self.bits - self.num_long, self.slice_size]).sum(axis=-1))
        return (sums[0] if len(sums) == 1 else paddle.concat(sums, axis=1)) + self.bias
