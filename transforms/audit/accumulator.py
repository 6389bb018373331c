"""The audit accumulator: counts, histograms and deterministic examples over rows and rejections.

:class:`AuditAccumulator` takes shard rows (``add_row``) and rejection dicts (``add_rejection``);
partial accumulators ``merge`` in any order to the same result (integer counts, fixed-bin
histograms, and "smallest sort key wins" choices only).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from transforms import errors
from transforms.audit.histogram import FractionHistogram, IntHistogram, merge_counts
from transforms.audit.probe import TemplateProbe
from transforms.shard_format import (
    DOCUMENTS_COLUMN,
    IGNORE_INDEX,
    PROMPT_MISMATCH_KEY,
    PROMPT_MISMATCH_RECORD_KEY,
    row_sort_key,
)

EXCERPT_CHARS = 1200
DETAIL_CHARS = 500
MAX_SAMPLES = 5
FIRST_ROWS_KEPT = MAX_SAMPLES
UNPARSED = "(unparsed)"
UNKNOWN = "(unknown)"
ROW_DISTRIBUTIONS = ("total_tokens", "prompt_tokens", "trained_tokens", "images", "image_tokens",
                     "turns", "trained_turns")


def record_text(record: Any) -> str:
    """The record as text: raw text as is, parsed JSON as sorted-key JSON."""
    if isinstance(record, str):
        return record
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def rejected_format(item: Mapping[str, Any], format_options=None) -> str:
    """Detected format of a rejected record: ``(unparsed)`` for invalid JSON, ``(unknown)`` when the
    format cannot be told, else the format name (as ``formats.detect_format`` says, or the task's
    ``detect_format`` when ``format_options`` is a :class:`~transforms.tasks.spec.TaskSpec`)."""
    from transforms.errors import RecordRejected
    from transforms.formats import detect_format
    from transforms.tasks.spec import TaskSpec

    record = item.get("record")
    if item.get("reason") == errors.INVALID_JSON or isinstance(record, str) or record is None:
        return UNPARSED
    try:
        if isinstance(format_options, TaskSpec):
            return format_options.detect_format(record)
        return detect_format(record, format_options)
    except RecordRejected:
        return UNKNOWN
    except Exception:  # noqa: BLE001 - detection of a broken record never fails the audit
        return UNKNOWN


def _task_figures(format_options):
    """The task's audit figures (``None`` for chat: ``FormatOptions``, ``None`` or the chat task's spec)."""
    from transforms.tasks.spec import TaskSpec

    if not isinstance(format_options, TaskSpec) or format_options.is_chat:
        return None
    from transforms.tasks.base import TaskFigures

    figures = format_options.figures() or TaskFigures()
    figures.task_name = format_options.name
    return figures


def _source_entry() -> dict[str, Any]:
    return {"rows": 0, "records": 0, "rejected": 0, "tokens": 0, "trained_tokens": 0, "truncated": 0,
            "double_bos": 0, "default_system_prompt": 0, "last_trained_not_stop": 0,
            "formats": {}, "rejected_by_reason": {}}


DATASET = "dataset"  # the column (and rejection field) of a job with a datasets list


def _dataset_entry() -> dict[str, Any]:
    return {"rows": 0, "records": 0, "rejected": 0, "tokens": 0, "trained_tokens": 0, "truncated": 0,
            "rejected_by_reason": {}, "lengths": IntHistogram()}


def _merge_dataset(into: dict, other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if key == "lengths":
            into[key].merge(value)
        elif isinstance(value, dict):
            merge_counts(into[key], value)
        else:
            into[key] += value


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


def _sample_of(row: Mapping[str, Any], sort_key: str, figures=None) -> dict[str, Any]:
    length = int(row["length"])
    if figures is not None:  # another task: its view of the row (ids and labels of equal length)
        ids, labels = figures.sample_view(row)
        return {"sort_key": sort_key, "source": str(row["source"]), "index": int(row["index"]),
                "format": figures_format(figures), "length": len(ids), "num_loss_tokens": int(row["num_loss_tokens"]),
                "truncated": bool(row["truncated"]), "truncated_tokens": int(row.get("truncated_tokens", 0)),
                "input_ids": np.array(ids, dtype=np.int64), "labels": np.array(labels, dtype=np.int64)}
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



def figures_format(figures) -> str:
    """The ``format`` the audit shows for the rows of a task other than chat: the task's name."""
    return str(getattr(figures, "task_name", "") or "task")


