"""Audit statistics of a chatshards run: one accumulator shared by the Beam job and the commands.

* :class:`AuditAccumulator` takes shard rows (``add_row``) and rejection dicts (``add_rejection``);
  partial accumulators ``merge`` in any order to the same result (integer counts, fixed-bin
  histograms, and "smallest sort key wins" choices only).
* :class:`DuplicateSummary` takes ``(conversation_hash, rows, first)`` groups with ``rows > 1``.
* :func:`build_stats` turns both, plus the manifest's configuration, into the ``stats.json`` dict;
  :func:`manifest_section` into the small ``audit`` section of ``manifest.json``.

The Beam job feeds these from ``CombineFn``s (``pipeline/stats.py``); ``python -m pipeline.audit``
feeds the same classes from the shard and rejected files (``transforms/audit/dataset.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from transforms import errors
from transforms.audit.histogram import (
    FRACTION_SCHEME,
    INT_SCHEME,
    PERCENTILES,
    FractionHistogram,
    IntHistogram,
    merge_counts,
    sorted_counts,
)
from transforms.shard_format import IGNORE_INDEX, row_sort_key

STATS_SCHEMA_VERSION = 1
STATS_PATH = "audit/stats.json"
REPORT_PATH = "audit/report.html"
EXCERPT_CHARS = 1200
DETAIL_CHARS = 500
MAX_SAMPLES = 5
FIRST_ROWS_KEPT = MAX_SAMPLES
LARGEST_GROUPS = 10
UNPARSED = "(unparsed)"
UNKNOWN = "(unknown)"

ROW_DISTRIBUTIONS = ("total_tokens", "prompt_tokens", "trained_tokens", "images", "image_tokens",
                     "turns", "trained_turns")
_PROBE_USER = "Probe question for the default system prompt check."


# --------------------------------------------------------------------------------------------------
# template probe: what the per-row template checks look for


@dataclass(frozen=True)
class TemplateProbe:
    """Token ids the per-row template checks need (plain ints: picklable, stored in the manifest).

    Attributes:
        bos_token_id: the tokenizer's BOS id (``None``: no BOS, double-BOS check not applicable).
        stop_token_ids: ids that close an assistant turn when trained (``template_check`` stop tokens,
            else EOS).
        default_system_prefix: ids a row starts with when the template's default system prompt is
            rendered (empty when the template injects none).
    """

    bos_token_id: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    default_system_prefix: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"bos_token_id": self.bos_token_id, "stop_token_ids": list(self.stop_token_ids),
                "default_system_prefix": list(self.default_system_prefix)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "TemplateProbe":
        return cls(bos_token_id=value.get("bos_token_id"),
                   stop_token_ids=tuple(int(i) for i in value.get("stop_token_ids", ())),
                   default_system_prefix=tuple(int(i) for i in value.get("default_system_prefix", ())))


def template_probe(tokenizer, template_check: Mapping[str, Any] | None = None) -> TemplateProbe:
    """Build the probe from the job's tokenizer (and its chat template) and the ``template_check``.

    The default system prefix is the rendering of a conversation without system message, up to the
    probe user text, tokenized, cut after its last special token (so BPE merges with the text that
    follows cannot change it). Rows that start with exactly these ids carry the template's default
    system prompt (injected, or given explicitly with the same text).
    """
    from transforms.chat_render import ChatRenderer
    from transforms.tokenizer_loading import special_tokens_for_template

    check = dict(template_check or {})
    stop_tokens = check.get("stop_tokens_trained") or ([tokenizer.eos_token] if tokenizer.eos_token else [])
    stop_ids = sorted({int(tokenizer.convert_tokens_to_ids(t)) for t in stop_tokens
                       if tokenizer.convert_tokens_to_ids(t) is not None})
    prefix: tuple[int, ...] = ()
    if check.get("injects_default_system_prompt"):
        try:
            renderer = ChatRenderer(chat_template=tokenizer.chat_template,
                                    template_variables=special_tokens_for_template(tokenizer))
            text = renderer.render_text([{"role": "user", "content": _PROBE_USER},
                                         {"role": "assistant", "content": "Ok."}])
        except Exception:  # noqa: BLE001 - a template that needs a system message injects nothing
            text = ""
        if _PROBE_USER in text:
            before = text[: text.index(_PROBE_USER)]
            ids = tokenizer.backend_tokenizer.encode(before, add_special_tokens=False).ids
            special = set(tokenizer.all_special_ids) | {
                i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
            last = max((k for k, i in enumerate(ids) if i in special), default=-1)
            kept = ids[: last + 1]
            if any(i not in special for i in kept):
                prefix = tuple(int(i) for i in kept)
    bos = tokenizer.bos_token_id
    return TemplateProbe(bos_token_id=None if bos is None else int(bos), stop_token_ids=tuple(stop_ids),
                         default_system_prefix=prefix)


# --------------------------------------------------------------------------------------------------
# helpers


def record_text(record: Any) -> str:
    """The record as text: raw text as is, parsed JSON as sorted-key JSON."""
    if isinstance(record, str):
        return record
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def rejected_format(item: Mapping[str, Any], format_options=None) -> str:
    """Detected format of a rejected record: ``(unparsed)`` for invalid JSON, ``(unknown)`` when the
    format cannot be told, else the format name (as ``formats.detect_format`` says)."""
    from transforms.errors import RecordRejected
    from transforms.formats import detect_format

    record = item.get("record")
    if item.get("reason") == errors.INVALID_JSON or isinstance(record, str) or record is None:
        return UNPARSED
    try:
        return detect_format(record, format_options)
    except RecordRejected:
        return UNKNOWN
    except Exception:  # noqa: BLE001 - detection of a broken record never fails the audit
        return UNKNOWN


def _source_entry() -> dict[str, Any]:
    return {"rows": 0, "records": 0, "rejected": 0, "tokens": 0, "trained_tokens": 0, "truncated": 0,
            "double_bos": 0, "default_system_prompt": 0, "last_trained_not_stop": 0,
            "formats": {}, "rejected_by_reason": {}}


def _merge_source(into: dict, other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict):
            merge_counts(into[key], value)
        else:
            into[key] += value


def _min_keyed(current, candidate):
    """Of two ``(sort_key, payload)`` pairs (or ``None``), the one with the smaller key."""
    if current is None or (candidate is not None and candidate[0] < current[0]):
        return candidate
    return current


def _sample_of(row: Mapping[str, Any], sort_key: str) -> dict[str, Any]:
    length = int(row["length"])
    return {
        "sort_key": sort_key,
        "source": str(row["source"]),
        "index": int(row["index"]),
        "format": str(row.get("format", "")),
        "length": length,
        "num_loss_tokens": int(row["num_loss_tokens"]),
        "truncated": bool(row["truncated"]),
        "truncated_tokens": int(row.get("truncated_tokens", 0)),
        "input_ids": np.array(row["input_ids"][:length], dtype=np.int64),
        "labels": np.array(row["labels"][:length], dtype=np.int64),
    }


# --------------------------------------------------------------------------------------------------
# the accumulator


class AuditAccumulator:
    """Counts, histograms and deterministic examples over rows and rejections. Mergeable.

    Args:
        probe: the per-row template check ids (:class:`TemplateProbe`).
        format_options: ``FormatOptions`` used to detect the format of rejected records.
    """

    def __init__(self, probe: TemplateProbe | None = None, format_options=None):
        self.probe = probe or TemplateProbe()
        self.format_options = format_options
        self._bos = self.probe.bos_token_id
        self._stops = frozenset(self.probe.stop_token_ids)
        self._prefix = np.asarray(self.probe.default_system_prefix, dtype=np.int64)
        self.rows = 0
        self.records = 0  # records with rows (a record split into one row per turn counts once)
        self.rejected = 0
        self.hists: dict[str, IntHistogram] = {name: IntHistogram() for name in ROW_DISTRIBUTIONS}
        self.fraction = FractionHistogram()
        self.truncated_tokens = IntHistogram()  # over truncated rows only
        self.sources: dict[str, dict] = {}
        self.formats_written: dict[str, int] = {}
        self.formats_rejected: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.examples: dict[str, tuple] = {}  # reason -> (sort_key, example)
        self.counters: dict[str, int] = {
            "truncated_rows": 0, "rejected_no_loss_after_truncation": 0, "rejected_too_long": 0,
            "double_bos_rows": 0, "bos_rows": 0, "default_system_prompt_rows": 0,
            "last_trained_is_stop_rows": 0, "last_trained_not_stop_rows": 0,
            "split_rows": 0, "split_records": 0, "split_extra_tokens": 0,
            "rows_with_trained_reasoning": 0, "trained_reasoning_tokens": 0,
            "records_with_literal_control_tokens": 0,
        }
        self.first_by_format: dict[str, tuple] = {}
        self.first_truncated: tuple | None = None
        self.first_rows: list[tuple] = []  # the FIRST_ROWS_KEPT smallest (sort_key, sample)

    # -- picklability: the probe-derived fields are rebuilt -------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_bos", "_stops", "_prefix"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._bos = self.probe.bos_token_id
        self._stops = frozenset(self.probe.stop_token_ids)
        self._prefix = np.asarray(self.probe.default_system_prefix, dtype=np.int64)

    # -- input -----------------------------------------------------------------------------------------
    def _source(self, source: str) -> dict:
        entry = self.sources.get(source)
        if entry is None:
            entry = self.sources[source] = _source_entry()
        return entry

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Add one shard row (a job row dict, or a row read back from a shard)."""
        length = int(row["length"])
        trained = int(row["num_loss_tokens"])
        prompt = int(row["prompt_tokens"])
        truncated = bool(row["truncated"])
        fmt = str(row["format"])
        source = str(row["source"])
        images = int(row.get("num_images", 0) or 0)
        image_tokens = int(row.get("num_image_tokens", 0) or 0)
        hists = self.hists
        hists["total_tokens"].add(length)
        hists["prompt_tokens"].add(prompt)
        hists["trained_tokens"].add(trained)
        hists["images"].add(images)
        hists["image_tokens"].add(image_tokens)
        hists["turns"].add(int(row["num_turns"]))
        hists["trained_turns"].add(int(row["num_trained_turns"]))
        if length > 0:
            self.fraction.add(trained, length)
        self.rows += 1
        first = int(row.get("row_of_record", 0) or 0) == 0
        self.records += 1 if first else 0
        counters = self.counters
        if first:
            self.formats_written[fmt] = self.formats_written.get(fmt, 0) + 1
        if int(row.get("turn", -1)) >= 0:
            counters["split_rows"] += 1
            counters["split_records"] += 1 if first else 0
            counters["split_extra_tokens"] += int(row.get("split_extra_tokens", 0) or 0)
        if int(row.get("reasoning_tokens", 0) or 0) > 0:
            counters["rows_with_trained_reasoning"] += 1
            counters["trained_reasoning_tokens"] += int(row["reasoning_tokens"])
        if first and int(row.get("literal_control_tokens", 0) or 0) > 0:
            counters["records_with_literal_control_tokens"] += 1
        entry = self._source(source)
        entry["rows"] += 1
        entry["records"] += 1 if first else 0
        entry["tokens"] += length
        entry["trained_tokens"] += trained
        entry["formats"][fmt] = entry["formats"].get(fmt, 0) + 1 if first else entry["formats"].get(fmt, 0)
        if truncated:
            counters["truncated_rows"] += 1
            entry["truncated"] += 1
            self.truncated_tokens.add(int(row["truncated_tokens"]))

        # per-row template checks on the real (unpadded) tokens
        ids = row["input_ids"]
        labels = row["labels"]
        if self._bos is not None and length >= 1 and int(ids[0]) == self._bos:
            counters["bos_rows"] += 1
            if length >= 2 and int(ids[1]) == self._bos:
                counters["double_bos_rows"] += 1
                entry["double_bos"] += 1
        k = len(self._prefix)
        if k and length >= k and np.array_equal(np.asarray(ids[:k]), self._prefix):
            counters["default_system_prompt_rows"] += 1
            entry["default_system_prompt"] += 1
        trained_positions = np.flatnonzero(np.asarray(labels[:length]) != IGNORE_INDEX)
        if len(trained_positions) and int(labels[int(trained_positions[-1])]) in self._stops:
            counters["last_trained_is_stop_rows"] += 1
        else:
            counters["last_trained_not_stop_rows"] += 1
            entry["last_trained_not_stop"] += 1

        # deterministic samples: the smallest sort keys win
        sort_key = row.get("sort_key") or row_sort_key(source, int(row["index"]))
        first = self.first_by_format.get(fmt)
        if first is None or sort_key < first[0]:
            self.first_by_format[fmt] = (sort_key, _sample_of(row, sort_key))
        if truncated and (self.first_truncated is None or sort_key < self.first_truncated[0]):
            self.first_truncated = (sort_key, _sample_of(row, sort_key))
        kept = self.first_rows
        if len(kept) < FIRST_ROWS_KEPT or sort_key < kept[-1][0]:
            kept.append((sort_key, _sample_of(row, sort_key)))
            kept.sort(key=lambda item: item[0])
            del kept[FIRST_ROWS_KEPT:]

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        """Add one rejection dict ``{reason, detail, source, index, record}``."""
        reason = str(item["reason"])
        source = str(item["source"])
        index = int(item["index"])
        detail = str(item.get("detail", ""))
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        fmt = rejected_format(item, self.format_options)
        self.formats_rejected[fmt] = self.formats_rejected.get(fmt, 0) + 1
        entry = self._source(source)
        entry["rejected"] += 1
        entry["rejected_by_reason"][reason] = entry["rejected_by_reason"].get(reason, 0) + 1
        if reason == errors.NO_LOSS_TOKENS and detail.startswith("truncation"):
            self.counters["rejected_no_loss_after_truncation"] += 1
        elif reason == errors.TOO_LONG:
            self.counters["rejected_too_long"] += 1
        sort_key = row_sort_key(source, index)
        current = self.examples.get(reason)
        if current is None or sort_key < current[0]:
            text = record_text(item.get("record"))
            self.examples[reason] = (sort_key, {
                "source": source, "index": index, "format": fmt,
                "detail": detail[:DETAIL_CHARS],
                "record_excerpt": text[:EXCERPT_CHARS],
                "record_chars": len(text),
            })

    # -- merging ---------------------------------------------------------------------------------------
    def merge(self, other: "AuditAccumulator") -> "AuditAccumulator":
        self.rows += other.rows
        self.records += other.records
        self.rejected += other.rejected
        for name, hist in other.hists.items():
            self.hists[name].merge(hist)
        self.fraction.merge(other.fraction)
        self.truncated_tokens.merge(other.truncated_tokens)
        for source, entry in other.sources.items():
            if source in self.sources:
                _merge_source(self.sources[source], entry)
            else:
                self.sources[source] = {k: dict(v) if isinstance(v, dict) else v for k, v in entry.items()}
        merge_counts(self.formats_written, other.formats_written)
        merge_counts(self.formats_rejected, other.formats_rejected)
        merge_counts(self.reasons, other.reasons)
        merge_counts(self.counters, other.counters)
        for reason, pair in other.examples.items():
            self.examples[reason] = _min_keyed(self.examples.get(reason), pair)
        for fmt, pair in other.first_by_format.items():
            self.first_by_format[fmt] = _min_keyed(self.first_by_format.get(fmt), pair)
        self.first_truncated = _min_keyed(self.first_truncated, other.first_truncated)
        combined = {key: pair for key, pair in self.first_rows + other.first_rows}
        self.first_rows = sorted(combined.items(), key=lambda item: item[0])[:FIRST_ROWS_KEPT]
        return self

    # -- samples ---------------------------------------------------------------------------------------
    def samples(self) -> list[dict[str, Any]]:
        """Up to ``MAX_SAMPLES`` rows to show, chosen deterministically: the first row (smallest sort
        key) of each format, the first truncated row, then the first rows overall. Each has a ``why``."""
        chosen: list[dict] = []
        seen: set[str] = set()

        def take(pair, why):
            if pair is None or pair[0] in seen or len(chosen) >= MAX_SAMPLES:
                return
            seen.add(pair[0])
            chosen.append({**pair[1], "why": why})

        for fmt in sorted(self.first_by_format):
            take(self.first_by_format[fmt], f"first {fmt} row")
        take(self.first_truncated, "first truncated row")
        for pair in self.first_rows:
            take(pair, "first row in stable order")
        return chosen


