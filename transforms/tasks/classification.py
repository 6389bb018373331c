"""Sequence classification (``AutoModelForSequenceClassification``): a text or a sentence pair and a
label -> one row of ``input_ids``, ``token_type_ids`` (where the tokenizer defines them) and ``labels``.

Records: ``{"text": ..., "label": ...}`` or a pair ``{"text": ..., "text_pair": ..., "label": ...}``.
Without ``--field-map`` the text is the first of ``text``, ``sentence1``, ``sentence`` present and the
pair the first of ``text_pair``, ``sentence2`` (GLUE's CSV columns), the label ``label``.

Labels (:class:`LabelSpace`, one per job, stored in the manifest):

* **single-label classification**: a class name (mapped through the label map: the sorted distinct
  names of the job's records, as ``run_glue.py`` sorts them, or the ``--labels`` order) or an integer
  class id (kept as given: 0 <= id < number of classes); the shard's ``labels`` is an int;
* **multi-label classification**: a list of class names, or a multi-hot list of numbers (one per
  class); the shard's ``labels`` is a float list (what ``BCEWithLogitsLoss`` takes);
* **regression**: a number (``"5.000"`` in a CSV cell is one); the shard's ``labels`` is a float.

The problem type is inferred from the job's labels (:func:`label_space_from_values`: any list ->
multi-label; all numbers and one with a decimal point or exponent -> regression; all integers -> class
ids; otherwise class names) unless given. A label outside the map given with ``--labels`` is rejected
(``unmapped_label``); a missing label or one of another kind is ``invalid_label``.

Tokenization is ``transformers``' ``tokenizer(text, text_pair, truncation=strategy, max_length=N)``:
the pieces are encoded without special tokens, then the Rust tokenizer's own post-processing truncates
the pair (``longest_first``, ``only_first``, ``only_second``) and adds the special tokens and
``token_type_ids`` (:class:`PairEncoder`). A single text is cut to ``max_length`` whatever the strategy;
a pair that the strategy cannot fit (``only_first`` with a first text too short to absorb the excess)
is rejected as ``too_long``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.errors import RecordRejected
from transforms.reading.delimited import delimited_file_reader
from transforms.tasks.base import (
    TaskFigures,
    TaskFlag,
    TaskOptions,
    check_choice,
    content_digest,
    normalized_text,
)
from transforms.tasks.encoder_heads import (
    LABEL_FLAGS,
    EncoderHeadTask,
    Failed,
    check_labels_option,
    encoder_row,
    field_value,
    own_backend,
    special_tokens_added,
    top_counts,
    truncation_side,
    uses_token_type_ids,
)

TEXT_FIELDS = ("text", "sentence1", "sentence")
PAIR_FIELDS = ("text_pair", "sentence2")
LABEL_FIELDS = ("label",)

SINGLE_LABEL = "single_label_classification"   # the names of PretrainedConfig.problem_type
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
PAIR_TRUNCATION = ("longest_first", "only_first", "only_second")

_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ClassificationExample:
    """A record's texts and its label as written (``text_pair`` ``None`` for a single text)."""

    text: str
    text_pair: str | None
    label: Any


def parse_classification(record: Any, field_map: Mapping[str, str] | None = None) -> ClassificationExample:
    """The example of one record (raises :class:`RecordRejected`: ``invalid_content`` for a missing or
    non-string text, ``invalid_label`` for a missing label)."""
    field_map = field_map or {}
    if not isinstance(record, Mapping):
        raise RecordRejected(errors.INVALID_CONTENT, "a classification record must be an object")
    name, text = field_value(record, "text", TEXT_FIELDS, field_map)
    if name is None:
        wanted = field_map.get("text") or " / ".join(TEXT_FIELDS)
        raise RecordRejected(errors.INVALID_CONTENT, f"the record has no text field ({wanted})")
    if not isinstance(text, str):
        raise RecordRejected(errors.INVALID_CONTENT, f"field {name!r} must be a string")
    pair_name, pair = field_value(record, "text_pair", PAIR_FIELDS, field_map)
    if pair_name is not None and pair is not None and not isinstance(pair, str):
        raise RecordRejected(errors.INVALID_CONTENT, f"field {pair_name!r} must be a string")
    label_name, label = field_value(record, "label", LABEL_FIELDS, field_map)
    if label_name is None or label is None:
        raise RecordRejected(errors.INVALID_LABEL, f"the record has no label ({field_map.get('label', 'label')})")
    return ClassificationExample(text=text, text_pair=pair, label=label)


