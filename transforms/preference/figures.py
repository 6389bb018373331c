"""The audit of preference data (``audit/stats.json`` -> ``task``): what people check pairs for.

:class:`PreferenceFigures` (``--task preference``): prompt, chosen and rejected token distributions; the
chosen-minus-rejected length difference (a known source of length bias: how often the chosen completion is
the longer one, by how much, the mean signed difference); truncated pairs (prompt or completions cut) and
rejected ones (``pair_truncated``, ``identical_pair``, ``too_long``); pairs per prompt (how many pairs share
a prompt, by ``prompt_hash``); pairs trained by the prompt-mismatch rule, and pairs whose completions start
at a token that also holds prompt characters (``boundary_moved``). :class:`KtoFigures`
(``--task kto``): desirable/undesirable balance, prompt and completion token distributions per label,
truncation. Both merge exactly in any order (integer counts, fixed-bin histograms, a count per prompt).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from transforms import errors
from transforms.audit.histogram import IntHistogram, merge_counts
from transforms.tasks.base import TaskFigures

_PAIR_REASONS = (errors.PAIR_TRUNCATED, errors.IDENTICAL_PAIR, errors.TOO_LONG)


def _prompt_group(row: Mapping[str, Any]) -> int:
    return int(str(row["prompt_hash"])[:16], 16)


class _PromptGroups:
    """Rows per prompt (by the first 64 bits of ``prompt_hash``): a count per prompt, merged by adding."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def add(self, key: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def merge(self, other: "_PromptGroups") -> None:
        merge_counts(self.counts, other.counts)

    def to_json(self, what: str) -> dict[str, Any]:
        hist = IntHistogram()
        for n in self.counts.values():
            hist.add(n)
        return {"prompts": len(self.counts), f"{what}_per_prompt": hist.to_json(),
                f"prompts_with_several_{what}": sum(1 for n in self.counts.values() if n > 1)}


class PreferenceFigures(TaskFigures):
    """Audit of ``--task preference`` rows (see the module docstring)."""

    def __init__(self):
        self.prompt_tokens = IntHistogram()
        self.chosen_tokens = IntHistogram()
        self.rejected_tokens = IntHistogram()
        self.chosen_longer_by = IntHistogram()
        self.rejected_longer_by = IntHistogram()
        self.groups = _PromptGroups()
        self.counts = {"pairs": 0, "chosen_longer": 0, "same_length": 0, "rejected_longer": 0,
                       "length_difference_sum": 0, "truncated_pairs": 0, "prompt_truncated_pairs": 0,
                       "completion_truncated_pairs": 0, "prompt_mismatch_pairs": 0, "boundary_moved_pairs": 0,
                       **{f"rejected_{reason}": 0 for reason in _PAIR_REASONS}}

    def add_row(self, row: Mapping[str, Any]) -> None:
        counts = self.counts
        prompt, chosen, rejected = (len(row[name]) for name in ("prompt_ids", "chosen_ids", "rejected_ids"))
        self.prompt_tokens.add(prompt)
        self.chosen_tokens.add(chosen)
        self.rejected_tokens.add(rejected)
        difference = chosen - rejected
        counts["pairs"] += 1
        counts["length_difference_sum"] += difference
        if difference > 0:
            counts["chosen_longer"] += 1
            self.chosen_longer_by.add(difference)
        elif difference < 0:
            counts["rejected_longer"] += 1
            self.rejected_longer_by.add(-difference)
        else:
            counts["same_length"] += 1
        if int(row["prompt_truncated_tokens"]):
            counts["prompt_truncated_pairs"] += 1
        if int(row["chosen_truncated_tokens"]) or int(row["rejected_truncated_tokens"]):
            counts["completion_truncated_pairs"] += 1
        if bool(row["truncated"]):
            counts["truncated_pairs"] += 1
        if int(row["prompt_mismatch_turns"]):
            counts["prompt_mismatch_pairs"] += 1
        if bool(row["boundary_moved"]):
            counts["boundary_moved_pairs"] += 1
        self.groups.add(_prompt_group(row))

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        reason = str(item.get("reason"))
        if reason in _PAIR_REASONS:
            self.counts[f"rejected_{reason}"] += 1

    def merge(self, other: "PreferenceFigures") -> "PreferenceFigures":
        for name in ("prompt_tokens", "chosen_tokens", "rejected_tokens", "chosen_longer_by", "rejected_longer_by"):
            getattr(self, name).merge(getattr(other, name))
        self.groups.merge(other.groups)
        merge_counts(self.counts, other.counts)
        return self

    def _summary(self) -> dict[str, Any]:
        counts = dict(self.counts)
        pairs = counts["pairs"]
        counts["mean_length_difference"] = round(counts.pop("length_difference_sum") / pairs, 6) if pairs else None
        counts["chosen_longer_fraction"] = round(counts["chosen_longer"] / pairs, 6) if pairs else None
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            **self._summary(),
            "prompt_tokens": self.prompt_tokens.to_json(),
            "chosen_tokens": self.chosen_tokens.to_json(),
            "rejected_tokens": self.rejected_tokens.to_json(),
            "chosen_minus_rejected": {
                "meaning": "completion length difference in tokens (chosen - rejected): how often and by how much "
                           "the chosen completion is the longer one (DPO learns a length preference from it)",
                "chosen_longer_by": self.chosen_longer_by.to_json(),
                "rejected_longer_by": self.rejected_longer_by.to_json(),
            },
            **self.groups.to_json("pairs"),
        }

    def summary(self) -> dict[str, Any]:
        summary = self._summary()
        summary["prompts"] = len(self.groups.counts)
        return summary

    def sample_view(self, row: Mapping[str, Any]):
        """The prompt (not trained) then the chosen completion (trained)."""
        prompt, chosen = np.asarray(row["prompt_ids"]), np.asarray(row["chosen_ids"])
        return np.concatenate([prompt, chosen]), np.concatenate([np.full(len(prompt), -100), chosen])


