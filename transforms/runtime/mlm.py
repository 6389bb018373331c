"""``--task mlm`` at training time: :class:`MaskingCollator` masks the rows as they are batched.

Rows hold unmasked ``input_ids``, their ``special_tokens_mask`` (1: never masked) and, from
:class:`~transforms.runtime.ShardDataset`, their ``sample_index`` (the row's index in the dataset) and the
dataset's ``epoch``. Each row is masked with its own random stream, seeded from ``(seed, epoch,
sample_index)`` (``numpy.random.default_rng([seed, epoch, sample_index])``): a row's mask does not depend
on the batch it lands in, on the padded width, on the DataLoader worker or the rank, so a resumed run masks
exactly as an uninterrupted one, every epoch masks differently, and two workers never share a stream.

Per row, as ``DataCollatorForLanguageModeling`` does (same probabilities, its own random numbers):

- every non-special token is selected with probability ``mlm_probability`` (0.15);
- a selected token's label is its id; every other label is -100 (padding too);
- a selected token becomes ``[MASK]`` with probability ``mask_replace_prob`` (0.8), a uniformly random id in
  ``[0, vocab_size)`` with probability ``random_replace_prob`` (0.1), and stays itself otherwise;
- ``whole_word_mask=True`` (rows with ``word_starts``): a word is selected when its first token is (with
  ``mlm_probability``), and all its tokens are masked with ``[MASK]`` (transformers then forces
  ``mask_replace_prob=1`` too).

Output (``torch.int64``, right padding with ``pad_token_id``): ``input_ids`` (masked), ``attention_mask``,
``labels``.

With transformers' ``Trainer``, pass ``TrainingArguments(remove_unused_columns=False)``: by default it drops
every feature key that the model's ``forward`` does not take (``special_tokens_mask``, ``sample_index``,
``epoch``) before the collator sees them. ``Trainer`` tells the epoch to its sampler, not always to the
dataset: add ``callbacks=[epoch_callback(dataset)]`` so rows report the epoch (:func:`epoch_callback`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..shard_format import IGNORE_INDEX
from .collate import Batch, manifest_options
from .heads import register_collator

SPECIAL_TOKENS_MASK, WORD_STARTS = "special_tokens_mask", "word_starts"


def row_stream(seed: int, epoch: int, sample_index: int) -> np.random.Generator:
    """The random stream of one row in one epoch."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), int(sample_index)])


