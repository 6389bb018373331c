"""Turn a list of rows into a training batch: padded, or padding-free (flattened) for varlen kernels.

Features are mappings with ``input_ids`` and optionally ``labels`` / ``attention_mask``, given as
numpy arrays (the zero-copy views of :class:`ShardDataset`), torch tensors or plain lists of ints
(tokenizer output). ``labels`` are unshifted: the label of position ``t`` is the token at ``t``
(the model shifts), and ``IGNORE_INDEX`` (-100) means "no loss here". A row without ``labels`` is
trained on every real token (``labels = input_ids``, -100 only on padding).

Output dtypes: every tensor is ``torch.int64`` except ``cu_seq_lens_q/k`` (``torch.int32``) and
the optional 4D mask; ``max_length_q/k`` are Python ints. The hot path fills preallocated numpy
arrays with slice copies (one per row and column) and wraps them with ``torch.from_numpy``.

Extension point (vision-language, other per-row columns): subclass :class:`Collator` and override
:meth:`Collator.collate_extra`; it receives the features, the batch being built and a
:class:`RowLayout` telling where every row's tokens went, and may add keys (``pixel_values``,
``image_grid_thw``, ...). By default nothing besides the token tensors is passed through.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..shard_format import IGNORE_INDEX, load_manifest

__all__ = ["Batch", "Collator", "CollatorConfig", "RowLayout"]

_MASK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


_RAMP = np.arange(4096, dtype=np.int64)


def _ramp(n: int) -> np.ndarray:
    """A read-only ``arange(>= n)`` int64 shared by all calls (grown on demand)."""
    global _RAMP
    if len(_RAMP) < n:
        _RAMP = np.arange(max(n, 2 * len(_RAMP)), dtype=np.int64)
    return _RAMP


class Batch(dict):
    """A dict of tensors (plus Python ints for ``max_length_q/k``) with device helpers."""

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        """A new Batch with every tensor moved to ``device`` (non-tensors unchanged)."""
        return Batch({k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                      for k, v in self.items()})

    def pin_memory(self) -> "Batch":
        """A new Batch with every CPU tensor in page-locked memory (needs an accelerator)."""
        return Batch({k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class RowLayout(NamedTuple):
    """Where the rows of a batch went (given to :meth:`Collator.collate_extra`).

    Padded mode: row ``i`` occupies ``batch["input_ids"][i, starts[i]:starts[i] + lengths[i]]``.
    Padding-free mode: ``rows`` are the indices of the non-empty features that were kept, and
    feature ``rows[j]`` occupies ``batch["input_ids"][0, starts[j]:starts[j] + lengths[j]]``.
    """

    rows: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    width: int
    padding_free: bool


@dataclass(frozen=True, kw_only=True)
class CollatorConfig:
    """Options of :class:`Collator` (immutable; build variants with ``dataclasses.replace``).

    Attributes:
        pad_token_id: id written to ``input_ids`` padding positions (required in padded mode).
            Padding is decided by position, never by comparing ids: a real token equal to the pad
            id (e.g. EOS used as pad) keeps its label.
        padding_free: flatten the batch into one ``[1, total]`` row for varlen attention kernels.
        padding_side: ``"right"`` or ``"left"`` (padded mode).
        pad_to_multiple_of: round the padded width up to a multiple of this.
        max_length: pad every row to exactly this width (rounded up to ``pad_to_multiple_of``);
            a longer row is an error (padded mode only).
        label_pad_token_id: label on padding positions and, in padding-free mode, on the first
            token of every sequence (default -100).
        return_attention_mask: padded mode: include ``attention_mask`` (1 real, 0 padding).
        return_position_ids: include ``position_ids``.
        return_flash_attn_kwargs: padding-free mode: include ``cu_seq_lens_q/k`` and
            ``max_length_q/k``.
        mask_4d: padding-free mode: also return ``attention_mask`` of shape ``[1, 1, T, T]``:
            block-diagonal (each token attends only inside its own sequence) and causal when
            ``causal``. ``"additive"``: float (``mask_dtype``), 0.0 where attention is allowed and
            ``finfo(mask_dtype).min`` elsewhere: what eager attention adds to the scores (HF passes
            a 4D mask through unchanged, so this is the form ``attn_implementation="eager"``
            needs). ``"bool"``: ``True`` where attention is allowed (for SDPA/flex-style kernels).
            Memory is ``T * T`` elements: for debugging and small batches.
        causal: whether the 4D mask is causal (lower triangular inside each block).
        mask_dtype: dtype name of the additive mask (``float32``, ``bfloat16``, ``float16``, ``float64``).
        pin_memory: pin the batch tensors (ignored when CUDA is not available). Inside DataLoader
            workers prefer ``DataLoader(pin_memory=True)``, which pins in the main process.
    """

    pad_token_id: int | None = None
    padding_free: bool = False
    padding_side: Literal["right", "left"] = "right"
    pad_to_multiple_of: int | None = None
    max_length: int | None = None
    label_pad_token_id: int = IGNORE_INDEX
    return_attention_mask: bool = True
    return_position_ids: bool = True
    return_flash_attn_kwargs: bool = True
    mask_4d: Literal["additive", "bool"] | None = None
    causal: bool = True
    mask_dtype: str = "float32"
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {self.padding_side!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError("pad_to_multiple_of must be >= 1")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be >= 1")
        if self.mask_4d not in (None, "additive", "bool"):
            raise ValueError(f"mask_4d must be None, 'additive' or 'bool', not {self.mask_4d!r}")
        if self.mask_dtype not in _MASK_DTYPES:
            raise ValueError(f"mask_dtype must be one of {sorted(_MASK_DTYPES)}")
        if self.padding_free:
            if self.max_length is not None or self.pad_to_multiple_of is not None:
                raise ValueError("max_length / pad_to_multiple_of apply to padded mode only")
        else:
            if self.pad_token_id is None:
                raise ValueError("padded mode needs pad_token_id (or use Collator.from_manifest)")
            if self.mask_4d is not None:
                raise ValueError("mask_4d is a padding-free option")


class Collator:
    """Collate rows into a :class:`Batch`; picklable, usable as ``DataLoader(collate_fn=...)``
    and as ``Trainer(data_collator=...)``.

    ``Collator(config)`` or ``Collator(**options)`` (options: the fields of :class:`CollatorConfig`,
    keyword-only; ``Collator(config, **options)`` overrides fields of ``config``).

    Padded mode, ``B`` rows padded to width ``T`` (longest row, or ``max_length``, rounded up to
    ``pad_to_multiple_of``); every tensor int64 ``[B, T]``:

    - ``input_ids``: tokens, ``pad_token_id`` on padding;
    - ``attention_mask``: 1 on real tokens, 0 on padding (a feature's own ``attention_mask`` is
      copied, for rows written padded);
    - ``labels``: the row's labels (or ``input_ids``), ``label_pad_token_id`` (-100) on padding;
    - ``position_ids``: 0, 1, 2, ... over each row's real tokens (left padding included), 0 on padding.

    Padding-free mode, the ``n`` non-empty rows concatenated to ``total`` tokens:

    - ``input_ids``, ``labels``, ``position_ids``: int64 ``[1, total]``; positions restart at 0 for
      every sequence; the first label of every sequence is -100 (no prediction across sequences);
    - ``cu_seq_lens_q`` = ``cu_seq_lens_k``: int32 ``[n + 1]`` cumulative lengths starting at 0;
    - ``max_length_q`` = ``max_length_k``: Python int, the longest sequence;
    - no ``attention_mask`` unless ``mask_4d`` is set (then ``[1, 1, total, total]``, see
      :class:`CollatorConfig`). Rows of length 0 are skipped; an all-empty batch is an error.
    """

    def __init__(self, config: CollatorConfig | None = None, /, **options: Any):
        if config is None:
            config = CollatorConfig(**options)
        elif options:
            config = dataclasses.replace(config, **options)
        self.config = config

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "Collator":
        """A collator whose ``pad_token_id`` is the dataset's (``manifest["tokenizer"]``).

        An explicit ``pad_token_id`` option wins. A tokenizer without a pad token falls back to its
        ``eos_token_id``; this is safe because padding is tracked by position (mask and -100 labels).
        """
        manifest = load_manifest(str(path))
        if "pad_token_id" not in options:
            tok = manifest.get("tokenizer") or {}
            pad = tok.get("pad_token_id")
            if pad is None:
                pad = tok.get("eos_token_id")
            options["pad_token_id"] = pad
        return cls(**options)

    # -- entry point --------------------------------------------------------------------------
    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        if self.config.padding_free:
            batch, layout = self._flatten(features)
        else:
            batch, layout = self._pad(features)
        self.collate_extra(features, batch, layout)
        if self.config.pin_memory and torch.cuda.is_available():
            batch = batch.pin_memory()
        return batch

    def collate_extra(self, features: Sequence[Mapping[str, Any]], batch: Batch, layout: RowLayout) -> None:
        """Extension hook: add further keys to ``batch`` in place (default: nothing).

        A vision-language subclass would, for example, concatenate every feature's ``pixel_values``
        and stack ``image_grid_thw`` here; ``layout`` maps rows to token positions.
        """

    # -- padded ---------------------------------------------------------------------------------
    def _pad(self, features: Sequence[Mapping[str, Any]]) -> tuple[Batch, RowLayout]:
        cfg = self.config
        n = len(features)
        ids_list = [f["input_ids"] for f in features]
        lens = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=n)
        longest = int(lens.max())
        width = cfg.max_length if cfg.max_length is not None else longest
        if cfg.pad_to_multiple_of:
            width = -(-width // cfg.pad_to_multiple_of) * cfg.pad_to_multiple_of
        if longest > width:
            row = int(np.argmax(lens))
            raise ValueError(f"row {row} has {longest} tokens, more than max_length={cfg.max_length}")
        left = cfg.padding_side == "left"
        starts = (width - lens) if left else np.zeros(n, dtype=np.int64)

        # One int64 storage holds every output plane: a DataLoader worker then ships one shared
        # memory segment per batch instead of four (about 2.5x more batches/s through workers).
        want_mask = cfg.return_attention_mask or cfg.return_position_ids
        planes = 2 + int(want_mask) + int(cfg.return_position_ids)
        storage = torch.empty((planes, n, width), dtype=torch.int64)
        buf = storage.numpy()
        input_ids, labels = buf[0], buf[1]
        input_ids.fill(cfg.pad_token_id)
        labels.fill(cfg.label_pad_token_id)
        mask = buf[2] if want_mask else None
        pos = buf[3] if cfg.return_position_ids else None
        if want_mask:
            buf[2:].fill(0)
        ramp = _ramp(width) if pos is not None else None
        own_mask = False
        for i, f in enumerate(features):
            s = int(starts[i])
            length = int(lens[i])
            e = s + length
            ids = ids_list[i]
            input_ids[i, s:e] = ids
            lab = f.get("labels")
            labels[i, s:e] = ids if lab is None else lab
            if mask is not None:
                m = f.get("attention_mask")
                if m is None:
                    mask[i, s:e] = 1
                else:
                    mask[i, s:e] = m
                    own_mask = True
            if pos is not None:
                pos[i, s:e] = ramp[:length]
        if own_mask and pos is not None:  # rows carry their own padding: count real tokens only
            np.cumsum(mask, axis=1, out=pos)
            pos -= 1
            pos *= mask
        batch = Batch(input_ids=storage[0])
        if cfg.return_attention_mask:
            batch["attention_mask"] = storage[2]
        batch["labels"] = storage[1]
        if pos is not None:
            batch["position_ids"] = storage[3]
        return batch, RowLayout(np.arange(n), starts, lens, width, False)

    # -- padding-free ---------------------------------------------------------------------------
    def _flatten(self, features: Sequence[Mapping[str, Any]]) -> tuple[Batch, RowLayout]:
        cfg = self.config
        ids_list, lab_list, rows = [], [], []
        for i, f in enumerate(features):
            ids = f["input_ids"]
            if len(ids) == 0:
                continue
            lab = f.get("labels")
            m = f.get("attention_mask")
            if m is not None:  # rows written padded: keep the real tokens only
                keep = np.asarray(m).astype(bool)
                if not keep.all():
                    ids = np.asarray(ids)[keep]
                    lab = None if lab is None else np.asarray(lab)[keep]
                    if len(ids) == 0:
                        continue
            ids_list.append(ids)
            lab_list.append(ids if lab is None else lab)
            rows.append(i)
        if not ids_list:
            raise ValueError("every row of the batch is empty")
        n = len(ids_list)
        lens = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=n)
        cu = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lens, out=cu[1:])
        total = int(cu[-1])
        starts = cu[:-1].astype(np.int64)

        planes = 3 if cfg.return_position_ids else 2  # one storage for all int64 outputs (see _pad)
        storage = torch.empty((planes, 1, total), dtype=torch.int64)
        buf = storage.numpy()
        np.concatenate(ids_list, out=buf[0, 0], casting="same_kind")
        np.concatenate(lab_list, out=buf[1, 0], casting="same_kind")
        buf[1, 0, starts] = cfg.label_pad_token_id

        batch = Batch(input_ids=storage[0], labels=storage[1])
        if cfg.return_position_ids:  # 0, 1, 2, ... restarting at every sequence
            np.subtract(_ramp(total)[:total], np.repeat(starts, lens), out=buf[2, 0])
            batch["position_ids"] = storage[2]
        if cfg.return_flash_attn_kwargs:
            cu_t = torch.from_numpy(np.stack([cu, cu]))  # q and k share one storage
            batch["cu_seq_lens_q"] = cu_t[0]
            batch["cu_seq_lens_k"] = cu_t[1]
            longest = int(lens.max())
            batch["max_length_q"] = longest
            batch["max_length_k"] = longest
        if cfg.mask_4d is not None:
            batch["attention_mask"] = self._block_mask(lens)
        return batch, RowLayout(np.asarray(rows, dtype=np.int64), starts, lens, total, True)

    def _block_mask(self, lens: np.ndarray) -> torch.Tensor:
        cfg = self.config
        seq = torch.from_numpy(np.repeat(np.arange(len(lens)), lens))
        allowed = seq[:, None] == seq[None, :]
        if cfg.causal:
            allowed &= torch.ones(len(seq), len(seq), dtype=torch.bool).tril_()
        if cfg.mask_4d == "bool":
            out = allowed
        else:
            dtype = _MASK_DTYPES[cfg.mask_dtype]
            out = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return out[None, None]

    def __repr__(self) -> str:
        return f"Collator({self.config!r})"
