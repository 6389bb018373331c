"""Extractive question answering (``AutoModelForQuestionAnswering``): a question, a context and its
answers -> one row per window of the context (a *feature*).

Records: SQuAD's flat layout ``{"id", "question", "context", "answers": {"text": [...],
"answer_start": [...]}}`` (an unanswerable v2 question has empty lists); nested SQuAD documents are
flattened by :mod:`transforms.reading.squad`. Other field names with ``--field-map``.

Features (``run_qa.py``'s ``prepare_train_features``): the question (leading whitespace stripped, as
``run_qa.py`` does) and the context are encoded as a pair, question first (context first for a
tokenizer that pads on the left); the context is cut into windows of at most ``max_length`` tokens
overlapping by ``doc_stride`` tokens (the Rust tokenizer's own overflow, ``truncation="only_second"``).
Each feature has ``start_positions``/``end_positions``: the tokens of the first answer's first and last
characters when the window holds the whole answer, else the CLS token's index (also for unanswerable
questions); ``offset_mapping`` (per token ``[start, end)`` characters of the context, null on question
and special tokens) and ``example_id`` map predictions back to the text.

The question is never truncated: a question that leaves no room for context, or leaves no more room
than ``doc_stride`` for a context that needs several windows, is rejected (``question_too_long``). An answer whose
``answer_start``/``text`` do not match the context (``context[start:start + len(text)] != text``) is
rejected (``answer_not_in_context``): its positions would train on the wrong tokens.
"""
from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.errors import RecordRejected
from transforms.nested_lists import NullableLists
from transforms.reading import iter_records
from transforms.reading.squad import expand_squad
from transforms.shard_format import record_id_of
from transforms.tasks.base import TaskFigures, TaskFlag, TaskOptions, content_digest, normalized_text
from transforms.tasks.encoder_heads import (
    EncoderHeadTask,
    Failed,
    encoder_row,
    field_value,
    own_backend,
    special_tokens_added,
    truncation_side,
    uses_token_type_ids,
)

ID_FIELDS = ("id",)
QUESTION_FIELDS = ("question",)
CONTEXT_FIELDS = ("context",)
ANSWER_FIELDS = ("answers",)


@dataclass(frozen=True)
class QAExample:
    """A record's question (leading whitespace stripped), context and answers (``answer_start`` in
    characters of the context); ``example_id`` is the record's ``id`` or ``None``."""

    example_id: str | None
    question: str
    context: str
    answer_starts: tuple[int, ...]
    answer_texts: tuple[str, ...]

    @property
    def answerable(self) -> bool:
        return bool(self.answer_texts)


def parse_qa(record: Any, field_map: Mapping[str, str] | None = None) -> QAExample:
    """The example of one record (raises :class:`RecordRejected`)."""
    field_map = field_map or {}
    if not isinstance(record, Mapping):
        raise RecordRejected(errors.INVALID_CONTENT, "a QA record must be an object")
    _, question = field_value(record, "question", QUESTION_FIELDS, field_map)
    _, context = field_value(record, "context", CONTEXT_FIELDS, field_map)
    if not isinstance(question, str) or not question.strip():
        raise RecordRejected(errors.INVALID_CONTENT, "the record needs a non-empty question string")
    if not isinstance(context, str) or not context.strip():
        raise RecordRejected(errors.INVALID_CONTENT, "the record needs a non-empty context string")
    _, example_id = field_value(record, "id", ID_FIELDS, field_map)
    answers_name, answers = field_value(record, "answers", ANSWER_FIELDS, field_map)
    if answers_name is None:
        raise RecordRejected(errors.INVALID_LABEL, "the record has no answers ({\"text\": [...], \"answer_start\": "
                             "[...]}, empty lists for an unanswerable question)")
    if isinstance(answers, list):  # the nested layout's list of {"text", "answer_start"}
        if not all(isinstance(a, Mapping) for a in answers):
            raise RecordRejected(errors.INVALID_LABEL, "answers must be objects with text and answer_start")
        answers = {"text": [a.get("text") for a in answers], "answer_start": [a.get("answer_start") for a in answers]}
    if not isinstance(answers, Mapping):
        raise RecordRejected(errors.INVALID_LABEL, "answers must be {\"text\": [...], \"answer_start\": [...]}")
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise RecordRejected(errors.INVALID_LABEL, "answers.text and answers.answer_start must be lists of one length")
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text or isinstance(start, bool) or not isinstance(start, int):
            raise RecordRejected(errors.INVALID_LABEL, f"answer {text!r} at {start!r}: a non-empty text and an "
                                 "integer start are needed")
        if start < 0 or context[start:start + len(text)] != text:
            found = context[max(start, 0):max(start, 0) + len(text)]
            raise RecordRejected(errors.ANSWER_NOT_IN_CONTEXT, f"answer {text!r} is not at character {start} of "
                                 f"the context (found {found!r})")
    return QAExample(example_id=None if example_id is None else str(example_id), question=question.lstrip(),
                     context=context, answer_starts=tuple(starts), answer_texts=tuple(texts))