class KtoFigures(TaskFigures):
    """Audit of ``--task kto`` rows: label balance, token distributions per label, truncation, prompts."""

    def __init__(self):
        self.prompt_tokens = IntHistogram()
        self.desirable_tokens = IntHistogram()
        self.undesirable_tokens = IntHistogram()
        self.groups = _PromptGroups()
        self.counts = {"examples": 0, "desirable": 0, "undesirable": 0, "truncated": 0, "prompt_truncated": 0,
                       "completion_truncated": 0, "prompt_mismatch_examples": 0, "boundary_moved": 0}

    def add_row(self, row: Mapping[str, Any]) -> None:
        counts = self.counts
        counts["examples"] += 1
        self.prompt_tokens.add(len(row["prompt_ids"]))
        if bool(row["label"]):
            counts["desirable"] += 1
            self.desirable_tokens.add(len(row["completion_ids"]))
        else:
            counts["undesirable"] += 1
            self.undesirable_tokens.add(len(row["completion_ids"]))
        if bool(row["truncated"]):
            counts["truncated"] += 1
        if int(row["prompt_truncated_tokens"]):
            counts["prompt_truncated"] += 1
        if int(row["completion_truncated_tokens"]):
            counts["completion_truncated"] += 1
        if int(row["prompt_mismatch_turns"]):
            counts["prompt_mismatch_examples"] += 1
        if bool(row["boundary_moved"]):
            counts["boundary_moved"] += 1
        self.groups.add(_prompt_group(row))

    def merge(self, other: "KtoFigures") -> "KtoFigures":
        for name in ("prompt_tokens", "desirable_tokens", "undesirable_tokens"):
            getattr(self, name).merge(getattr(other, name))
        self.groups.merge(other.groups)
        merge_counts(self.counts, other.counts)
        return self

    def _summary(self) -> dict[str, Any]:
        counts = dict(self.counts)
        n = counts["examples"]
        counts["desirable_fraction"] = round(counts["desirable"] / n, 6) if n else None
        return counts

    def to_json(self) -> dict[str, Any]:
        return {**self._summary(), "prompt_tokens": self.prompt_tokens.to_json(),
                "desirable_completion_tokens": self.desirable_tokens.to_json(),
                "undesirable_completion_tokens": self.undesirable_tokens.to_json(),
                **self.groups.to_json("examples")}

    def summary(self) -> dict[str, Any]:
        return {**self._summary(), "prompts": len(self.groups.counts)}

    def sample_view(self, row: Mapping[str, Any]):
        prompt, completion = np.asarray(row["prompt_ids"]), np.asarray(row["completion_ids"])
        return np.concatenate([prompt, completion]), np.concatenate([np.full(len(prompt), -100), completion])