# --------------------------------------------------------------------------------------------------
# duplicates


class DuplicateSummary:
    """Summary of exact-duplicate groups (rows sharing a ``conversation_hash``). Mergeable.

    Feed it only groups with more than one row: ``add_group(hash, rows, first)`` where ``first`` is
    ``(sort_key, source, index)`` of the group's first row in the stable order.
    """

    def __init__(self):
        self.groups = 0
        self.rows = 0
        self.largest: list[tuple] = []  # (-rows, hash, first)

    def add_group(self, conversation_hash: str, rows: int, first: Sequence) -> None:
        if rows < 2:
            return
        self.groups += 1
        self.rows += rows
        self.largest.append((-int(rows), str(conversation_hash), tuple(first)))
        if len(self.largest) > 4 * LARGEST_GROUPS:
            self._trim()

    def _trim(self) -> None:
        self.largest = sorted(self.largest)[:LARGEST_GROUPS]

    def merge(self, other: "DuplicateSummary") -> "DuplicateSummary":
        self.groups += other.groups
        self.rows += other.rows
        self.largest.extend(other.largest)
        self._trim()
        return self

    def to_json(self) -> dict[str, Any]:
        self._trim()
        return {
            "duplicate_groups": self.groups,
            "rows_in_duplicate_groups": self.rows,
            "redundant_rows": self.rows - self.groups,
            "largest_groups": [
                {"conversation_hash": h, "rows": -n, "first": {"source": first[1], "index": first[2]}}
                for n, h, first in self.largest
            ],
        }


