"""Turn a list of rows into a training batch: padded, or padding-free (flattened) for varlen kernels.

Features are mappings with ``input_ids`` and optionally ``labels`` / ``attention_mask``, given as
numpy arrays (the zero-copy views of :class:`ShardDataset`), torch tensors or plain lists of ints
(tokenizer output). ``labels`` are unshifted: the label of position ``t`` is the token at ``t``
(the model shifts), and ``IGNORE_INDEX`` (-100) means "no loss here". A row without ``labels`` is
trained on every real token (``labels = input_ids``, -100 only on padding).

Malformed features raise ``ValueError`` naming the row (its position in the batch) and the problem,
before any tensor is returned: a missing ``input_ids``, a feature that is not a mapping, values that
are not integers (floats, strings, ``None``, ids beyond int64), ``labels`` or ``attention_mask`` of
another length than ``input_ids``, negative ids, ids beyond int32 (or ``>= vocab_size`` when known,
e.g. from the manifest), labels that are neither a token id nor -100, a mask value other than 0/1.
Structure is checked per row (a few attribute reads); values are checked on the whole batch at once
with numpy reductions, and only a failing batch is scanned row by row to name the culprit.

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
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..shard_format import IGNORE_INDEX, load_manifest
from . import heads, value_summaries
from . import packed as packing

__all__ = ["Batch", "Collator", "CollatorConfig", "RowLayout"]

_MASK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "float64": torch.float64}


_RAMP = np.arange(4096, dtype=np.int64)
INT32_MAX = 2**31 - 1
_INT_KINDS = "iu"
_MASK_KINDS = "biu"


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
            ``causal``. Padded mode of packed rows (``packed``): ``[B, 1, T, T]``, the same per row
            (padding is a block of its own). ``"additive"``: float (``mask_dtype``), 0.0 where attention is allowed and
            ``finfo(mask_dtype).min`` elsewhere: what eager attention adds to the scores (HF passes
            a 4D mask through unchanged, so this is the form ``attn_implementation="eager"``
            needs). ``"bool"``: ``True`` where attention is allowed (for SDPA/flex-style kernels).
            Memory is ``T * T`` elements: for debugging and small batches.
        causal: whether the 4D mask is causal (lower triangular inside each block).
        mask_dtype: dtype name of the additive mask (``float32``, ``bfloat16``, ``float16``, ``float64``).
        pin_memory: pin the batch tensors (ignored when CUDA is not available). Inside DataLoader
            workers prefer ``DataLoader(pin_memory=True)``, which pins in the main process.
        vocab_size: when set, token ids (and labels other than -100) must be below it
            (``from_manifest`` takes it from the manifest's tokenizer); otherwise they must fit int32.
        check_values: check the values of every batch (negative ids, ids out of range, labels that
            are neither ids nor -100, mask values). Costs a few numpy reductions over the batch's
            tokens; row structure (keys, integer types, lengths) is always checked.
        packed: the rows are packed rows (``--pack-length``; :mod:`transforms.runtime.packed`): every
            feature carries ``seq_lengths``; ``position_ids`` restart at 0 at every sequence and
            attention stays inside each sequence. Padded mode needs ``mask_4d`` (a 2D mask would let
            sequences attend to each other: refused; ``"bool"`` is honoured by SDPA only: warned);
            padding-free mode gives one ``cu_seq_lens`` entry per *sequence*. ``from_manifest`` sets it
            (with ``max_length`` = the pack length and ``mask_4d="additive"`` in padded mode) for a
            packed folder. A collator without it refuses rows holding several sequences.
        padding_free_no_cache: padding-free batches of packed rows carry ``use_cache=False``: without a
            cache transformers derives the block-diagonal mask from the reset ``position_ids`` for eager
            and SDPA attention; with one (``use_cache=True``, a model's default in ``train()`` mode
            outside TRL) they attend across sequences (measured; see ``docs/packing.md``).
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
    vocab_size: int | None = None
    check_values: bool = True
    packed: bool = False
    padding_free_no_cache: bool = True

    def __post_init__(self) -> None:
        if self.vocab_size is not None and (isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int)
                                            or not 1 <= self.vocab_size <= INT32_MAX + 1):
            raise ValueError(f"vocab_size must be an int in [1, 2**31], not {self.vocab_size!r}")
        if self.pad_token_id is not None:
            if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) \
                    or not 0 <= self.pad_token_id <= self.max_token_id:
                raise ValueError(f"pad_token_id must be a token id in [0, {self.max_token_id}], "
                                 f"not {self.pad_token_id!r}")
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
            if self.mask_4d is not None and not self.packed:
                raise ValueError("mask_4d is a padding-free option (or an option of packed rows)")
        if self.packed:
            self._check_packed()

    def _check_packed(self) -> None:
        """Refuse (or warn about) packed-row configurations that let sequences attend to each other."""
        if self.padding_free:
            if not (self.return_position_ids or self.return_flash_attn_kwargs or self.mask_4d is not None):
                raise ValueError("padding-free packed batches without position_ids, cu_seq_lens and a 4D mask give "
                                 "the model no sequence boundaries: attention would cross packed sequences")
            return
        if self.padding_side != "right":
            raise ValueError("packed rows are padded on the right (padding_side='right')")
        if self.mask_4d is None:
            raise ValueError(
                "packed rows in padded mode need mask_4d='additive' (a block-diagonal [B, 1, L, L] mask): a 2D "
                "attention mask, or none, lets every sequence of a packed row attend to the ones before it "
                "(reset position_ids do not prevent it); or use padding_free=True with a varlen kernel. "
                "Collator.from_manifest(path) sets this up; see docs/packing.md")
        if self.mask_4d == "bool":
            warnings.warn(
                "mask_4d='bool' over packed rows is honoured by SDPA attention only: eager attention adds the "
                "boolean mask to the scores and attends across packed sequences; use mask_4d='additive' unless the "
                "model runs attn_implementation='sdpa'", UserWarning, stacklevel=3)

    @property
    def max_token_id(self) -> int:
        """The largest valid token id: ``vocab_size - 1``, or the int32 maximum without a vocabulary."""
        return INT32_MAX if self.vocab_size is None else self.vocab_size - 1


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

    Packed rows (``packed=True``, set by ``from_manifest`` on a packed folder; see ``docs/packing.md``):
    padded mode gives ``[B, pack_length]`` tensors, ``position_ids`` restarting at every sequence and
    ``attention_mask`` ``[B, 1, pack_length, pack_length]`` (block-diagonal, causal; additive float by
    default); padding-free mode splits every row into its sequences (``cu_seq_lens_q/k``, ``max_length_q/k``
    per sequence) and adds ``use_cache=False``.
    """

    def __init__(self, config: CollatorConfig | None = None, /, **options: Any):
        if config is None:
            config = CollatorConfig(**options)
        elif options:
            config = dataclasses.replace(config, **options)
        self.config = config

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "Collator":
        """A collator whose ``pad_token_id`` and ``vocab_size`` are the dataset's (``manifest["tokenizer"]``).

        Explicit ``pad_token_id`` / ``vocab_size`` options win. A tokenizer without a pad token falls back to its
        ``eos_token_id``; this is safe because padding is tracked by position (mask and -100 labels).

        A dataset of a task other than chat (``manifest["task"]``) gets its task's collator
        (:mod:`transforms.runtime.heads`): :class:`Collator` for ``text``, ``Seq2SeqCollator`` for ``seq2seq``,
        ``MaskingCollator`` for ``mlm``, ... with the same options.
        """
        manifest = load_manifest(str(path))
        if heads.task_section(manifest) is not None:
            return heads.collator_for(manifest, options)
        return cls(**manifest_options(manifest, options))

    # -- entry point --------------------------------------------------------------------------
    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        if self.config.packed:
            sequences = packing.sequence_lengths(features)
        else:
            packing.refuse_packed_features(features)
        if self.config.padding_free:
            batch, layout = self._flatten(features)
        else:
            batch, layout = self._pad(features)
        if self.config.packed:
            self._packed_batch(batch, layout, sequences)
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
    def _rows(self, features: Sequence[Mapping[str, Any]]) -> tuple[list, list, list | None]:
        """Every row's ``input_ids``, ``labels`` (``input_ids`` when absent) and ``attention_mask``
        (``None`` when no row has one), as given, after checking the keys and that the lengths agree.

        The hot path: a few lookups per row. Element types are checked batch-wide by
        :meth:`_check_values`; anything unusual goes through :meth:`_rows_strict`, which names the row."""
        ids_list, lab_list, mask_list = [], [], None
        ndarray, asarray = np.ndarray, np.asarray
        try:
            for i, f in enumerate(features):
                ids = f["input_ids"]
                if type(ids) is not ndarray:  # lists, tensors: converted once (element types checked later)
                    ids = asarray(ids)
                size = len(ids)  # a scalar or None fails here
                lab = f.get("labels")
                if lab is None:
                    lab = ids
                elif type(lab) is not ndarray:
                    lab = asarray(lab)
                if len(lab) != size:
                    raise ValueError(f"row {i}: labels has {len(lab)} values but input_ids has {size}")
                m = f.get("attention_mask")
                if m is not None or mask_list is not None:
                    if mask_list is None:
                        mask_list = [None] * i
                    mask_list.append(m)
                ids_list.append(ids)
                lab_list.append(lab)
        except ValueError:
            raise
        except Exception:  # noqa: BLE001 - a missing key, a scalar, an odd type: name the row
            self._rows_strict(features)
            raise
        if mask_list is not None:  # rows written padded (rare): check them one by one
            return self._rows_strict(features)
        return ids_list, lab_list, mask_list

    def _rows_strict(self, features: Sequence[Mapping[str, Any]]) -> tuple[list, list, list | None]:
        """:meth:`_rows` with every column converted to a 1-D integer numpy array (bool allowed for
        masks); raises ``ValueError`` naming the first malformed row."""
        ids_list, lab_list, mask_list = [], [], None
        for i, f in enumerate(features):
            try:
                ids = f["input_ids"]
                get = f.get
            except (KeyError, TypeError, IndexError, AttributeError):
                raise _missing_ids(f, i) from None
            ids = _as_row_array(ids, i, "input_ids", _INT_KINDS)
            lab = get("labels")
            if lab is None:
                lab = ids
            else:
                lab = _as_row_array(lab, i, "labels", _INT_KINDS)
                if len(lab) != len(ids):
                    raise ValueError(f"row {i}: labels has {len(lab)} values but input_ids has {len(ids)}")
            m = get("attention_mask")
            if m is not None:
                m = _as_row_array(m, i, "attention_mask", _MASK_KINDS)
                if len(m) != len(ids):
                    raise ValueError(f"row {i}: attention_mask has {len(m)} values but input_ids has {len(ids)}")
                if mask_list is None:
                    mask_list = [None] * i
            if mask_list is not None:
                mask_list.append(m)
            ids_list.append(ids)
            lab_list.append(lab)
        return ids_list, lab_list, mask_list

    def _check_values(self, features: Sequence[Mapping[str, Any]], ids_list: list, lab_list: list,
                      mask_list: list | None, flat_ids: np.ndarray | None = None,
                      flat_labels: np.ndarray | None = None, rows: Sequence[int] | None = None) -> None:
        """Check element types and token values of the whole batch at once (one concatenation and a
        few reductions); on failure, find and name the first bad row.

        ``flat_ids`` / ``flat_labels``: the rows already concatenated (padding-free mode), else built
        here. ``rows``: the feature index of every entry of the lists (default: their positions)."""
        if not self.config.check_values:
            return
        limit = self.config.max_token_id
        same = all(a is b for a, b in zip(lab_list, ids_list))
        if mask_list is None and self._summaries_ok(ids_list, None if same else lab_list):
            return
        try:
            if flat_ids is not None:
                ids, labels = flat_ids, (flat_ids if same else flat_labels)
            elif same:
                ids = labels = np.concatenate(ids_list)
            else:  # one call for both (numpy's per-call cost is a good part of this check)
                both = np.concatenate(ids_list + lab_list)
                half = len(both) // 2  # labels has the length of input_ids in every row (checked)
                ids, labels = both[:half], both[half:]
            shaped = ids.ndim == 1 and labels.ndim == 1 and ids.dtype.kind in _INT_KINDS \
                and labels.dtype.kind in _INT_KINDS
        except (ValueError, TypeError):
            shaped = False
        if shaped and _ids_ok(ids, limit) and (same or _labels_ok(labels, limit, self._ignore_ids)) \
                and (mask_list is None or _mask_ok(mask_list)):
            value_summaries.credit(ids_list)
            if not same:
                value_summaries.credit(lab_list)
            return
        # slow path: the strict pass names a row with bad element types or shapes, the scan a bad value
        ids_list, lab_list, mask_list = self._rows_strict(features)
        if rows is not None:
            ids_list = [ids_list[r] for r in rows]
            lab_list = [lab_list[r] for r in rows]
            mask_list = None if mask_list is None else [mask_list[r] for r in rows]
        _scan_rows(ids_list, lab_list, mask_list, limit, self._ignore_ids, self.config.vocab_size, rows)

    def _summaries_ok(self, ids_list: list, lab_list: list | None) -> bool:
        """Every row is a slice of a :class:`ShardDataset` column whose summary shows valid values
        (see :mod:`transforms.runtime.value_summaries`): the batch needs no pass over its tokens."""
        limit = self.config.max_token_id
        columns = value_summaries.summaries(ids_list)
        if columns is None:
            return False
        for column in columns:
            if not column.ids_ok(limit):
                return False
        if lab_list is None:
            return True
        columns = value_summaries.summaries(lab_list)
        if columns is None:
            return False
        ignore = self._ignore_ids
        for column in columns:
            if not column.labels_ok(limit, ignore):
                return False
        return True

    @property
    def _ignore_ids(self) -> tuple[int, ...]:
        """Negative label values that mean "no loss" in the features: -100 and a negative ``label_pad_token_id``."""
        return tuple(sorted(v for v in {IGNORE_INDEX, self.config.label_pad_token_id} if v < 0))

    def _pad(self, features: Sequence[Mapping[str, Any]]) -> tuple[Batch, RowLayout]:
        cfg = self.config
        n = len(features)
        ids_list, lab_list, mask_list = self._rows(features)
        self._check_values(features, ids_list, lab_list, mask_list)
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
        for i in range(n):
            s = int(starts[i])
            length = int(lens[i])
            e = s + length
            input_ids[i, s:e] = ids_list[i]
            labels[i, s:e] = lab_list[i]
            if mask is not None:
                m = None if mask_list is None else mask_list[i]
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
        all_ids, all_labels, all_masks = self._rows(features)
        if all_masks is None and all(map(len, all_ids)):  # the usual batch: every row kept as it is
            ids_list, lab_list, rows = all_ids, all_labels, range(len(all_ids))
            all_ids = ()
        else:
            ids_list, lab_list, rows = [], [], []
        for i, ids in enumerate(all_ids):
            if len(ids) == 0:
                continue
            lab = all_labels[i]
            m = None if all_masks is None else all_masks[i]
            if m is not None:  # rows written padded (arrays, see _rows): keep the real tokens only
                if cfg.check_values and not _mask_ok([m]):
                    _scan_rows([ids], [lab], [m], cfg.max_token_id, self._ignore_ids, cfg.vocab_size, [i])
                keep = m.astype(bool)
                if not keep.all():
                    ids = ids[keep]
                    lab = ids if lab is all_ids[i] else lab[keep]
                    if len(ids) == 0:
                        continue
            ids_list.append(ids)
            lab_list.append(lab)
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
        same = all(a is b for a, b in zip(lab_list, ids_list))
        if not cfg.check_values or self._summaries_ok(ids_list, None if same else lab_list):
            # nothing to check (or checked by summaries): straight into the int64 planes; same_kind
            # refuses floats, strings and objects instead of truncating them
            np.concatenate(ids_list, out=buf[0, 0], casting="same_kind")
            if same:
                buf[1, 0] = buf[0, 0]
            else:
                np.concatenate(lab_list, out=buf[1, 0], casting="same_kind")
        else:
            try:  # concatenated in their own dtype (int32 from shards: half the bytes to check), then widened
                flat_ids = np.concatenate(ids_list)
                np.copyto(buf[0, 0], flat_ids, casting="same_kind")
                flat_labels = flat_ids if same else np.concatenate(lab_list)
                np.copyto(buf[1, 0], flat_labels, casting="same_kind")
            except (ValueError, TypeError):
                flat_ids = flat_labels = None  # _check_values concatenates again and names a bad row
            self._check_values(features, ids_list, lab_list, None, flat_ids=flat_ids, flat_labels=flat_labels,
                               rows=rows)
            if flat_ids is None:  # valid after all (e.g. uint64 rows among signed ones): copy them now
                np.concatenate(ids_list, out=buf[0, 0], casting="unsafe")
                np.concatenate(lab_list, out=buf[1, 0], casting="unsafe")
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
        if cfg.mask_4d is not None and not cfg.packed:  # packed rows: per sequence (_packed_batch)
            batch["attention_mask"] = self._block_mask(lens)
        return batch, RowLayout(np.asarray(rows, dtype=np.int64), starts, lens, total, True)

    # -- packed rows ------------------------------------------------------------------------------
    def _packed_batch(self, batch: Batch, layout: RowLayout, sequences: list[np.ndarray]) -> None:
        """Turn a batch of packed rows (built as if each row were one sequence) into per-sequence form:
        positions restarting per sequence, and the block-diagonal 4D mask (padded mode), or one
        ``cu_seq_lens`` entry per sequence, -100 on every sequence's first label and ``use_cache=False``
        (padding-free mode). Rows never change place: ``layout`` stays valid."""
        cfg = self.config
        kept = [sequences[int(r)] for r in layout.rows]
        if not cfg.padding_free:
            if "position_ids" in batch:
                pos = batch["position_ids"].numpy()
                for b, lengths in enumerate(kept):
                    s = int(layout.starts[b])
                    pos[b, s:s + int(layout.lengths[b])] = packing.positions(lengths)
            ids = packing.sequence_ids(kept, layout.width, layout.starts)
            batch["attention_mask"] = packing.block_mask(ids, causal=cfg.causal, kind=cfg.mask_4d,
                                                         dtype=_MASK_DTYPES[cfg.mask_dtype])
            return
        lens = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        lens = lens[lens > 0]
        cu = np.zeros(len(lens) + 1, dtype=np.int32)
        np.cumsum(lens, out=cu[1:])
        batch["labels"].numpy()[0, cu[:-1].astype(np.int64)] = cfg.label_pad_token_id
        if "position_ids" in batch:
            batch["position_ids"].numpy()[0] = packing.positions(lens)
        if cfg.return_flash_attn_kwargs:
            cu_t = torch.from_numpy(np.stack([cu, cu]))
            batch["cu_seq_lens_q"] = cu_t[0]
            batch["cu_seq_lens_k"] = cu_t[1]
            batch["max_length_q"] = batch["max_length_k"] = int(lens.max())
        if cfg.mask_4d is not None:
            batch["attention_mask"] = self._block_mask(lens)
        if cfg.padding_free_no_cache:
            batch["use_cache"] = False

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


