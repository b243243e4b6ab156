"""How the training set is split over processes and shuffled each epoch (docs/protocol.md#seed-recipe).

Two modes, the same with one process:
- replicated: every rank reads the whole training set each epoch, with its own shuffle keyed by (seed, rank, epoch).
  This is the seed's multi-GPU schedule: 2 x 64 on COCO's 10,000 images is 157 steps an epoch, at an effective
  batch of 128. The memory banks stay identical because every rank writes all ranks' codes (utils/loss.py).
- sharded: one pass over the data per epoch, split among the ranks, one shuffle keyed by (seed, epoch) shared by all
  (paddle.io.DistributedBatchSampler): 79 steps an epoch on 2 x 64, as one GPU x 128.
"""
import numpy as np
from paddle.io import DistributedBatchSampler

from utils import dist
from utils.errors import UsageError

SAMPLING_MODES = ("replicated", "sharded")


def shuffle_key(seed, epoch, stream=0):
    """A 32-bit key for numpy's RandomState from (seed, stream, epoch), for any seed in [0, 2**32).

    (The former key `seed * 100000 + epoch` overflowed RandomState's range from seed 42950 on.)
    """
    return int(np.random.SeedSequence([int(seed), int(stream), int(epoch)]).generate_state(1)[0])


class TrainBatchSampler(DistributedBatchSampler):
    """DistributedBatchSampler over the training set in either mode; call set_epoch(epoch) before each epoch.

    Replicated is a DistributedBatchSampler of one replica (the whole set) shuffled with this rank's key; sharded is
    the usual one over all ranks with a key shared by all. Rank 0's replicated key is the sharded key, so with one
    process both modes give the same batches.
    """

    def __init__(self, dataset, batch_size, seed, sampling):
        if sampling not in SAMPLING_MODES:
            raise UsageError(f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
        replicated = sampling == "replicated"
        kwargs = {"num_replicas": 1, "rank": 0} if replicated else {}
        super().__init__(dataset, batch_size=batch_size, shuffle=True, drop_last=False, **kwargs)
        self.seed, self.sampling = seed, sampling
        self.stream = dist.get_rank() if replicated else 0

    def set_epoch(self, epoch):
        super().set_epoch(shuffle_key(self.seed, epoch, self.stream))


def describe(sampling, num_train, batch_size, world_size, steps):
    """One log line: the mode, steps per epoch, images per rank and the effective batch."""
    per_rank = num_train if sampling == "replicated" else -(-num_train // world_size)
    what = ("every process reads the whole training set with its own shuffle" if sampling == "replicated"
            else "one pass over the training set split among the processes")
    return (f"sampling {sampling} ({what}): {steps} steps per epoch, {per_rank} of {num_train} training images per "
            f"process, effective batch {batch_size * world_size} ({world_size} x {batch_size})")
