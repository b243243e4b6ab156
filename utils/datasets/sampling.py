"""How the training set is split over processes and shuffled each epoch (docs/protocol.md#seed-recipe).

Two modes, the same with one process:
- replicated: every rank reads the whole training set each epoch, with its own shuffle keyed by (seed, rank, epoch).
  This is the seed's multi-GPU schedule: 2 x 64 on COCO's 10,000 images is 157 steps an epoch, at an effective
  batch of 128. The memory banks stay identical because every rank writes all ranks' codes
  (utils/losses/hashnet_loss.py).
- sharded: one pass over the data per epoch, split among the ranks, one shuffle keyed by (seed, epoch) shared by all
  (paddle.io.DistributedBatchSampler): 79 steps an epoch on 2 x 64, as one GPU x 128.
"""
import numpy as np
from paddle.io import DistributedBatchSampler

from utils.runtime import dist
from utils.runtime.errors import UsageError

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


class TwoStreamBatchSampler:
    """The paper recipe's batches (docs/protocol.md#paper-recipe): every iteration concatenates `half` images of
    one shuffled stream over the training set and `half` of a second, independent one (the authors' two ImageData
    layers), and the pairwise loss compares the first half with the second.

    A block (set_epoch(block)) is `iterations_per_block` iterations; the last block may be shorter. Where an image
    sits in a stream is a function of the iteration alone: stream s reads a fresh permutation keyed by (seed, pass,
    s) each time it has gone through the set, so a resumed run draws exactly the batches an uninterrupted one does.

    Several processes split every half: rank r takes positions r, r + W, ... of each, so a rank's batch is its share
    of the first half followed by its share of the second, and the gathered halves are the one-process iteration.
    Each item is (key, index) with a key unique to that draw (its position in its stream): ImageList seeds the image's
    augmentation with it, so an image drawn again gets a fresh crop.
    """

    STREAM_OFFSET = 1000  # stream keys apart from the epoch shuffles' rank streams

    def __init__(self, num_items, half, iterations, iterations_per_block, seed):
        world, rank = dist.get_world_size(), dist.get_rank()
        if half % world:
            raise UsageError(f"--batch-size {half} (images per stream and iteration) must be a multiple of the number "
                             f"of processes ({world}): each process takes an equal share of both halves")
        self.num_items, self.half, self.seed = num_items, half, seed
        self.iterations, self.per_block = iterations, iterations_per_block
        self.world, self.rank = world, rank
        self.batch_size = 2 * half // world
        self.block = 1
        self._permutations = {}

    def set_epoch(self, block):
        self.block = block

    def iteration_range(self, block=None):
        """The 1-based iterations of a block: (first, last)."""
        block = self.block if block is None else block
        first = (block - 1) * self.per_block + 1
        return first, min(block * self.per_block, self.iterations)

    def __len__(self):
        first, last = self.iteration_range()
        return max(0, last - first + 1)

    def _permutation(self, stream, pass_number):
        key = (stream, pass_number)
        if key not in self._permutations:
            if len(self._permutations) > 8:  # two streams, a pass or two each: the cache never needs more
                self._permutations.clear()
            rng = np.random.RandomState(shuffle_key(self.seed, pass_number, self.STREAM_OFFSET + stream))
            self._permutations[key] = rng.permutation(self.num_items)
        return self._permutations[key]

    def stream_draws(self, stream, iteration):
        """(positions in the stream, dataset indices) of the `half` images stream `stream` gives at 1-based
        `iteration`, in order (every rank's share)."""
        start = (iteration - 1) * self.half
        positions = np.arange(start, start + self.half)
        passes, offsets = positions // self.num_items, positions % self.num_items
        indices = np.array([self._permutation(stream, int(p))[o] for p, o in zip(passes, offsets)], dtype=np.int64)
        return positions, indices

    def __iter__(self):
        first, last = self.iteration_range()
        for iteration in range(first, last + 1):
            batch = []
            for stream in (0, 1):
                positions, indices = self.stream_draws(stream, iteration)
                batch.extend((int(2 * position + stream), int(index))
                             for position, index in zip(positions[self.rank::self.world],
                                                        indices[self.rank::self.world]))
            yield batch