def manifest_options(manifest: Mapping[str, Any], options: dict) -> dict:
    """``options`` completed with the dataset's ``pad_token_id`` (its ``eos_token_id`` when it has no
    pad token) and ``vocab_size`` from ``manifest["tokenizer"]``; explicit options win.

    A packed dataset (a manifest ``packing`` section) also sets ``packed=True`` and, in padded mode,
    ``max_length`` = the pack length (fixed ``[B, pack_length]`` shapes) and ``mask_4d="additive"``
    (the block-diagonal mask eager and SDPA attention honour)."""
    options = dict(options)
    pack = manifest.get("packing")
    if isinstance(pack, Mapping) and pack.get("packed"):
        options.setdefault("packed", True)
        if not options.get("padding_free") and options["packed"]:
            options.setdefault("max_length", int(pack["length"]))
            options.setdefault("mask_4d", "additive")
    tok = manifest.get("tokenizer") or {}
    if "pad_token_id" not in options:
        pad = tok.get("pad_token_id")
        options["pad_token_id"] = tok.get("eos_token_id") if pad is None else pad
    if "vocab_size" not in options and isinstance(tok.get("vocab_size"), int) and tok["vocab_size"] > 0:
        vocab = tok["vocab_size"]
        pad = options.get("pad_token_id")
        # a pad id appended after the vocabulary still counts as an id of the dataset
        options["vocab_size"] = max(vocab, pad + 1) if isinstance(pad, int) else vocab
    return options