@dataclass(frozen=True)
class EncodedQA:
    """A record's features (one Rust encoding per window, in order)."""

    features: tuple[Any, ...]


class QAEncoder:
    """Encodes ``(question, context)`` items as windowed pairs in one batch call, as ``transformers``
    does with ``tokenizer(questions, contexts, truncation="only_second", max_length=max_length,
    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)``.

    ``encode`` never raises for one item: a question too long for the window is a :class:`Failed`.

    A batch is first encoded in one call; a question too long for its window (no room for the context, or
    no more than ``doc_stride`` tokens for a context that needs windows) makes the Rust tokenizer fail the
    whole call, and the batch is then encoded again question by question (:meth:`encode_checked`): the
    questions' tokens counted first, the items that fit in one call, the tight ones one at a time. Both give
    the same encodings; once a batch has needed the second way, every later one takes it directly.
    """

    def __init__(self, tokenizer, *, max_length: int, doc_stride: int):
        if doc_stride < 0:
            raise ValueError("doc_stride must be >= 0")
        self.max_length = max_length
        self.doc_stride = doc_stride
        self.question_first = getattr(tokenizer, "padding_side", "right") == "right"
        self.added_pair = special_tokens_added(tokenizer, pair=True)
        if max_length <= self.added_pair + doc_stride:
            raise ValueError(f"max_length {max_length} must exceed the {self.added_pair} special tokens plus "
                             f"doc_stride {doc_stride}")
        self.token_type_ids = uses_token_type_ids(tokenizer)
        self.context_sequence = 1 if self.question_first else 0
        self.cls_token_id = getattr(tokenizer, "cls_token_id", None)
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        self.backend = own_backend(tokenizer)
        self.windowed = own_backend(tokenizer)
        self.windowed.enable_truncation(max_length, stride=doc_stride,
                                        strategy="only_second" if self.question_first else "only_first",
                                        direction=truncation_side(tokenizer))
        self.check_questions = False  # True once a batch needed encode_checked

    def encode(self, items: Sequence[tuple[str, str]]) -> list[EncodedQA | Failed]:
        if not items:
            return []
        if not self.check_questions:
            try:
                windowed = self.windowed.encode_batch([self._pair(item) for item in items])
            except BaseException as exc:  # noqa: BLE001 - the Rust tokenizer panics on a stride >= the room
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self.check_questions = True
            else:
                question = 1 - self.context_sequence
                counts = [encoding.sequence_ids.count(question) for encoding in windowed]
                if all(self.max_length - self.added_pair - count > 0 for count in counts):
                    return [EncodedQA(features=(encoding, *encoding.overflowing)) for encoding in windowed]
        return self.encode_checked(items)

    def encode_checked(self, items: Sequence[tuple[str, str]]) -> list[EncodedQA | Failed]:
        """:meth:`encode` question by question: the questions' tokens are counted first, so that one too long
        for its window fails alone."""
        questions = self.backend.encode_batch([q for q, _ in items], add_special_tokens=False) if items else []
        out: list[EncodedQA | Failed | None] = [None] * len(items)
        batch, tight = [], []
        for k, encoding in enumerate(questions):
            room = self.max_length - self.added_pair - len(encoding.ids)
            if room <= 0:
                out[k] = Failed(errors.QUESTION_TOO_LONG, f"the question has {len(encoding.ids)} tokens: with "
                                f"{self.added_pair} special tokens it leaves no room in --max-length {self.max_length} "
                                "for the context (the question is never truncated)")
            else:
                (batch if room > self.doc_stride else tight).append(k)
        windowed = self.windowed.encode_batch([self._pair(items[k]) for k in batch]) if batch else []
        for k, encoding in zip(batch, windowed):
            out[k] = EncodedQA(features=(encoding, *encoding.overflowing))
        for k in tight:  # room for the context, but not more than --doc-stride: fine unless it needs windows
            try:
                encoding = self.windowed.encode(*self._pair(items[k]))
            except BaseException as exc:  # noqa: BLE001 - the Rust tokenizer panics on a stride >= the room
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                out[k] = Failed(errors.QUESTION_TOO_LONG, f"the question leaves no more room for the context than "
                                f"--doc-stride {self.doc_stride} tokens, and the context needs several windows")
                continue
            out[k] = EncodedQA(features=(encoding, *encoding.overflowing))
        return out

    def _pair(self, item: tuple[str, str]) -> tuple[str, str]:
        return item if self.question_first else (item[1], item[0])

    def cls_index(self, ids: Sequence[int]) -> int:
        """The CLS token's index (``run_qa.py``: CLS, else BOS, else 0)."""
        for token in (self.cls_token_id, self.bos_token_id):
            if token is not None and token in ids:
                return list(ids).index(token)
        return 0