def mask_row(ids: np.ndarray, special: np.ndarray, rng: np.random.Generator, *, probability: float,
             mask_token_id: int, vocab_size: int, mask_replace_prob: float, random_replace_prob: float,
             starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(masked ids, labels)`` of one row (see the module docstring), int64."""
    n = len(ids)
    ids = np.asarray(ids, dtype=np.int64)
    maskable = np.asarray(special) == 0
    select = rng.random(n)
    choice = rng.random(n)
    random_ids = rng.integers(0, vocab_size, n, dtype=np.int64)
    if starts is None:
        masked = (select < probability) & maskable
    else:  # whole words: decided on each word's first token, spread over the word
        starts = (np.asarray(starts) != 0) & maskable
        word = np.cumsum(starts) - 1
        chosen = starts & (select < probability)
        masked = maskable & (word >= 0) & np.isin(word, word[chosen])
        mask_replace_prob, random_replace_prob = 1.0, 0.0
    labels = np.where(masked, ids, IGNORE_INDEX)
    out = ids.copy()
    to_mask = masked & (choice < mask_replace_prob)
    to_random = masked & (choice >= mask_replace_prob) & (choice < mask_replace_prob + random_replace_prob)
    out[to_mask] = mask_token_id
    out[to_random] = random_ids[to_random]
    return out, labels


class MaskingCollator:
    """Pad and mask mlm rows (see the module docstring); picklable, usable as ``DataLoader(collate_fn=...)``
    and ``Trainer(data_collator=...)``.

    Args:
        pad_token_id, mask_token_id, vocab_size: the dataset's (``from_manifest`` reads them).
        seed: the run's masking seed.
        mlm_probability, mask_replace_prob, random_replace_prob: as ``DataCollatorForLanguageModeling``.
        whole_word_mask: mask whole words (the rows need ``word_starts``: ``--whole-word-mask`` at job time).
        pad_to_multiple_of: round the padded width up to a multiple of this.
    """

    def __init__(self, *, pad_token_id: int, mask_token_id: int, vocab_size: int, seed: int = 0,
                 mlm_probability: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 whole_word_mask: bool = False, pad_to_multiple_of: int | None = None):
        for name, value in (("pad_token_id", pad_token_id), ("mask_token_id", mask_token_id)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a token id, not {value!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, not {vocab_size!r}")
        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError("mlm_probability must be in [0, 1]")
        if not (0.0 <= mask_replace_prob <= 1.0 and 0.0 <= random_replace_prob <= 1.0
                and mask_replace_prob + random_replace_prob <= 1.0):
            raise ValueError("mask_replace_prob and random_replace_prob must be in [0, 1] with a sum <= 1")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError("pad_to_multiple_of must be >= 1")
        self.pad_token_id = pad_token_id
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.seed = int(seed)
        self.mlm_probability = float(mlm_probability)
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        self.whole_word_mask = bool(whole_word_mask)
        self.pad_to_multiple_of = pad_to_multiple_of

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "MaskingCollator":
        from ..shard_format import load_manifest

        return mlm_collator(load_manifest(str(path)), options)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        masked, labels = [], []
        for i, feature in enumerate(features):
            try:
                ids = np.asarray(feature["input_ids"])
                special = np.asarray(feature[SPECIAL_TOKENS_MASK])
                index = feature["sample_index"]
            except KeyError as exc:
                raise ValueError(f"row {i}: no {exc.args[0]!r} (ShardDataset(out) serves input_ids, "
                                 "special_tokens_mask, sample_index and epoch for mlm datasets; with transformers' "
                                 "Trainer pass TrainingArguments(remove_unused_columns=False), which otherwise "
                                 "drops the columns the model's forward does not take)") from None
            if ids.ndim != 1 or special.shape != ids.shape or (ids.size and ids.dtype.kind not in "iu"):
                raise ValueError(f"row {i}: input_ids and special_tokens_mask must be flat id arrays of one length")
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
                raise ValueError(f"row {i}: input_ids has an id outside [0, {self.vocab_size})")
            starts = None
            if self.whole_word_mask:
                if WORD_STARTS not in feature:
                    raise ValueError(f"row {i}: whole-word masking needs word_starts (make the dataset with "
                                     "--whole-word-mask)")
                starts = np.asarray(feature[WORD_STARTS])
            rng = row_stream(self.seed, int(feature.get("epoch", 0) or 0), int(index))
            row_ids, row_labels = mask_row(ids, special, rng, probability=self.mlm_probability,
                                           mask_token_id=self.mask_token_id, vocab_size=self.vocab_size,
                                           mask_replace_prob=self.mask_replace_prob,
                                           random_replace_prob=self.random_replace_prob, starts=starts)
            masked.append(row_ids)
            labels.append(row_labels)
        width = max(len(r) for r in masked)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(masked)
        input_ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        label_plane = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        for i, (row_ids, row_labels) in enumerate(zip(masked, labels)):
            input_ids[i, :len(row_ids)] = row_ids
            label_plane[i, :len(row_ids)] = row_labels
            attention[i, :len(row_ids)] = 1
        return Batch(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention),
                     labels=torch.from_numpy(label_plane))

    def __repr__(self) -> str:
        return (f"MaskingCollator(seed={self.seed}, mlm_probability={self.mlm_probability}, "
                f"whole_word_mask={self.whole_word_mask})")


def epoch_callback(dataset):
    """A ``transformers.TrainerCallback`` that calls ``dataset.set_epoch(epoch)`` when each epoch begins (before
    the epoch's data loader iterator, and its workers, are made), so masks change from epoch to epoch and a
    run resumed mid-epoch masks as before. Imports transformers (only this helper does)."""
    from transformers import TrainerCallback

    class SetDatasetEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            dataset.set_epoch(int(state.epoch or 0))

    return SetDatasetEpoch()


@register_collator("mlm")
def mlm_collator(manifest: Mapping[str, Any], options: dict) -> MaskingCollator:
    """The dataset's pad, mask ids and vocabulary size; whole-word masking when the shards hold word starts
    (explicit options win)."""
    options = dict(options)
    section = manifest.get("task") or {}
    options.setdefault("mask_token_id", section.get("mask_token_id"))
    options.setdefault("whole_word_mask", bool(section.get("whole_word_mask", False)))
    resolved = manifest_options(manifest, {k: options[k] for k in ("pad_token_id", "vocab_size") if k in options})
    options.setdefault("pad_token_id", resolved["pad_token_id"])
    options.setdefault("vocab_size", resolved.get("vocab_size"))
    return MaskingCollator(**options)
