"""Collation of image rows: :class:`VisionCollator` adds ``pixel_values`` (and ``image_grid_thw``).

Imports numpy, torch and Pillow only (no ``transformers``): the shard already holds every image
resized exactly as the processor resizes it, so the collator decodes the stored bytes (``PNG`` by
default; nothing to decode with ``--store-pixels``), normalises through a lookup table with the
processor's arithmetic (bit-identical values) and, for Qwen-VL, flattens into patches::

    from transforms.runtime import ShardDataset
    from transforms.runtime.vision import VisionCollator, vision_columns

    ds = ShardDataset("out/", columns=vision_columns("out/"))
    collator = VisionCollator.from_manifest("out/")          # pad id + processor config from the manifest
    loader = DataLoader(ds, batch_size=8, collate_fn=collator, num_workers=2)   # decoding runs in workers

Batch keys added (only when the batch holds at least one image; text-only rows and image rows mix):

* fixed family (LLaVA): ``pixel_values`` float32 ``[num_images, 3, H, W]``;
* dynamic family (Qwen-VL): ``pixel_values`` float32 ``[sum(t*h*w), 3*T*p*p]`` and
  ``image_grid_thw`` int64 ``[num_images, 3]``; also ``mm_token_type_ids`` int64 ``[B, T]`` (1 on
  image tokens, what the processor returns and what Qwen-VL models need to build their 3-D
  M-RoPE positions) on every batch, and **no** ``position_ids`` (1-D positions would override the
  model's M-RoPE) for padded batches of unpacked rows. Packed rows (``--pack-length``) get
  ``position_ids`` int64 ``[3, B, T]``: every sequence's own 3-D positions (the shard's
  ``mrope_position_ids``, computed as the model's ``get_rope_index`` does for the sequence alone),
  with the block-diagonal 4D mask. Padding-free batches (packed rows or not) get ``[4, 1, total]``:
  the 1-D positions restarting per sequence, then the three M-RoPE planes (the layout transformers'
  Qwen-VL models read to find packed sequences without a mask);

with images in row order, then in token order inside a row: the order in which the model
scatters image features into the image-token positions of ``input_ids`` (padded or padding-free).
Every row's image-token count is checked against its stored images (a mismatch raises
``ValueError`` naming the row), so a row can never reach the model with features and tokens
that disagree.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..images import decode_stored
from ..packing.mrope import MropeSpec, sequence_mrope_positions
from ..packing.rows import MROPE_POSITION_IDS, SEQ_LENGTHS
from ..shard_format import load_manifest
from ..vision.config import DYNAMIC, VisionConfig
from ..vision.pixels import normalisation_table, pixel_values
from ..vision.tokens import grid_thw
from .collate import Batch, Collator, RowLayout, manifest_options

__all__ = ["VisionCollator", "vision_columns", "IMAGE_COLUMNS"]

IMAGE_COLUMNS = ("image_index", "image_hw", "image_token_counts", "image_sha256")


def vision_columns(path: str) -> tuple[str, ...]:
    """The :class:`ShardDataset` columns a :class:`VisionCollator` needs for the dataset at ``path``."""
    manifest = load_manifest(str(path))
    section = manifest.get("vision")
    if not section:
        raise ValueError(f"{path} is not a vision dataset (its manifest has no 'vision' section)")
    payload = "image_pixels" if section.get("images", {}).get("store_pixels") else "image_bytes"
    names = set(manifest.get("columns") or ())
    base = ("input_ids", "labels") + (("attention_mask",) if "attention_mask" in names else ())
    packed = tuple(name for name in (SEQ_LENGTHS, MROPE_POSITION_IDS) if name in names)
    return base + packed + (payload,) + IMAGE_COLUMNS


def _float_buffer(shape, holder: list) -> np.ndarray:
    """A float32 buffer for ``pixel_values``: in a DataLoader worker it lives in shared memory from
    the start (what ``default_collate`` does), so sending the batch to the main process moves a
    handle instead of copying megabytes of pixels once more."""
    numel = int(np.prod(shape))
    if torch.utils.data.get_worker_info() is not None:
        storage = torch.empty(0, dtype=torch.float32).untyped_storage()._new_shared(numel * 4)
        tensor = torch.empty(0, dtype=torch.float32).set_(storage).view(*shape)
    else:
        tensor = torch.empty(shape, dtype=torch.float32)
    holder.append(tensor)
    return tensor.numpy()


class VisionCollator(Collator):
    """A :class:`Collator` that also returns the images of the batch, normalised as the processor would.

    Args:
        config / options: as :class:`Collator`.
        vision: the processor configuration: a :class:`transforms.vision.config.VisionConfig` or the
            manifest's ``vision["config"]`` mapping.
        check_image_tokens: verify every row's image-token count against its images (cheap).
    """

    def __init__(self, config=None, /, *, vision: VisionConfig | Mapping[str, Any], check_image_tokens: bool = True,
                 **options: Any):
        super().__init__(config, **options)
        self.vision = vision if isinstance(vision, VisionConfig) else VisionConfig.from_json(vision)
        self.mrope = MropeSpec(self.vision.image_token_id, self.vision.merge_size)
        self.check_image_tokens = check_image_tokens
        self._table = normalisation_table(self.vision)

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "VisionCollator":
        """A collator with the dataset's pad id, vocabulary size and processor configuration."""
        manifest = load_manifest(str(path))
        section = manifest.get("vision")
        if not section:
            raise ValueError(f"{path} is not a vision dataset (its manifest has no 'vision' section)")
        return cls(vision=section["config"], **manifest_options(manifest, options))

    # -- images ---------------------------------------------------------------------------------
    def row_images(self, feature: Mapping[str, Any]) -> list[np.ndarray]:
        """The uint8 ``[H, W, 3]`` images of one row, in token order (decoded once per distinct image)."""
        index = feature.get("image_index")
        if index is None or len(index) == 0:
            return []
        raw = "image_pixels" in feature and feature["image_pixels"] is not None
        payloads = feature["image_pixels"] if raw else feature.get("image_bytes")
        if payloads is None:
            raise ValueError("row has image_index but neither image_bytes nor image_pixels "
                             "(open the dataset with columns=vision_columns(path))")
        hw = np.asarray(feature.get("image_hw", ()), dtype=np.int64).reshape(-1, 2)
        decoded: dict[int, np.ndarray] = {}
        images = []
        for occurrence, j in enumerate(np.asarray(index).tolist()):
            image = decoded.get(j)
            if image is None:
                image = decode_stored(payloads[j], tuple(hw[occurrence]) if len(hw) else None, raw=raw)
                decoded[j] = image
            images.append(image)
        return images

    def _check(self, feature: Mapping[str, Any], row: int) -> None:
        ids = np.asarray(feature["input_ids"])
        found = int(np.count_nonzero(ids == self.vision.image_token_id))
        counts = feature.get("image_token_counts")
        expected = int(np.asarray(counts).sum()) if counts is not None else 0
        if found != expected:
            raise ValueError(
                f"row {row}: {found} image tokens ({self.vision.image_token}) in input_ids but its images "
                f"account for {expected}; pass the image columns (columns=vision_columns(path)) and do not "
                "truncate rows after the job"
            )

    def collate_extra(self, features: Sequence[Mapping[str, Any]], batch: Batch, layout: RowLayout) -> None:
        images: list[np.ndarray] = []
        for row in np.asarray(layout.rows).tolist():
            feature = features[row]
            if self.check_image_tokens:
                self._check(feature, row)
            images.extend(self.row_images(feature))
        if self.vision.family == DYNAMIC:
            batch["mm_token_type_ids"] = (batch["input_ids"] == self.vision.image_token_id).long()
            text_positions = batch.pop("position_ids", None)  # unpacked padded rows: the model derives them
            if self.config.padding_free:
                planes = self._mrope_planes(features, layout)
                text = text_positions if text_positions is not None else torch.zeros_like(planes[:1])
                batch["position_ids"] = torch.cat([text.reshape(1, 1, -1), planes], dim=0)
            elif self.config.packed:
                batch["position_ids"] = self._mrope_planes(features, layout)
        if not images:
            return
        holder: list[torch.Tensor] = []
        out = pixel_values(self.vision, images, self._table, alloc=lambda shape: _float_buffer(shape, holder))
        batch["pixel_values"] = holder[0] if holder else torch.from_numpy(out["pixel_values"])
        if self.vision.family == DYNAMIC:
            batch["image_grid_thw"] = torch.from_numpy(out["image_grid_thw"])

    def row_mrope(self, feature: Mapping[str, Any], row: int) -> np.ndarray:
        """int64 ``[3, L]``: a row's M-RoPE positions: the shard's ``mrope_position_ids`` (packed rows), else
        computed for the row as one sequence (:func:`transforms.packing.mrope.sequence_mrope_positions`)."""
        ids = np.asarray(feature["input_ids"])
        stored = feature.get(MROPE_POSITION_IDS)
        if stored is not None:
            planes = np.asarray(stored, dtype=np.int64)
            if planes.size != 3 * len(ids):
                raise ValueError(f"row {row}: mrope_position_ids has {planes.size} values, expected 3 x {len(ids)}")
            return planes.reshape(3, len(ids))
        if self.config.packed:
            raise ValueError(f"row {row}: a packed Qwen-VL row needs its mrope_position_ids "
                             "(open the dataset with columns=vision_columns(path))")
        hw = np.asarray(feature.get("image_hw", ()), dtype=np.int64).reshape(-1, 2)
        grids = np.asarray([grid_thw(self.vision, int(h), int(w)) for h, w in hw], dtype=np.int64).reshape(-1, 3)
        return sequence_mrope_positions(ids, grids, self.mrope).astype(np.int64)

    def _mrope_planes(self, features: Sequence[Mapping[str, Any]], layout: RowLayout) -> torch.Tensor:
        """int64 ``[3, B, width]`` (padded; 0 on padding) or ``[3, 1, total]`` (padding-free) M-RoPE positions."""
        rows = np.asarray(layout.rows).tolist()
        if layout.padding_free:
            out = np.zeros((3, 1, layout.width), dtype=np.int64)
            for j, row in enumerate(rows):
                s, n = int(layout.starts[j]), int(layout.lengths[j])
                out[:, 0, s:s + n] = self.row_mrope(features[row], row)
        else:
            out = np.zeros((3, len(rows), layout.width), dtype=np.int64)
            for j, row in enumerate(rows):
                s, n = int(layout.starts[j]), int(layout.lengths[j])
                out[:, j, s:s + n] = self.row_mrope(features[row], row)
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"VisionCollator({self.config!r}, family={self.vision.family!r})"