def first_of(row: Mapping[str, Any]) -> tuple[str, str, int]:
    """``(sort_key, source, index)`` of a row: what a duplicate group remembers of its first row."""
    source, index = str(row["source"]), int(row["index"])
    return (row.get("sort_key") or row_sort_key(source, index), source, index)


def group_add(group: list | None, first: tuple) -> list:
    """Add one row to a duplicate group ``[rows, first]`` (``None``: a new group)."""
    if group is None:
        return [1, first]
    group[0] += 1
    if first < group[1]:
        group[1] = first
    return group


def group_merge(groups: Iterable[list]) -> list:
    """Merge partial groups ``[rows, first]`` of one hash."""
    rows, first = 0, None
    for n, f in groups:
        rows += n
        if f is not None and (first is None or f < first):
            first = f
    return [rows, first]


class HashGroups:
    """Rows grouped by ``conversation_hash`` in memory (the commands; the job uses a keyed combine
    with :func:`group_add` / :func:`group_merge`)."""

    def __init__(self):
        self.groups: dict[str, list] = {}

    def add_row(self, row: Mapping[str, Any]) -> None:
        key = row["conversation_hash"]
        self.groups[key] = group_add(self.groups.get(key), first_of(row))

    def summary(self) -> DuplicateSummary:
        summary = DuplicateSummary()
        for conversation_hash, (rows, first) in self.groups.items():
            summary.add_group(conversation_hash, rows, first)
        return summary