# -- validation helpers (vectorised checks; the row-by-row scan runs only for a failing batch) ------

def feature_ids(feature: Mapping[str, Any], row: int, name: str) -> np.ndarray:
    """``feature[name]`` as a 1-D int64 array of non-negative token ids, or ``ValueError`` naming the row and
    column (a missing column, a nested or non-integer sequence, a negative id). The collators of the other
    heads (seq2seq, preference) read their id columns with it."""
    try:
        value = feature[name]
    except (KeyError, TypeError):
        raise ValueError(f"row {row}: no {name!r}") from None
    array = np.asarray(value)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"row {row}: {name} must be a flat sequence of integer ids")
    if array.size and int(array.min()) < 0:
        raise ValueError(f"row {row}: {name} has a negative id")
    return array.astype(np.int64, copy=False)


def _missing_ids(feature: Any, row: int) -> ValueError:
    if not isinstance(feature, Mapping):
        return ValueError(f"row {row}: a feature must be a mapping with 'input_ids', not {type(feature).__name__}")
    return ValueError(f"row {row}: no 'input_ids' (keys: {sorted(map(str, feature))})")


def _as_row_array(value: Any, row: int, name: str, kinds: str) -> np.ndarray:
    """``value`` as a 1-D numpy array of an integer kind (bool too for masks), or ``ValueError``."""
    if value is None:
        raise ValueError(f"row {row}: {name} is None")
    array = value
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
            raise ValueError(f"row {row}: {name} is not a sequence of integers ({exc})") from None
    if array.ndim != 1:
        raise ValueError(f"row {row}: {name} must be a flat sequence of integers, got shape {tuple(array.shape)}")
    if array.dtype.kind in kinds:
        return array
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(value, (list, tuple)):
        for j, x in enumerate(value):
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
                raise ValueError(f"row {row}: {name} has a non-integer value {x!r} at position {j}")
            if not -2**63 <= x < 2**63:
                raise ValueError(f"row {row}: {name} has {x} at position {j}, beyond int64")
    raise ValueError(f"row {row}: {name} holds non-integer values (dtype {array.dtype}, first {array[0]!r}); "
                     "token ids must be integers")


