"""The synthetic codes of benchmarks/bench_index.py (its docstring says how and why they are made): codes packed by
rows like the engines take them (bit i in bit i % 8 of byte i // 8), from numpy Generators seeded by one seed, in
chunks so that 10M x 64 bits (80 MB) is built without a larger temporary.
"""
import numpy as np

CHUNK_ROWS = 1 << 20  # codes generated at once: ~40 MB of float32 draws a pass at 64 bits
STREAMS = {"centres": 0, "database": 1, "queries": 2}  # one Generator stream per purpose, so queries do not move
DISTRIBUTIONS = ("clustered", "uniform")


def rng_for(seed, distribution, purpose):
    """The Generator of one (distribution, purpose): independent streams from one seed."""
    return np.random.default_rng([int(seed), DISTRIBUTIONS.index(distribution), STREAMS[purpose]])


def _last_byte_mask(bits):
    return 0xFF if bits % 8 == 0 else (1 << (bits % 8)) - 1


def uniform_rows(n, bits, rng, chunk=CHUNK_ROWS):
    """n uniformly random bits-bit codes packed by rows, (n, ceil(bits / 8)) uint8."""
    width = -(-bits // 8)
    rows = np.empty((n, width), np.uint8)
    for lo in range(0, n, chunk):
        rows[lo:lo + chunk] = rng.integers(0, 256, (min(chunk, n - lo), width), dtype=np.uint8)
    rows[:, -1] &= _last_byte_mask(bits)
    return rows


def flip_mask(shape, p, rng):
    """uint8 bytes whose every bit is set independently with probability p, built one bit position at a time."""
    mask = np.zeros(shape, np.uint8)
    for bit in range(8):
        flips = (rng.random(shape, dtype=np.float32) < p).view(np.uint8)
        mask |= np.left_shift(flips, np.uint8(bit))
    return mask


def clustered_rows(centre_rows, n, bits, p, rng, chunk=CHUNK_ROWS, with_centres=False):
    """n codes packed by rows: each a uniformly picked row of centre_rows XOR independent flips of probability p.
    With with_centres, also the centre number of every code (n,) int64."""
    width = centre_rows.shape[1]
    rows = np.empty((n, width), np.uint8)
    centres = np.empty(n, np.int64) if with_centres else None
    for lo in range(0, n, chunk):
        count = min(chunk, n - lo)
        which = rng.integers(0, len(centre_rows), count)
        np.bitwise_xor(centre_rows[which], flip_mask((count, width), p, rng), out=rows[lo:lo + count])
        if with_centres:
            centres[lo:lo + count] = which
    rows[:, -1] &= _last_byte_mask(bits)
    return (rows, centres) if with_centres else rows


def make_codes(distribution, size, queries, bits, centres, flip, seed):
    """(database rows (size, width), query rows (queries, width)) of one distribution (module docstring)."""
    if distribution == "uniform":
        return (uniform_rows(size, bits, rng_for(seed, distribution, "database")),
                uniform_rows(queries, bits, rng_for(seed, distribution, "queries")))
    centre_rows = uniform_rows(centres, bits, rng_for(seed, distribution, "centres"))
    return (clustered_rows(centre_rows, size, bits, flip, rng_for(seed, distribution, "database")),
            clustered_rows(centre_rows, queries, bits, flip, rng_for(seed, distribution, "queries")))