# --------------------------------------------------------------------------------------------------
# final output


def _percentile_summary(hist_json: Mapping[str, Any]) -> dict[str, Any]:
    return {key: hist_json[key] for key in ("min", "mean", *[f"p{p}" for p in PERCENTILES], "max")}


def build_stats(acc: AuditAccumulator, duplicates: DuplicateSummary, *, manifest: Mapping[str, Any],
                computed_by: str) -> dict[str, Any]:
    """The ``stats.json`` document (schema: README, section "Auditing your data").

    ``manifest`` supplies the configuration (``config``, ``config_fingerprint``, ``tokenizer``,
    ``template_check``): the job passes its manifest base, the command the manifest it reads.
    """
    config = manifest.get("config", {})
    tokenize = config.get("tokenize", {})
    check = manifest.get("template_check", {}) or {}
    distributions = {name: acc.hists[name].to_json() for name in ROW_DISTRIBUTIONS}
    distributions["trained_fraction"] = acc.fraction.to_json()
    totals = {
        "tokens": acc.hists["total_tokens"].total,
        "prompt_tokens": acc.hists["prompt_tokens"].total,
        "trained_tokens": acc.hists["trained_tokens"].total,
        "images": acc.hists["images"].total,
        "image_tokens": acc.hists["image_tokens"].total,
    }
    totals["trained_fraction"] = (round(totals["trained_tokens"] / totals["tokens"], 6)
                                  if totals["tokens"] else None)
    sources = {}
    for source in sorted(acc.sources):
        entry = acc.sources[source]
        sources[source] = {
            "read": entry["records"] + entry["rejected"],
            "written": entry["records"],
            "rows": entry["rows"],
            "rejected": entry["rejected"],
            "rejected_by_reason": sorted_counts(entry["rejected_by_reason"]),
            "formats": sorted_counts(entry["formats"]),
            "tokens": entry["tokens"],
            "trained_tokens": entry["trained_tokens"],
            "truncated": entry["truncated"],
            "template": {"double_bos_rows": entry["double_bos"],
                         "default_system_prompt_rows": entry["default_system_prompt"],
                         "last_trained_not_stop_rows": entry["last_trained_not_stop"]},
        }
    formats = {}
    for fmt in sorted(set(acc.formats_written) | set(acc.formats_rejected)):
        formats[fmt] = {"written": acc.formats_written.get(fmt, 0), "rejected": acc.formats_rejected.get(fmt, 0)}
    counters = acc.counters
    dup = duplicates.to_json()
    dup.update({"dedup": bool(config.get("dedup", False)),
                "rejected_duplicates": acc.reasons.get(errors.DUPLICATE, 0)})
    probe = acc.probe
    stats = {
        "audit_schema_version": STATS_SCHEMA_VERSION,
        "computed_by": computed_by,
        "dataset": {
            "config_fingerprint": manifest.get("config_fingerprint"),
            "tokenizer": (manifest.get("tokenizer") or {}).get("name"),
            "inputs": list(config.get("inputs", [])),
            "max_length": tokenize.get("max_length"),
            "truncation": tokenize.get("truncation"),
            "loss": tokenize.get("loss"),
            "dedup": bool(config.get("dedup", False)),
        },
        "counts": {
            "read": acc.records + acc.rejected,
            "written": acc.records,
            "rejected": acc.rejected,
            "rows": acc.rows,
            "turns": acc.hists["turns"].total,
            "trained_turns": acc.hists["trained_turns"].total,
        },
        "totals": totals,
        "by_source": sources,
        "by_format": formats,
        "rejections": {
            "by_reason": sorted_counts(acc.reasons),
            "examples": {reason: acc.examples[reason][1] for reason in sorted(acc.examples)},
        },
        "distributions": distributions,
        "truncation": {
            "max_length": tokenize.get("max_length"),
            "mode": tokenize.get("truncation"),
            "rows_truncated": counters["truncated_rows"],
            "tokens_removed": acc.truncated_tokens.total,
            "tokens_removed_per_truncated_row": acc.truncated_tokens.to_json(),
            "rejected_no_loss_after_truncation": counters["rejected_no_loss_after_truncation"],
            "rejected_too_long": counters["rejected_too_long"],
        },
        "duplicates": dup,
        "turns_split": {
            "rows": counters["split_rows"],
            "records": counters["split_records"],
            "extra_tokens": counters["split_extra_tokens"],
            "meaning": "records whose template renders earlier turns differently are written as one row per "
                       "supervised turn; extra_tokens = tokens those rows hold beyond each record's longest row "
                       "(the prompt tokens that splitting repeats)",
        },
        "reasoning": {
            "rows_with_trained_reasoning": counters["rows_with_trained_reasoning"],
            "trained_reasoning_tokens": counters["trained_reasoning_tokens"],
        },
        "control_tokens": {"records_with_literal_control_tokens": counters["records_with_literal_control_tokens"]},
        "template": {
            "double_bos": bool(check.get("double_bos", False)),
            "renders_bos": bool(check.get("renders_bos", False)),
            "stop_tokens_trained": list(check.get("stop_tokens_trained", [])),
            "injects_default_system_prompt": bool(check.get("injects_default_system_prompt", False)),
            "default_system_prompt": check.get("default_system_prompt"),
            "rows_starting_with_bos": counters["bos_rows"],
            "rows_double_bos": counters["double_bos_rows"],
            "rows_with_default_system_prompt": counters["default_system_prompt_rows"],
            "rows_last_trained_token_is_stop": counters["last_trained_is_stop_rows"],
            "rows_last_trained_token_not_stop": counters["last_trained_not_stop_rows"],
            "probe": probe.to_json(),
        },
        "samples": [
            {k: sample[k] for k in ("source", "index", "format", "length", "num_loss_tokens", "truncated", "why")}
            for sample in acc.samples()
        ],
        "bins": {
            INT_SCHEME: "integers: exact below 64; from 64 each [2^e, 2^(e+1)) split into 32 equal buckets; "
                        "buckets are [lo, hi (inclusive), count]",
            FRACTION_SCHEME: "ratios in [0, 1]: 100 buckets of width 0.01, [lo, hi), 1.0 in the last; "
                             "buckets are [lo, hi, count]",
            "percentiles": "nearest rank on the merged histogram, reported as the upper edge of the bucket "
                           "holding the ranked row, clipped to [min, max]: exact for integers below 64, "
                           "else at most 1/32 above the true value; fractions at most 0.01 above",
        },
    }
    return stats