def _as_unsigned(values: np.ndarray) -> np.ndarray | None:
    """A same-size unsigned view (negative values become huge), or ``None`` for other dtypes."""
    if values.dtype.kind == "u":
        return values
    if values.dtype.kind == "i" and values.dtype.itemsize >= 4:
        return values.view(values.dtype.str.replace("i", "u"))
    return None


def _ids_ok(ids: np.ndarray, limit: int) -> bool:
    """All of ``ids`` in ``[0, limit]``: one reduction (negative ids are huge seen unsigned).

    ``False`` may also mean "cannot tell here" (a float array from mixing uint64 with signed
    rows): the row scan decides."""
    if ids.size == 0:
        return True
    unsigned = _as_unsigned(ids)
    if unsigned is not None:
        return int(unsigned.max()) <= limit
    if ids.dtype.kind == "i":  # int8 / int16
        return int(ids.min()) >= 0 and int(ids.max()) <= limit
    return False


def _labels_ok(labels: np.ndarray, limit: int, ignore: tuple[int, ...]) -> bool:
    """Every label in ``[0, limit]`` or one of the ``ignore`` values (all negative)."""
    if labels.size == 0:
        return True
    if labels.dtype.kind not in _INT_KINDS:
        return False
    if int(labels.max()) > limit:
        return False
    negative = np.count_nonzero(labels < 0)
    return negative == 0 or negative == sum(np.count_nonzero(labels == v) for v in ignore)


