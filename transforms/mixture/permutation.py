"""A keyed pseudo-random permutation of ``range(n)``, computed one position at a time.

:class:`KeyedPermutation` is a bijection ``range(n) -> range(n)`` chosen by a key (bytes): a four-round
Feistel network on the smallest even number of bits that covers ``n``, with cycle walking (a value that
lands outside ``range(n)`` is permuted again until it lands inside; at most 4 tries on average). A
position's image depends only on ``(key, n, position)``: never on which other positions are asked for, in
which order or in which process. The mixture (:mod:`transforms.mixture.selection`) uses it to pick exactly
``k`` of a dataset's ``n`` records ("those whose image is below ``k``"), uniformly, without holding or
sorting anything.

The round function is a splitmix64-style mixer of the right half xor a per-round key (from blake2b of the
key), evaluated on numpy ``uint64`` arrays (a whole batch of positions at once).
"""
from __future__ import annotations

import hashlib

import numpy as np

ROUNDS = 4
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64 in, uint64 out; multiplications wrap)."""
    z = values
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class KeyedPermutation:
    """A bijection of ``range(n)`` chosen by ``key`` (see the module docstring).

    ``perm(positions)`` maps an int64 array of positions (each in ``range(n)``) to their images;
    ``perm.one(i)`` maps one position.
    """

    __slots__ = ("n", "half", "mask", "round_keys")

    def __init__(self, n: int, key: bytes):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n!r}")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        if self.half > 31:
            raise ValueError(f"n={n} is too large for this permutation (at most 2**62)")
        self.mask = np.uint64((1 << self.half) - 1)
        self.round_keys = tuple(
            np.uint64(int.from_bytes(hashlib.blake2b(key + bytes([r]), digest_size=8).digest(), "little"))
            for r in range(ROUNDS))

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        half, mask = np.uint64(self.half), self.mask
        left, right = x >> half, x & mask
        with np.errstate(over="ignore"):
            for round_key in self.round_keys:
                left, right = right, left ^ (_mix(right ^ round_key) & mask)
        return (left << half) | right

    def __call__(self, positions) -> np.ndarray:
        x = np.asarray(positions, dtype=np.int64)
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.n):
            raise ValueError(f"positions must be in range({self.n})")
        y = self._feistel(x.astype(np.uint64))
        outside = y >= np.uint64(self.n)
        while outside.any():  # cycle walking: a bijection of the larger domain restricted to range(n)
            y[outside] = self._feistel(y[outside])
            outside = y >= np.uint64(self.n)
        return y.astype(np.int64)

    def one(self, position: int) -> int:
        return int(self(np.array([position], dtype=np.int64))[0])