def answer_positions(offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None], *, context_sequence: int,
                     start_char: int, end_char: int, cls_index: int) -> tuple[int, int, bool]:
    """``(start_position, end_position, inside)``: the tokens holding ``[start_char, end_char)`` of the
    context when the window holds all of it, else ``(cls_index, cls_index, False)``.

    ``run_qa.py``'s start scan, one difference: it stops at the window's last context token. The script
    runs on into the closing special token (whose offsets are ``(0, 0)``) and the padding, so an answer
    that starts on a window's last context token gets the last position of the row as its start."""
    first = 0
    while sequence_ids[first] != context_sequence:
        first += 1
    last = len(sequence_ids) - 1
    while sequence_ids[last] != context_sequence:
        last -= 1
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index, False
    context_end = last
    while first <= context_end and offsets[first][0] <= start_char:  # run_qa.py scans on past the context
        first += 1
    while offsets[last][1] >= end_char:
        last -= 1
    return first - 1, last + 1, True


def answer_positions_of(matrix: np.ndarray, in_context: np.ndarray, *, start_char: int, end_char: int,
                        cls_index: int) -> tuple[int, int, bool] | None:
    """:func:`answer_positions` with its scans done by numpy, over an :func:`offset_matrix` and the
    :func:`in_sequence` mask of the context: the same result, or ``None`` where :func:`answer_positions`
    would scan off the array (no context token, an end scan past the first token): call it then."""
    context = np.flatnonzero(in_context)
    if not len(context):
        return None
    first, last = int(context[0]), int(context[-1])
    if not (matrix[first, 0] <= start_char and matrix[last, 1] >= end_char):
        return cls_index, cls_index, False
    after = matrix[first:last + 1, 0] > start_char  # the start scan stops at the first token starting after it
    k = int(after.argmax())
    start = first + k - 1 if after[k] else last
    before = np.flatnonzero(matrix[:last + 1, 1] < end_char)  # the end scan stops at the last token ending before
    if not len(before):
        return None
    return start, int(before[-1]) + 1, True