# -- labels -----------------------------------------------------------------------------------------
def _number(value: Any) -> tuple[str, Any]:
    """``("int", n)``, ``("float", x)`` or ``("name", text)`` / ``("invalid", why)`` for one label value."""
    if isinstance(value, bool) or value is None:
        return "invalid", f"a label cannot be {value!r}"
    if isinstance(value, int):
        return "int", value
    if isinstance(value, float):
        return ("float", value) if math.isfinite(value) else ("invalid", f"a label cannot be {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if _INT.fullmatch(text):
            return "int", int(text)
        if any(c.isdigit() for c in text):
            try:
                number = float(text)
            except ValueError:
                return "name", value
            if math.isfinite(number):
                return "float", number
        return "name", value
    if isinstance(value, (list, tuple)):
        return "list", value
    return "invalid", f"a label cannot be a {type(value).__name__}"


@dataclass(frozen=True)
class LabelSpace:
    """The job's labels: the problem type, the class names in id order (``()`` when labels are class
    ids or scores) and the number of labels (the model's ``num_labels``; 1 for regression)."""

    problem_type: str
    names: tuple[str, ...] = ()
    num_labels: int = 1
    _ids: Mapping[str, int] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, not {self.problem_type!r}")
        if self.names and len(set(self.names)) != len(self.names):
            raise ValueError("label names must be distinct")
        if self.names and self.num_labels != len(self.names):
            raise ValueError("num_labels must equal the number of names")
        if self.num_labels < 1:
            raise ValueError("a label space needs at least one label")
        object.__setattr__(self, "_ids", {name: i for i, name in enumerate(self.names)})

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``labels`` entry (``id2label``/``label2id`` as a model config writes them)."""
        entry: dict[str, Any] = {"problem_type": self.problem_type, "num_labels": self.num_labels}
        if self.names:
            entry["id2label"] = {str(i): name for i, name in enumerate(self.names)}
            entry["label2id"] = {name: i for i, name in enumerate(self.names)}
        return entry

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> "LabelSpace":
        names = ()
        if entry.get("id2label"):
            names = tuple(entry["id2label"][str(i)] for i in range(len(entry["id2label"])))
        return cls(problem_type=entry["problem_type"], names=names, num_labels=int(entry["num_labels"]))

    def _class_id(self, value: Any) -> int:
        key = value if isinstance(value, str) else str(value) if isinstance(value, int) and self._ids else None
        if key is not None and key in self._ids:
            return self._ids[key]
        kind, number = _number(value)
        if kind == "int":
            if 0 <= number < self.num_labels:
                return number
            raise RecordRejected(errors.UNMAPPED_LABEL, f"class id {number} is outside 0..{self.num_labels - 1}")
        if kind == "name":
            known = ", ".join(map(repr, self.names[:8])) + (" ..." if len(self.names) > 8 else "")
            raise RecordRejected(errors.UNMAPPED_LABEL, f"label {value!r} is not in the label map ({known})")
        raise RecordRejected(errors.INVALID_LABEL, f"label {value!r} is not a class name or id")

    def encode(self, value: Any) -> int | float | np.ndarray:
        """The shard label of a record's label: an int (single-label), a float (regression) or a float32
        array of ``num_labels`` (multi-label). Raises :class:`RecordRejected`."""
        if self.problem_type == REGRESSION:
            kind, number = _number(value)
            if kind not in ("int", "float"):
                raise RecordRejected(errors.INVALID_LABEL, f"a regression label must be a number, not {value!r}")
            return float(number)
        if self.problem_type == SINGLE_LABEL:
            if isinstance(value, (list, tuple)):
                raise RecordRejected(errors.INVALID_LABEL, "a single-label job's label cannot be a list")
            return self._class_id(value)
        if not isinstance(value, (list, tuple)):
            raise RecordRejected(errors.INVALID_LABEL, f"a multi-label label must be a list, not {value!r}")
        hot = np.zeros(self.num_labels, dtype=np.float32)
        if value and all(isinstance(v, str) for v in value):
            for name in value:
                hot[self._class_id(name)] = 1.0
            return hot
        kinds = [_number(v) for v in value]
        if len(value) != self.num_labels or any(k not in ("int", "float") for k, _ in kinds):
            raise RecordRejected(errors.INVALID_LABEL, f"a multi-hot label must be {self.num_labels} numbers "
                                 "(or a list of class names)")
        hot[:] = [n for _, n in kinds]
        return hot


def label_space_from_values(values: Iterable[Any], *, labels: Sequence[str] | None = None,
                            problem_type: str | None = None) -> LabelSpace:
    """The job's :class:`LabelSpace` from every record's label (the scan), deterministic in any order.

    Args:
        values: the labels as written (``None`` for a record without one: ignored here, rejected later).
        labels: ``--labels``: the class names in id order (the map is then fixed, not scanned).
        problem_type: one of :data:`PROBLEM_TYPES`; ``None`` infers it (see the module).

    Raises ``ValueError`` when no label can be read or the labels cannot make one space.
    """
    kinds: set[str] = set()
    names: set[str] = set()
    max_id = -1
    list_lengths: set[int] = set()
    for value in values:
        kind, number = _number(value)
        if kind == "list":
            for item in number:
                item_kind, item_value = _number(item)
                if item_kind == "name":
                    names.add(item_value)
                    kinds.add("list_names")
                elif item_kind in ("int", "float"):
                    kinds.add("list_numbers")
            if not all(isinstance(item, str) for item in number):
                list_lengths.add(len(number))
            kinds.add("list")
        elif kind == "name":
            names.add(number)
            kinds.add("name")
        elif kind == "int":
            names.add(str(value).strip() if isinstance(value, str) else str(number))
            max_id = max(max_id, number)
            kinds.add("int")
        elif kind == "float":
            kinds.add("float")
    if problem_type is None:
        if "list" in kinds:
            problem_type = MULTI_LABEL
        elif kinds and kinds <= {"int", "float"} and "float" in kinds and labels is None:
            problem_type = REGRESSION
        elif kinds or labels:
            problem_type = SINGLE_LABEL
        else:
            raise ValueError("no record has a label: cannot tell the labels (give --labels and --problem-type)")
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, not {problem_type!r}")
    if problem_type == REGRESSION:
        return LabelSpace(problem_type=REGRESSION, num_labels=1)
    if labels is not None:
        labels = tuple(labels)
        if not labels:
            raise ValueError("--labels names no class")
        return LabelSpace(problem_type=problem_type, names=labels, num_labels=len(labels))
    if problem_type == MULTI_LABEL:
        if "list_names" in kinds:
            ordered = tuple(sorted(names))
            if list_lengths - {len(ordered)}:
                raise ValueError("multi-hot labels must have one number per class name")
            return LabelSpace(problem_type=MULTI_LABEL, names=ordered, num_labels=len(ordered))
        if len(list_lengths) != 1 or not next(iter(list_lengths)):
            raise ValueError("multi-hot labels must all have the same, non-zero length")
        return LabelSpace(problem_type=MULTI_LABEL, num_labels=next(iter(list_lengths)))
    if "name" in kinds or not kinds <= {"int"}:
        if "float" in kinds:
            raise ValueError("labels mix class names and non-integer numbers")
        return LabelSpace(problem_type=SINGLE_LABEL, names=tuple(sorted(names)), num_labels=len(names))
    if max_id < 0:
        raise ValueError("integer class ids must be >= 0")
    return LabelSpace(problem_type=SINGLE_LABEL, num_labels=max_id + 1)


# -- tokenization -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedText:
    """A record's encoding (special tokens added, truncated) and its length before truncation."""

    encoding: Any
    full_length: int


class PairEncoder:
    """Encodes ``(text, text_pair or None)`` items in one batch call, as ``transformers`` does with
    ``tokenizer(texts, pairs, truncation=strategy, max_length=max_length)``.

    ``encode`` never raises for one item: an item that cannot fit is a :class:`Failed` (``too_long``).
    """

    def __init__(self, tokenizer, *, max_length: int, truncation: str = "longest_first", side: str | None = None):
        if truncation not in PAIR_TRUNCATION:
            raise ValueError(f"truncation must be one of {', '.join(PAIR_TRUNCATION)}, not {truncation!r}")
        self.max_length = max_length
        self.truncation = truncation
        self.side = side or truncation_side(tokenizer)
        self.added_single = special_tokens_added(tokenizer, pair=False)
        self.added_pair = special_tokens_added(tokenizer, pair=True)
        if max_length <= self.added_pair:
            raise ValueError(f"max_length {max_length} leaves no room for text after {self.added_pair} special tokens")
        self.token_type_ids = uses_token_type_ids(tokenizer)
        self.backend = own_backend(tokenizer)
        self.pair_backend = own_backend(tokenizer)
        self.pair_backend.enable_truncation(max_length, stride=0, strategy=truncation, direction=self.side)

    def encode(self, items: Sequence[tuple[str, str | None]]) -> list[EncodedText | Failed]:
        texts = [text for text, _ in items] + [pair for _, pair in items if pair is not None]
        pieces = self.backend.encode_batch(texts, add_special_tokens=False) if texts else []
        seconds = iter(pieces[len(items):])
        out: list[EncodedText | Failed] = []
        for (_, pair), first in zip(items, pieces):
            if pair is None:
                full = len(first.ids) + self.added_single
                if full > self.max_length:
                    first.truncate(self.max_length - self.added_single, 0, self.side)
                out.append(EncodedText(self.backend.post_process(first, None, True), full))
                continue
            second = next(seconds)
            full = len(first.ids) + len(second.ids) + self.added_pair
            try:
                encoding = self.pair_backend.post_process(first, second, True)
            except Exception as exc:  # noqa: BLE001 - the Rust tokenizer says why the pair cannot fit
                out.append(Failed(errors.TOO_LONG, f"the pair ({len(first.ids)} + {len(second.ids)} tokens) cannot "
                                  f"be cut to {self.max_length} tokens with --truncation {self.truncation}: {exc}"))
                continue
            out.append(EncodedText(encoding, full))
        return out


def classification_columns(encoded: EncodedText, label: int | float | np.ndarray, *,
                           token_type_ids: bool) -> dict[str, Any]:
    """The task columns of one row: ``input_ids`` (int32), ``token_type_ids`` (int8, only where the
    tokenizer defines them), ``labels`` (the encoded label), ``length``, ``truncated_tokens``."""
    encoding = encoded.encoding
    input_ids = np.asarray(encoding.ids, dtype=np.int32)
    row: dict[str, Any] = {"input_ids": input_ids}
    if token_type_ids:
        row["token_type_ids"] = np.asarray(encoding.type_ids, dtype=np.int8)
    row["labels"] = label
    row["length"] = len(input_ids)
    row["truncated_tokens"] = encoded.full_length - len(input_ids)
    return row


# -- audit -------------------------------------------------------------------------------------------
class ClassificationFigures(TaskFigures):
    """Audit of classification rows: class balance (rows per class; per class and labels per row for
    multi-label; range and a histogram rounded to one decimal for regression), truncated rows, and the
    unmapped labels (values of ``unmapped_label`` rejections, with counts)."""

    def __init__(self, label_space, field_map: Mapping[str, str] | None = None):
        self.space = label_space
        self.field_map = dict(field_map or {})
        self.rows = 0
        self.truncated = 0
        self.classes: Counter = Counter()
        self.labels_per_row: Counter = Counter()
        self.low = math.inf
        self.high = -math.inf
        self.rounded: Counter = Counter()
        self.unmapped: Counter = Counter()

    def _name(self, class_id: int) -> str:
        return self.space.names[class_id] if self.space.names else str(class_id)

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        self.truncated += int(row.get("truncated_tokens", 0) > 0)
        label = row["labels"]
        if self.space.problem_type == REGRESSION:
            value = float(label)
            self.low, self.high = min(self.low, value), max(self.high, value)
            self.rounded[f"{round(value, 1):.1f}"] += 1
        elif self.space.problem_type == MULTI_LABEL:
            hot = np.flatnonzero(np.asarray(label) > 0)
            self.labels_per_row[str(len(hot))] += 1
            for class_id in hot:
                self.classes[self._name(int(class_id))] += 1
        else:
            self.classes[self._name(int(label))] += 1

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        if item.get("reason") != errors.UNMAPPED_LABEL:
            return
        try:
            label = parse_classification(item.get("record"), self.field_map).label
        except RecordRejected:
            return
        for value in label if isinstance(label, (list, tuple)) else [label]:
            try:
                self.space.encode([value] if isinstance(label, (list, tuple)) else value)
            except RecordRejected:
                self.unmapped[str(value)] += 1

    def merge(self, other: "ClassificationFigures") -> "ClassificationFigures":
        self.rows += other.rows
        self.truncated += other.truncated
        for mine, theirs in ((self.classes, other.classes), (self.labels_per_row, other.labels_per_row),
                             (self.rounded, other.rounded), (self.unmapped, other.unmapped)):
            mine.update(theirs)
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        return self

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"problem_type": self.space.problem_type, "rows": self.rows,
                               "truncated_rows": self.truncated}
        if self.space.problem_type == REGRESSION:
            out["label_min"] = None if not self.rows else self.low
            out["label_max"] = None if not self.rows else self.high
            out["label_histogram"] = dict(sorted(self.rounded.items(), key=lambda kv: float(kv[0])))
        else:
            names = list(self.space.names) or [str(i) for i in range(self.space.num_labels)]
            out["class_balance"] = {name: self.classes.get(name, 0) for name in names}
            if self.space.problem_type == MULTI_LABEL:
                out["labels_per_row"] = dict(sorted(self.labels_per_row.items(), key=lambda kv: int(kv[0])))
        out["unmapped_labels"] = top_counts(self.unmapped)
        out["unmapped_label_records"] = sum(self.unmapped.values())
        return out

    def sample_view(self, row: Mapping[str, Any]):
        """The tokens, none marked trained (the label belongs to the whole sequence)."""
        ids = np.asarray(row["input_ids"])
        return ids, np.full(len(ids), -100)

    def summary(self) -> dict[str, Any]:
        out = self.to_json()
        out.pop("label_histogram", None)
        out.pop("unmapped_labels", None)
        return out


