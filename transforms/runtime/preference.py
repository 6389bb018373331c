"""``--task preference`` and ``--task kto`` at training time: the batches of DPO and KTO.

:class:`PreferenceCollator`: rows holding ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` -> what TRL's
``DataCollatorForPreference`` returns for the same rows (every tensor ``torch.int64``, right padding):

- ``input_ids`` ``[2B, L]``: rows ``0..B-1`` are ``prompt + chosen``, rows ``B..2B-1`` ``prompt + rejected``, padded
  with ``pad_token_id`` (``L`` the longest sequence, rounded up to ``pad_to_multiple_of``);
- ``attention_mask`` ``[2B, L]``: 1 on real tokens, 0 on padding;
- ``completion_mask`` ``[2B, L]``: 1 on the completion's tokens (what DPO scores), 0 on the prompt and padding;
- with ``labels=True`` also ``labels`` ``[2B, L]``: the ids on completion tokens, -100 elsewhere (what a loss
  over ``labels`` reads: ``model(input_ids, labels=labels)`` scores exactly the completion, the model shifts);
- ``ref_chosen_logps`` / ``ref_rejected_logps`` ``[B]`` (float32) when the rows carry them.

``max_length`` cuts each sequence before padding (``truncation_mode`` ``keep_start`` keeps its start,
``keep_end`` its end), as TRL's collator does; the job's own truncation (``--max-length``) already keeps pairs
meaningful, so the collator's is only a bound on memory.

:class:`KtoCollator`: rows holding ``prompt_ids``, ``completion_ids``, ``label`` -> what TRL's
``DataCollatorForUnpairedPreference`` returns: ``input_ids``, ``attention_mask``, ``completion_mask`` ``[B, L]``,
``label`` ``[B]`` (bool); with ``kl=True`` (or rows carrying ``KL_completion_ids``) also ``KL_input_ids``,
``KL_attention_mask``, ``KL_completion_mask``: each prompt with the completion of the previous row in the batch
(row 0 takes the last row's), the mismatched pairs TRL's ``KTOTrainer`` builds per batch of
``per_device_train_batch_size`` rows to estimate the KL term; ``ref_logps`` / ``ref_KL_logps`` when present.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..shard_format import IGNORE_INDEX
from .collate import Batch, feature_ids, manifest_options
from .heads import register_collator

TRUNCATION_MODES = ("keep_start", "keep_end")



def _padded(rows: Sequence[np.ndarray], value: int, multiple: int | None) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    if multiple and width % multiple:
        width += multiple - width % multiple
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return torch.from_numpy(out)


class _SequenceCollator:
    """Shared options and the padding of ``(ids, completion mask)`` sequences."""

    def __init__(self, *, pad_token_id: int, max_length: int | None = None, truncation_mode: str = "keep_start",
                 pad_to_multiple_of: int | None = None, labels: bool = False, vocab_size: int | None = None):
        if not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool) or pad_token_id < 0:
            raise ValueError(f"pad_token_id must be a token id, not {pad_token_id!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive integer or None, not {max_length!r}")
        if truncation_mode not in TRUNCATION_MODES:
            raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, not {truncation_mode!r}")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError("pad_to_multiple_of must be >= 1")
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.truncation_mode = truncation_mode
        self.pad_to_multiple_of = pad_to_multiple_of
        self.labels = bool(labels)
        self.vocab_size = vocab_size

    def _check_vocab(self, name: str, rows: Sequence[np.ndarray]) -> None:
        if self.vocab_size is None:
            return
        for i, row in enumerate(rows):
            if row.size and int(row.max()) >= self.vocab_size:
                raise ValueError(f"row {i}: {name} has an id beyond the vocabulary ({self.vocab_size})")

    def _sequences(self, prompts: Sequence[np.ndarray], completions: Sequence[np.ndarray], *,
                   keep_end: bool = False) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask``, ``completion_mask`` (and ``labels``) of ``prompt + completion`` rows."""
        ids, masks = [], []
        for prompt, completion in zip(prompts, completions):
            sequence = np.concatenate([prompt, completion])
            mask = np.concatenate([np.zeros(len(prompt), np.int64), np.ones(len(completion), np.int64)])
            if self.max_length is not None and len(sequence) > self.max_length:
                cut = slice(len(sequence) - self.max_length, None) if keep_end else slice(None, self.max_length)
                sequence, mask = sequence[cut], mask[cut]
            ids.append(sequence)
            masks.append(mask)
        multiple = self.pad_to_multiple_of
        out = {"input_ids": _padded(ids, self.pad_token_id, multiple),
               "attention_mask": _padded([np.ones(len(r), np.int64) for r in ids], 0, multiple),
               "completion_mask": _padded(masks, 0, multiple)}
        if self.labels:
            out["labels"] = out["input_ids"].masked_fill(out["completion_mask"] == 0, IGNORE_INDEX)
        return out