def _mask_ok(masks: list) -> bool:
    present = [m for m in masks if m is not None and len(m)]
    if not present:
        return True
    flat = np.concatenate(present)
    return flat.dtype.kind == "b" or bool(((flat == 0) | (flat == 1)).all())


def _scan_rows(ids_list: list, lab_list: list, mask_list: list | None, limit: int,
               ignore: tuple[int, ...], vocab_size: int | None, rows: Sequence[int] | None = None) -> None:
    """Check the rows one by one; raise ``ValueError`` naming the first bad value (the slow path,
    run only when a batch-wide check failed or could not decide)."""
    beyond = (f"beyond the vocabulary (vocab_size={vocab_size})" if vocab_size is not None
              else f"beyond int32 ({INT32_MAX})")
    for k, ids in enumerate(ids_list):
        row = k if rows is None else rows[k]
        values = ids.astype(object) if ids.dtype == np.uint64 else ids
        bad = np.flatnonzero((values < 0) | (values > limit))
        if len(bad):
            j = int(bad[0])
            v = int(ids[j])
            if v < 0:
                raise ValueError(f"row {row}: input_ids has a negative id ({v} at position {j})")
            raise ValueError(f"row {row}: input_ids has id {v} at position {j}, {beyond}")
        lab = lab_list[k]
        if lab is not ids:
            values = lab.astype(object) if lab.dtype == np.uint64 else lab
            bad_mask = values > limit
            if values.dtype.kind == "i" or values.dtype == object:
                bad_mask |= (values < 0) & ~np.isin(values, ignore)
            bad = np.flatnonzero(bad_mask)
            if len(bad):
                j = int(bad[0])
                v = int(lab[j])
                reason = beyond if v > limit else f"a label is a token id or {' / '.join(map(str, ignore))} (no loss)"
                raise ValueError(f"row {row}: labels has {v} at position {j}: {reason}")
        m = None if mask_list is None else mask_list[k]
        if m is not None and m.dtype.kind != "b":
            bad = np.flatnonzero((m != 0) & (m != 1))
            if len(bad):
                j = int(bad[0])
                raise ValueError(f"row {row}: attention_mask has {int(m[j])} at position {j}; it must be 0 or 1")