# -- the task ----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ClassificationOptions(TaskOptions):
    """Options of ``--task classification``.

    Attributes:
        labels: the class names in id order (``--labels``); when not given, the job's label scan fills them
            (class names) or leaves them ``None`` (class ids, scores, multi-hot lists).
        problem_type: one of :data:`PROBLEM_TYPES` (``--problem-type``); inferred by the scan when not given
            (``--labels`` alone means single-label).
        num_labels: the model's ``num_labels`` (``--num-labels``; from ``--labels`` or the scan otherwise).
        pair_truncation: ``longest_first``, ``only_first`` or ``only_second`` (``--pair-truncation``).
    """

    FIELDS = ("text", "text_pair", "label")

    labels: tuple[str, ...] | None = None
    problem_type: str | None = None
    num_labels: int | None = None
    pair_truncation: str = "longest_first"

    def validate(self) -> None:
        check_labels_option(self)
        if self.problem_type is not None:
            check_choice("--problem-type", self.problem_type, PROBLEM_TYPES)
        elif self.labels is not None:
            object.__setattr__(self, "problem_type", SINGLE_LABEL)
        if self.problem_type == REGRESSION:
            if self.num_labels not in (None, 1) or self.labels is not None:
                raise ValueError("--problem-type regression has one label and no --labels")
            object.__setattr__(self, "num_labels", 1)
        check_choice("--pair-truncation", self.pair_truncation, PAIR_TRUNCATION)

    @property
    def resolved(self) -> bool:
        """Whether the label space is known (else the job scans the records' labels at launch)."""
        return self.problem_type is not None and self.num_labels is not None

    def label_space(self) -> LabelSpace:
        if not self.resolved:
            raise ValueError("the label space is not known yet (the job scans the labels at launch)")
        return LabelSpace(problem_type=self.problem_type, names=self.labels or (), num_labels=self.num_labels)