def offset_matrix(offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """A Rust encoding's ``offsets`` (``(start, end)`` per token) as an int32 array ``[tokens, 2]``."""
    return np.fromiter(chain.from_iterable(offsets), dtype=np.int32, count=2 * len(offsets)).reshape(-1, 2)


def in_sequence(sequence_ids: Sequence[int | None], sequence: int) -> np.ndarray:
    """bool ``[tokens]``: the tokens of ``sequence`` (``sequence_ids[k] == sequence``)."""
    mask = np.zeros(len(sequence_ids), dtype=np.bool_)
    count = sequence_ids.count(sequence)
    if count:
        first = sequence_ids.index(sequence)
        if sequence not in sequence_ids[first + count:]:  # so all of them are in [first, first + count)
            mask[first:first + count] = True  # one run of tokens, as the Rust encodings' sequence ranges give
        else:
            mask[:] = np.fromiter(map(operator.eq, sequence_ids, repeat(sequence)), dtype=np.bool_,
                                  count=len(sequence_ids))
    return mask


def qa_feature_columns(encoder: QAEncoder, encoded: EncodedQA, example: QAExample, example_id: str) -> list[dict]:
    """The task columns of each feature of one record: ``input_ids`` (int32), ``token_type_ids`` (int8,
    where defined), ``start_positions``/``end_positions`` (int32), ``offset_mapping`` (per token a
    ``[start, end]`` pair of context characters, ``None`` elsewhere: a
    :class:`transforms.nested_lists.NullableLists`), ``example_id``, ``answer_in_window``
    (this window holds the answer), ``feature_index``, ``num_features``, ``answerable`` and
    ``answer_windows`` (the example's: how many of its windows hold the answer; 0 for an answerable
    example means its answer was lost to windowing), ``length``."""
    rows = []
    for number, encoding in enumerate(encoded.features):
        ids = encoding.ids
        sequence_ids = encoding.sequence_ids
        offsets = encoding.offsets  # a new list of tuples at each access
        matrix, in_context = offset_matrix(offsets), in_sequence(sequence_ids, encoder.context_sequence)
        cls = encoder.cls_index(ids)
        if example.answerable:
            span = dict(start_char=example.answer_starts[0],
                        end_char=example.answer_starts[0] + len(example.answer_texts[0]), cls_index=cls)
            found = answer_positions_of(matrix, in_context, **span)
            start, end, inside = found or answer_positions(offsets, sequence_ids,
                                                           context_sequence=encoder.context_sequence, **span)
        else:
            start, end, inside = cls, cls, False
        row: dict[str, Any] = {"input_ids": np.asarray(ids, dtype=np.int32)}
        if encoder.token_type_ids:
            row["token_type_ids"] = np.asarray(encoding.type_ids, dtype=np.int8)
        row["start_positions"] = int(start)
        row["end_positions"] = int(end)
        row["offset_mapping"] = NullableLists.rows_of(matrix, in_context)
        row["example_id"] = example_id
        row["answer_in_window"] = bool(inside)
        row["feature_index"] = number
        row["num_features"] = len(encoded.features)
        row["answerable"] = example.answerable
        row["length"] = len(ids)
        rows.append(row)
    windows = sum(row["answer_in_window"] for row in rows)
    for row in rows:
        row["answer_windows"] = windows
    return rows


# -- audit -------------------------------------------------------------------------------------------
class QAFigures(TaskFigures):
    """Audit of QA features: features per example, answerable and unanswerable examples, answers lost to
    windowing (answerable examples none of whose windows holds the answer), features whose target is CLS."""

    def __init__(self):
        self.features = 0
        self.cls_targets = 0
        self.per_example: Counter = Counter()
        self.answerable = 0
        self.unanswerable = 0
        self.lost = 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.features += 1
        self.cls_targets += int(not row["answer_in_window"])
        if row["feature_index"] != 0:
            return
        self.per_example[str(int(row["num_features"]))] += 1
        if row["answerable"]:
            self.answerable += 1
            self.lost += int(row["answer_windows"] == 0)
        else:
            self.unanswerable += 1

    def merge(self, other: "QAFigures") -> "QAFigures":
        for name in ("features", "cls_targets", "answerable", "unanswerable", "lost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.per_example.update(other.per_example)
        return self

    def to_json(self) -> dict[str, Any]:
        examples = self.answerable + self.unanswerable
        return {"examples": examples, "features": self.features,
                "features_per_example": dict(sorted(self.per_example.items(), key=lambda kv: int(kv[0]))),
                "answerable_examples": self.answerable, "unanswerable_examples": self.unanswerable,
                "answers_lost_to_windowing": self.lost, "features_with_cls_target": self.cls_targets}

    def summary(self) -> dict[str, Any]:
        return {key: value for key, value in self.to_json().items() if key != "features_per_example"}

    def sample_view(self, row: Mapping[str, Any]):
        """The tokens, the answer span marked as trained (none when the target is CLS)."""
        ids = np.asarray(row["input_ids"])
        labels = np.full(len(ids), -100)
        if row["answer_in_window"]:
            start, end = int(row["start_positions"]), int(row["end_positions"])
            labels[start:end + 1] = ids[start:end + 1]
        return ids, labels


# -- the task ----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class QAOptions(TaskOptions):
    """Options of ``--task qa``.

    Attributes:
        doc_stride: tokens of overlap between a context's windows (``--doc-stride``, run_qa.py's default 128).
    """

    FIELDS = ("id", "question", "context", "answers")

    doc_stride: int = 128

    def validate(self) -> None:
        if isinstance(self.doc_stride, bool) or not isinstance(self.doc_stride, int) or self.doc_stride < 0:
            raise ValueError(f"--doc-stride must be an integer >= 0, got {self.doc_stride!r}")


@dataclass(frozen=True)
class PendingQuestion:
    raw: Any
    example: QAExample


def squad_file_reader(stream, *, source: str):
    """The records of any input file, SQuAD documents expanded to one record per question."""
    return expand_squad(iter_records(stream, source=source))


QA_COLUMNS = ("input_ids", "token_type_ids", "start_positions", "end_positions", "offset_mapping", "example_id",
              "answer_in_window", "feature_index", "num_features", "answerable", "answer_windows")


class QATask(EncoderHeadTask):
    """Extractive-QA features (see the module docstring)."""

    name = "qa"
    options_class = QAOptions
    flags = (TaskFlag("doc-stride", "doc_stride", type=int, metavar="N",
                      help="qa: tokens shared by consecutive windows of a long context (default: 128, as run_qa.py)"),)
    default_max_length = 384  # run_qa.py's --max_seq_length
    pair_input = True
    truncations = ("right",)
    output_columns = ("start_positions", "end_positions")

    @classmethod
    def check_config(cls, options: QAOptions, tokenize_options) -> None:
        if tokenize_options.truncation != "right":
            raise ValueError("--task qa cuts long contexts into windows (--doc-stride); --truncation does not apply")
        super().check_config(options, tokenize_options)

    @classmethod
    def reserved_tokens(cls, options: QAOptions) -> tuple[int, str]:
        return options.doc_stride, "--doc-stride"

    @classmethod
    def parse(cls, value, options: QAOptions, format_options) -> QAExample:
        return parse_qa(value, options.field_map)

    @classmethod
    def content_key(cls, example: QAExample, options) -> str:
        return content_digest([normalized_text(example.question), example.context, list(example.answer_starts),
                               list(example.answer_texts)])

    @classmethod
    def detect_format(cls, value, options, format_options) -> str:
        return "squad"

    @classmethod
    def file_layout(cls, path: str, options: QAOptions):
        return squad_file_reader

    @classmethod
    def shard_fields(cls, options, tokenize_options) -> tuple:
        return (pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
                pa.field("start_positions", pa.int32(), nullable=False),
                pa.field("end_positions", pa.int32(), nullable=False),
                pa.field("offset_mapping", pa.list_(pa.list_(pa.int32())), nullable=False),
                pa.field("example_id", pa.string(), nullable=False),
                pa.field("answer_in_window", pa.bool_(), nullable=False),
                pa.field("feature_index", pa.int32(), nullable=False),
                pa.field("num_features", pa.int32(), nullable=False),
                pa.field("answerable", pa.bool_(), nullable=False),
                pa.field("answer_windows", pa.int32(), nullable=False))

    @classmethod
    def figures(cls, options) -> QAFigures:
        return QAFigures()

    @classmethod
    def head_manifest(cls, options: QAOptions) -> dict[str, Any]:
        return {"doc_stride": options.doc_stride}

    def __init__(self, *, tokenizer, options, task_options: QAOptions | None = None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        try:
            self.encoder = QAEncoder(tokenizer, max_length=self.max_length, doc_stride=self.task_options.doc_stride)
        except ValueError as exc:
            raise ValueError(f"--task qa: {exc}") from None

    def prepare(self, raw, example: QAExample) -> list[PendingQuestion]:
        return [PendingQuestion(raw, example)]

    def texts(self, pending: PendingQuestion):
        return ((pending.example.question, pending.example.context),)

    def finish(self, pending: PendingQuestion, encoded) -> list[dict[str, Any]]:
        """All the features of one record (a list; :meth:`finish_batch` makes them the record's rows)."""
        if isinstance(encoded, Failed):
            encoded.raise_()
        example = pending.example
        raw = pending.raw
        example_id = example.example_id if example.example_id is not None else f"{raw.source}:{raw.index}"
        content_hash = self.content_key(example, self.task_options)
        features = qa_feature_columns(self.encoder, encoded, example, example_id)
        record_id = record_id_of(raw.value)  # once for all the record's features
        # tokens of the context beyond the first window are not cut but repeated: nothing is truncated
        return [encoder_row(raw, {key: feature[key] for key in QA_COLUMNS}, content_hash=content_hash,
                            num_loss_tokens=2, full_length=len(feature["input_ids"]), row_number=k,
                            record_id=record_id)
                for k, feature in enumerate(features)]

    def finish_batch(self, parsed, built):
        """Each record's features as its rows (``finish`` gives them as one list)."""
        return [item if isinstance(item, Exception) else [row for rows in item for row in rows] for item in built]