class PreferenceCollator(_SequenceCollator):
    """DPO batches from preference rows (see the module docstring); picklable, usable as
    ``DataLoader(collate_fn=...)`` and ``DPOTrainer(data_collator=...)``.

    Args:
        pad_token_id: the padding id of ``input_ids``.
        max_length: cut each sequence to this many tokens before padding (``None``: no cut).
        truncation_mode: ``keep_start`` (default) or ``keep_end``.
        pad_to_multiple_of: round the width up to a multiple of this.
        labels: also return ``labels`` (-100 outside the completions).
        vocab_size: refuse ids at or beyond it (``None``: no check).
    """

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        prompts = [feature_ids(f, i, "prompt_ids") for i, f in enumerate(features)]
        chosen = [feature_ids(f, i, "chosen_ids") for i, f in enumerate(features)]
        rejected = [feature_ids(f, i, "rejected_ids") for i, f in enumerate(features)]
        for name, rows in (("prompt_ids", prompts), ("chosen_ids", chosen), ("rejected_ids", rejected)):
            self._check_vocab(name, rows)
        batch = Batch(self._sequences(prompts + prompts, chosen + rejected,
                                      keep_end=self.truncation_mode == "keep_end"))
        for name in ("ref_chosen_logps", "ref_rejected_logps"):
            if name in features[0]:
                batch[name] = torch.tensor([float(f[name]) for f in features])
        return batch

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "PreferenceCollator":
        from ..shard_format import load_manifest

        return preference_collator(load_manifest(str(path)), options)

    def __repr__(self) -> str:
        return (f"PreferenceCollator(pad_token_id={self.pad_token_id}, max_length={self.max_length}, "
                f"truncation_mode={self.truncation_mode!r}, labels={self.labels})")


class KtoCollator(_SequenceCollator):
    """KTO batches from unpaired rows (see the module docstring); ``kl=True`` adds the mismatched KL sequences.

    Args: those of :class:`PreferenceCollator` (TRL's collator cuts keeping the start, the default), plus ``kl``.
    """

    def __init__(self, *, kl: bool = False, **options: Any):
        super().__init__(**options)
        self.kl = bool(kl)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        prompts = [feature_ids(f, i, "prompt_ids") for i, f in enumerate(features)]
        completions = [feature_ids(f, i, "completion_ids") for i, f in enumerate(features)]
        self._check_vocab("prompt_ids", prompts)
        self._check_vocab("completion_ids", completions)
        labels = []
        for i, f in enumerate(features):
            value = f.get("label") if isinstance(f, Mapping) else None
            if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
                raise ValueError(f"row {i}: label must be true or false, not {value!r}")
            labels.append(bool(value))
        keep_end = self.truncation_mode == "keep_end"
        batch = Batch(self._sequences(prompts, completions, keep_end=keep_end))
        if "KL_completion_ids" in features[0]:
            kl_completions = [feature_ids(f, i, "KL_completion_ids") for i, f in enumerate(features)]
        elif self.kl:
            kl_completions = completions[-1:] + completions[:-1]
        else:
            kl_completions = None
        if kl_completions is not None:
            for name, value in self._sequences(prompts, kl_completions, keep_end=keep_end).items():
                batch[f"KL_{name}"] = value
        for name in ("ref_logps", "ref_KL_logps"):
            if name in features[0]:
                batch[name] = torch.tensor([float(f[name]) for f in features])
        batch["label"] = torch.tensor(labels)
        return batch

    @classmethod
    def from_manifest(cls, path: str, **options: Any) -> "KtoCollator":
        from ..shard_format import load_manifest

        return kto_collator(load_manifest(str(path)), options)

    def __repr__(self) -> str:
        return f"KtoCollator(pad_token_id={self.pad_token_id}, max_length={self.max_length}, kl={self.kl})"


def _options(manifest: Mapping[str, Any], options: dict) -> dict:
    options = dict(options)
    section = manifest.get("task") or {}
    if "pad_token_id" not in options and isinstance(section.get("pad_token_id"), int):
        options["pad_token_id"] = section["pad_token_id"]
    resolved = manifest_options(manifest, {k: options[k] for k in ("pad_token_id", "vocab_size") if k in options})
    options.setdefault("pad_token_id", resolved["pad_token_id"])
    options.setdefault("vocab_size", resolved.get("vocab_size"))
    return options


@register_collator("preference")
def preference_collator(manifest: Mapping[str, Any], options: dict) -> PreferenceCollator:
    """A :class:`PreferenceCollator` with the dataset's pad id and vocabulary size (explicit options win)."""
    return PreferenceCollator(**_options(manifest, options))


@register_collator("kto")
def kto_collator(manifest: Mapping[str, Any], options: dict) -> KtoCollator:
    """A :class:`KtoCollator` with the dataset's pad id and vocabulary size (explicit options win)."""
    return KtoCollator(**_options(manifest, options))