def manifest_section(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The small ``audit`` section merged into ``manifest.json``."""
    dist = stats["distributions"]
    return {
        "audit": {
            "stats_path": STATS_PATH,
            "report_path": REPORT_PATH,
            "audit_schema_version": stats["audit_schema_version"],
            "counts": {
                **stats["counts"],
                "rows_truncated": stats["truncation"]["rows_truncated"],
                "rejected_no_loss_after_truncation": stats["truncation"]["rejected_no_loss_after_truncation"],
                "rows_in_duplicate_groups": stats["duplicates"]["rows_in_duplicate_groups"],
                "rejected_duplicates": stats["duplicates"]["rejected_duplicates"],
                "rows_double_bos": stats["template"]["rows_double_bos"],
            },
            "percentiles": {name: _percentile_summary(dist[name])
                            for name in ("total_tokens", "trained_tokens", "trained_fraction")},
            "template_probe": stats["template"]["probe"],
        }
    }


def _dump(value: Any, level: int) -> str:
    """JSON with sorted keys and 2-space indent, but lists of scalars (histogram buckets, probe ids)
    on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dump(value[k], level + 1)}"
                 for k in sorted(value, key=str)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        return "[\n" + ",\n".join(inner + _dump(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def stats_json_bytes(stats: Mapping[str, Any]) -> bytes:
    """The exact bytes of ``stats.json``: sorted keys, 2-space indent (lists of scalars on one line),
    trailing newline. Valid JSON that ``json.load`` reads back to ``stats``."""
    return (_dump(stats, 0) + "\n").encode("utf-8")


def comparable(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` without the fields that legitimately differ between the job and the command."""
    return {key: value for key, value in stats.items() if key != "computed_by"}


def summary_lines(stats: Mapping[str, Any]) -> list[str]:
    """A few human-readable lines summarising ``stats`` (printed by ``python -m pipeline.audit``)."""
    counts, totals = stats["counts"], stats["totals"]
    reasons = ", ".join(f"{k}={v}" for k, v in stats["rejections"]["by_reason"].items()) or "none"
    total = stats["distributions"]["total_tokens"]
    trained = stats["distributions"]["trained_tokens"]
    trunc, dup, tmpl = stats["truncation"], stats["duplicates"], stats["template"]
    fraction = totals["trained_fraction"]
    formats = ", ".join(f"{k}={v['written']}" for k, v in stats["by_format"].items() if v["written"]) or "none"
    return [
        f"records read {counts['read']:,}, rows written {counts['written']:,}, rejected {counts['rejected']:,} ({reasons})",
        f"formats written: {formats}; {len(stats['by_source'])} input file(s); "
        f"turns {counts['turns']:,}, trained turns {counts['trained_turns']:,}",
        f"tokens {totals['tokens']:,}, trained {totals['trained_tokens']:,}"
        + (f" ({100 * fraction:.1f}%)" if fraction is not None else "")
        + f"; tokens/row p50 {total['p50']} p90 {total['p90']} p99 {total['p99']} max {total['max']}; "
          f"trained/row p50 {trained['p50']} max {trained['max']}",
        f"truncated rows {trunc['rows_truncated']:,} ({trunc['tokens_removed']:,} tokens removed); "
        f"rejected because truncation removed every trained token: {trunc['rejected_no_loss_after_truncation']:,}",
        f"duplicates: {dup['rows_in_duplicate_groups']:,} rows in {dup['duplicate_groups']:,} groups; "
        f"rejected as duplicate: {dup['rejected_duplicates']:,}",
        f"template: double-BOS rows {tmpl['rows_double_bos']:,}; rows whose last trained token is not a stop "
        f"token {tmpl['rows_last_trained_token_not_stop']:,}; rows with the default system prompt "
        f"{tmpl['rows_with_default_system_prompt']:,}",
    ]
