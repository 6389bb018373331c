"""Runtime-side pixel math: rescale + normalise through a lookup table, and Qwen-VL patchify.

Imports numpy only (the runtime's collator uses it)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from transforms.vision.config import FIXED, VisionConfig
from transforms.vision.tokens import grid_thw


def normalisation_table(config: VisionConfig) -> np.ndarray:
    """float32 ``[3, 256]``: the processor's rescale + normalise of every uint8 value, per channel."""
    values = np.arange(256, dtype=np.float64)
    if config.do_rescale:
        values = values * config.rescale_factor
    values = values.astype(np.float32)
    table = np.stack([values] * 3)
    if config.do_normalize:
        mean = np.asarray(config.image_mean, dtype=np.float32)
        std = np.asarray(config.image_std, dtype=np.float32)
        table = (table - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def _normalise_chw(array: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` through the lookup table."""
    height, width = array.shape[:2]
    if out is None:
        out = np.empty((3, height, width), dtype=np.float32)
    for c in range(3):
        np.take(table[c], array[:, :, c], out=out[c])
    return out


def patch_dim(config: VisionConfig) -> int:
    return 3 * config.temporal_patch_size * config.patch_size * config.patch_size


def patchify_into(config: VisionConfig, chw: np.ndarray, out: np.ndarray) -> None:
    """Qwen-VL's flattening of one normalised ``[3, H, W]`` image into ``out[(gh*gw), C*T*p*p]``."""
    c, height, width = chw.shape
    p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
    gh, gw = height // p, width // p
    patches = chw.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    view = out.reshape(gh // m, gw // m, m, m, c, t, p, p)
    view[...] = patches[:, :, :, :, :, None, :, :]


def pixel_values(config: VisionConfig, images: Sequence[np.ndarray], table: np.ndarray | None = None,
                 alloc=None) -> dict[str, np.ndarray]:
    """What the processor returns for already-resized uint8 images, as numpy arrays.

    ``fixed``: ``pixel_values`` float32 ``[n, 3, H, W]`` (all images share the crop size).
    ``dynamic``: ``pixel_values`` float32 ``[sum(gh*gw), 3*T*p*p]`` and ``image_grid_thw``
    int64 ``[n, 3]``.

    ``alloc(shape) -> float32 array`` provides the output buffer (e.g. shared memory in a
    DataLoader worker, so the batch is not copied again when sent to the main process).
    """
    table = normalisation_table(config) if table is None else table
    alloc = alloc or (lambda shape: np.empty(shape, dtype=np.float32))
    if config.family == FIXED:
        if not images:
            return {"pixel_values": np.zeros((0, 3, 0, 0), dtype=np.float32)}
        shapes = {img.shape for img in images}
        if len(shapes) != 1:
            raise ValueError(f"fixed-size family images differ in size: {sorted(shapes)}")
        height, width = images[0].shape[:2]
        out = alloc((len(images), 3, height, width))
        for i, img in enumerate(images):
            _normalise_chw(img, table, out[i])
        return {"pixel_values": out}
    grids = np.zeros((len(images), 3), dtype=np.int64)
    counts = []
    for i, img in enumerate(images):
        grids[i] = grid_thw(config, *img.shape[:2])
        counts.append(int(grids[i, 1] * grids[i, 2]))
    out = alloc((sum(counts), patch_dim(config)))
    start = 0
    for img, n in zip(images, counts):
        patchify_into(config, _normalise_chw(img, table), out[start:start + n])
        start += n
    return {"pixel_values": out, "image_grid_thw": grids}