CLASSIFICATION_FLAGS = LABEL_FLAGS + (
    TaskFlag("problem-type", "problem_type", choices=PROBLEM_TYPES,
             help="classification: single_label_classification, multi_label_classification or regression "
                  "(default: inferred from the labels)"),
    TaskFlag("pair-truncation", "pair_truncation", choices=PAIR_TRUNCATION,
             help="classification: how a sentence pair is cut to --max-length: longest_first (default), "
                  "only_first, only_second (transformers' truncation strategies)"),
)


@dataclass(frozen=True)
class PendingExample:
    raw: Any
    example: ClassificationExample
    label: Any


class ClassificationTask(EncoderHeadTask):
    """Sequence-classification rows (see the module docstring)."""

    name = "classification"
    options_class = ClassificationOptions
    flags = CLASSIFICATION_FLAGS
    default_max_length = 128  # run_glue.py's --max_seq_length
    pair_input = True

    @classmethod
    def parse(cls, value, options: ClassificationOptions, format_options) -> ClassificationExample:
        return parse_classification(value, options.field_map)

    @classmethod
    def content_key(cls, example: ClassificationExample, options) -> str:
        pair = None if example.text_pair is None else normalized_text(example.text_pair)
        return content_digest([normalized_text(example.text), pair, example.label])

    @classmethod
    def file_layout(cls, path: str, options):
        return delimited_file_reader(path)

    @classmethod
    def needs_scan(cls, options: ClassificationOptions) -> bool:
        return not options.resolved

    @classmethod
    def resolve_options(cls, options: ClassificationOptions, examples) -> ClassificationOptions:
        space = label_space_from_values((e.label for e in examples), labels=options.labels,
                                        problem_type=options.problem_type)
        return dataclasses.replace(options, labels=space.names or None, problem_type=space.problem_type,
                                   num_labels=options.num_labels or space.num_labels)

    @classmethod
    def shard_fields(cls, options: ClassificationOptions, tokenize_options) -> tuple:
        label = {SINGLE_LABEL: pa.int32(), REGRESSION: pa.float32()}.get(options.problem_type,
                                                                          pa.list_(pa.float32()))
        return (pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
                pa.field("labels", label, nullable=False))

    @classmethod
    def figures(cls, options: ClassificationOptions) -> ClassificationFigures:
        return ClassificationFigures(options.label_space(), options.field_map)

    @classmethod
    def head_manifest(cls, options: ClassificationOptions) -> dict[str, Any]:
        return options.label_space().to_manifest()

    def __init__(self, *, tokenizer, options, task_options: ClassificationOptions | None = None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.space = self.task_options.label_space()
        self.encoder = PairEncoder(tokenizer, max_length=self.max_length, truncation=self.task_options.pair_truncation,
                                   side=self.side)

    def prepare(self, raw, example: ClassificationExample) -> list[PendingExample]:
        return [PendingExample(raw, example, self.space.encode(example.label))]

    def texts(self, pending: PendingExample):
        return ((pending.example.text, pending.example.text_pair),)

    def finish(self, pending: PendingExample, encoded) -> dict[str, Any]:
        if isinstance(encoded, Failed):
            encoded.raise_()
        self.check_length(encoded)
        columns = classification_columns(encoded, pending.label, token_type_ids=True)
        columns = {key: columns[key] for key in ("input_ids", "token_type_ids", "labels")}
        return encoder_row(pending.raw, columns, content_hash=self.content_key(pending.example, self.task_options),
                           num_loss_tokens=1, full_length=encoded.full_length)