class AuditAccumulator:
    """Counts, histograms and deterministic examples over rows and rejections. Mergeable.

    Args:
        probe: the per-row template check ids (:class:`TemplateProbe`).
        format_options: ``FormatOptions`` used to detect the format of rejected records, or the job's
            :class:`~transforms.tasks.spec.TaskSpec`. For a task other than chat the rows lack the chat
            columns (turns, prompt tokens, format): those figures are 0 or the task's name, the template
            checks are skipped, and the task's :class:`~transforms.tasks.base.TaskFigures` add its own
            figures (``task`` in the stats document).
    """

    def __init__(self, probe: TemplateProbe | None = None, format_options=None):
        self.probe = probe or TemplateProbe()
        self.format_options = format_options
        self.figures = _task_figures(format_options)
        self._bos = self.probe.bos_token_id
        self._stops = frozenset(self.probe.stop_token_ids)
        self._prefix = [int(v) for v in self.probe.default_system_prefix]
        self.rows = 0
        self.records = 0  # records with rows (a record split into one row per turn counts once)
        self.rejected = 0
        self.hists: dict[str, IntHistogram] = {name: IntHistogram() for name in ROW_DISTRIBUTIONS}
        self.fraction = FractionHistogram()
        self.truncated_tokens = IntHistogram()  # over truncated rows only
        self.sources: dict[str, dict] = {}
        self.datasets: dict[str, dict] = {}  # a job with a datasets list: per dataset entry
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
            "prompt_mismatch_records": 0, "prompt_mismatch_rows": 0, "prompt_mismatch_turns": 0,
        }
        self.prompt_mismatch_kinds: dict[str, int] = {}  # kind -> turns (see transforms.chat_render.PromptMismatch)
        self.prompt_mismatch_example: tuple | None = None  # (sort_key, example), the smallest key
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
        self._prefix = [int(v) for v in self.probe.default_system_prefix]

    # -- input -----------------------------------------------------------------------------------------
    def _starts_with_prefix(self, head) -> bool:
        """``head`` (the row's first ``len(prefix)`` ids: numpy array or sequence) equals the default
        system prompt's ids (a list comparison: ``np.array_equal`` costs several microseconds a row)."""
        values = (head if isinstance(head, np.ndarray) else np.asarray(head)).tolist()
        return values == self._prefix

    def _source(self, source: str) -> dict:
        entry = self.sources.get(source)
        if entry is None:
            entry = self.sources[source] = _source_entry()
        return entry

    def _dataset(self, name) -> dict:
        entry = self.datasets.get(name)
        if entry is None:
            entry = self.datasets[str(name)] = _dataset_entry()
        return entry

    def _add_dataset_row(self, row: Mapping[str, Any], records: int) -> None:
        entry = self._dataset(row[DATASET])
        length = int(row["length"])
        entry["rows"] += 1
        entry["records"] += records
        entry["tokens"] += length
        entry["trained_tokens"] += int(row["num_loss_tokens"])
        entry["truncated"] += 1 if bool(row["truncated"]) else 0
        entry["lengths"].add(length)

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Add one shard row (a job row dict, or a row read back from a shard)."""
        if DATASET in row:
            first = int(row.get("row_of_record", 0) or 0) == 0
            self._add_dataset_row(row, int(row[DOCUMENTS_COLUMN]) if DOCUMENTS_COLUMN in row else (1 if first else 0))
        if self.figures is not None:
            self._add_task_row(row)
            return
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
        mismatches = row.get(PROMPT_MISMATCH_KEY)
        if mismatches:
            self._add_prompt_mismatch(row, mismatches)
        if first and row.get(PROMPT_MISMATCH_RECORD_KEY):
            counters["prompt_mismatch_records"] += 1
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
        if k and length >= k and self._starts_with_prefix(ids[:k]):
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
        if (len(kept) < FIRST_ROWS_KEPT or sort_key < kept[-1][0]) and all(key != sort_key for key, _ in kept):
            kept.append((sort_key, _sample_of(row, sort_key)))
            kept.sort(key=lambda item: item[0])
            del kept[FIRST_ROWS_KEPT:]

    def _add_prompt_mismatch(self, row: Mapping[str, Any], mismatches) -> None:
        counters = self.counters
        counters["prompt_mismatch_rows"] += 1
        counters["prompt_mismatch_turns"] += len(mismatches)
        for mismatch in mismatches:
            kind = str(mismatch["kind"])
            self.prompt_mismatch_kinds[kind] = self.prompt_mismatch_kinds.get(kind, 0) + 1
        source = str(row["source"])
        sort_key = row.get("sort_key") or row_sort_key(source, int(row["index"]))
        example = {"source": source, "index": int(row["index"]), **dict(mismatches[0])}
        self.prompt_mismatch_example = _min_keyed(self.prompt_mismatch_example, (sort_key, example))

    def _add_task_row(self, row: Mapping[str, Any]) -> None:
        """:meth:`add_row` for a task other than chat: the common counts and histograms, no template checks,
        and the task's figures."""
        self.figures.add_row(row)
        mismatches = row.get(PROMPT_MISMATCH_KEY)
        if mismatches:
            self._add_prompt_mismatch(row, mismatches)
        if row.get(PROMPT_MISMATCH_RECORD_KEY) and int(row.get("row_of_record", 0) or 0) == 0:
            self.counters["prompt_mismatch_records"] += 1
        length = int(row["length"])
        trained = int(row["num_loss_tokens"])
        truncated = bool(row["truncated"])
        fmt = figures_format(self.figures)
        source = str(row["source"])
        hists = self.hists
        hists["total_tokens"].add(length)
        hists["prompt_tokens"].add(max(length - trained, 0))
        hists["trained_tokens"].add(trained)
        hists["images"].add(0)
        hists["image_tokens"].add(0)
        hists["turns"].add(0)
        hists["trained_turns"].add(0)
        if length > 0:
            self.fraction.add(min(trained, length), length)
        first = int(row.get("row_of_record", 0) or 0) == 0
        records = int(row[DOCUMENTS_COLUMN]) if DOCUMENTS_COLUMN in row else (1 if first else 0)
        self.rows += 1
        self.records += records
        self.formats_written[fmt] = self.formats_written.get(fmt, 0) + records
        entry = self._source(source)
        entry["rows"] += 1
        entry["records"] += records
        entry["tokens"] += length
        entry["trained_tokens"] += trained
        entry["formats"][fmt] = entry["formats"].get(fmt, 0) + records
        if truncated:
            self.counters["truncated_rows"] += 1
            entry["truncated"] += 1
            self.truncated_tokens.add(int(row["truncated_tokens"]))
        # samples by a key the shard columns give back (the audit command has no sort_key): record, then row
        sort_key = f"{row_sort_key(source, int(row['index']))}:{int(row.get('row_of_record', 0) or 0):08d}"
        current = self.first_by_format.get(fmt)
        if current is None or sort_key < current[0]:
            self.first_by_format[fmt] = (sort_key, _sample_of(row, sort_key, self.figures))
        if truncated and (self.first_truncated is None or sort_key < self.first_truncated[0]):
            self.first_truncated = (sort_key, _sample_of(row, sort_key, self.figures))
        kept = self.first_rows
        # a key seen already (a repeated record's copies share it here) is kept once, as merge() keeps it
        if (len(kept) < FIRST_ROWS_KEPT or sort_key < kept[-1][0]) and all(key != sort_key for key, _ in kept):
            kept.append((sort_key, _sample_of(row, sort_key, self.figures)))
            kept.sort(key=lambda item: item[0])
            del kept[FIRST_ROWS_KEPT:]

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        """Add one rejection dict ``{reason, detail, source, index, record}``."""
        if self.figures is not None:
            self.figures.add_rejection(item)
        reason = str(item["reason"])
        source = str(item["source"])
        index = int(item["index"])
        detail = str(item.get("detail", ""))
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if DATASET in item:
            dataset = self._dataset(item[DATASET])
            dataset["rejected"] += 1
            dataset["rejected_by_reason"][reason] = dataset["rejected_by_reason"].get(reason, 0) + 1
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
        if self.figures is not None and other.figures is not None:
            self.figures.merge(other.figures)
        elif other.figures is not None:
            raise ValueError("cannot merge the audit of another task into a chat audit")
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
        for name, entry in getattr(other, "datasets", {}).items():
            if name in self.datasets:
                _merge_dataset(self.datasets[name], entry)
            else:
                self.datasets[name] = _dataset_entry()
                _merge_dataset(self.datasets[name], entry)
        merge_counts(self.formats_written, other.formats_written)
        merge_counts(self.formats_rejected, other.formats_rejected)
        merge_counts(self.reasons, other.reasons)
        merge_counts(self.counters, other.counters)
        merge_counts(self.prompt_mismatch_kinds, other.prompt_mismatch_kinds)
        self.prompt_mismatch_example = _min_keyed(self.prompt_mismatch_example, other.prompt_mismatch_example)
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
