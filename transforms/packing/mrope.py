"""Qwen-VL multimodal RoPE positions of one sequence, as the model's ``get_rope_index`` computes them
(numpy only; no ``transformers`` import).

Qwen2-VL and Qwen2.5-VL give every token three position ids (temporal, height, width). For one
sequence, ``transformers``' ``Qwen2VLModel.get_rope_index`` walks its runs of text and image tokens
with a running position ``p`` (starting at 0):

* a run of ``n`` text tokens gets ``p, p+1, ..., p+n-1`` on all three planes; ``p += n``;
* a run of image tokens (``<|image_pad|>``) of an image whose grid is ``(t, h, w)`` patches gets, on
  the ``t x (h/m) x (w/m)`` merged grid (``m``: the spatial merge size) in row-major order, the
  temporal index + ``p``, the row + ``p`` and the column + ``p``; then ``p += max(h, w) // m``.

The ``<|vision_start|>``/``<|vision_end|>`` tokens around an image are text. A packed row stores the
concatenation of its sequences' positions, each computed for the sequence alone (so a packed batch
gives every sequence the positions it would have by itself): :func:`packed_mrope_positions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class MropeSpec:
    """What the positions need from the processor configuration: the image token id and the merge size."""

    image_token_id: int
    merge_size: int


def sequence_mrope_positions(input_ids: np.ndarray, grids: np.ndarray, spec: MropeSpec) -> np.ndarray:
    """int32 ``[3, len(input_ids)]``: the positions of one sequence (see the module docstring).

    ``grids``: int ``[k, 3]``, the ``(t, h, w)`` grid of each image of the sequence in token order.

    Raises:
        ValueError: the image-token runs and the grids disagree (count, or tokens per image).
    """
    ids = np.asarray(input_ids)
    grids = np.asarray(grids, dtype=np.int64).reshape(-1, 3)
    length = len(ids)
    out = np.empty((3, length), dtype=np.int64)
    is_image = ids == spec.image_token_id
    edges = np.flatnonzero(np.diff(is_image.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), length] if length else [0]
    m = spec.merge_size
    position = 0
    image = 0
    for start, end in zip(bounds[:-1], bounds[1:]):
        if not is_image[start]:
            out[:, start:end] = np.arange(position, position + end - start)
            position += end - start
            continue
        if image >= len(grids):
            raise ValueError(f"image tokens at {start}..{end} but only {len(grids)} image grid(s)")
        t, h, w = (int(x) for x in grids[image])
        gh, gw = h // m, w // m
        if t * gh * gw != end - start:
            raise ValueError(f"image {image}: {end - start} image tokens, its grid {(t, h, w)} makes {t * gh * gw}")
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
        out[0, start:end] = tt.reshape(-1) + position
        out[1, start:end] = hh.reshape(-1) + position
        out[2, start:end] = ww.reshape(-1) + position
        position += max(h, w) // m
        image += 1
    if image != len(grids):
        raise ValueError(f"{len(grids)} image grid(s) but {image} runs of image tokens")
    return out.astype(np.int32)


def packed_mrope_positions(input_ids: np.ndarray, seq_lengths: Sequence[int], grids: np.ndarray,
                           images_per_sequence: Sequence[int], spec: MropeSpec) -> np.ndarray:
    """int32 ``[3, sum(seq_lengths)]``: every sequence's own positions, concatenated.

    ``grids`` holds the ``(t, h, w)`` of every image of the packed row in token order, and
    ``images_per_sequence`` how many of them each sequence holds."""
    grids = np.asarray(grids, dtype=np.int64).reshape(-1, 3)
    parts = []
    start = image = 0
    for length, count in zip(seq_lengths, images_per_sequence):
        parts.append(sequence_mrope_positions(input_ids[start:start + length], grids[image:image + count], spec))
        start += length
        image += count
    return np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.int32)
