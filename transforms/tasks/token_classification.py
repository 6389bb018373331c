"""Token classification (``AutoModelForTokenClassification``, NER/POS): words and one tag per word ->
one row of ``input_ids``, ``token_type_ids`` (where the tokenizer defines them) and ``labels`` per token.

Records: ``{"tokens": [...], "tags": [...]}``; ``words`` is read for ``tokens`` and ``ner`` for
``tags`` (transformers' conll fixture), other names with ``--field-map``. CoNLL text files become such
records in :mod:`transforms.reading.conll`. Tags are names (mapped through the tag map: the sorted
distinct tags of the job, as ``run_ner.py``'s ``get_label_list`` sorts them, or the ``--labels``
order) or integer ids (kept as given).

Alignment (``run_ner.py``'s ``tokenize_and_align_labels``): the words are encoded as a pre-tokenized
sequence; the first sub-token of each word carries the word's tag id, the other sub-tokens -100, or
(``label_all_tokens``) the word's tag too, with ``B-X`` written as ``I-X`` on continuation pieces when
the tag map has ``I-X``; special tokens are -100. -100 means "no loss here".

Rejections: tokens and tags of different lengths (``length_mismatch``); a word that tokenizes to
nothing (``word_not_tokenized``: its tag would silently vanish, e.g. a lone zero-width space); a tag
outside the ``--labels`` map (``unmapped_label``); an empty sentence or a word that is not a non-empty
string (``invalid_content``). Words cut by ``max_length`` are counted (``words_truncated``), not rejected.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.errors import RecordRejected
from transforms.reading.conll import iter_conll_records
from transforms.shard_format import IGNORE_INDEX
from transforms.tasks.base import TaskFigures, TaskFlag, TaskOptions, content_digest
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

WORD_FIELDS = ("tokens", "words")
TAG_FIELDS = ("tags", "ner_tags", "ner")


@dataclass(frozen=True)
class TaggedSentence:
    """A record's words and their tags as written (names or ids)."""

    words: tuple[str, ...]
    tags: tuple[Any, ...]


def parse_tagged(record: Any, field_map: Mapping[str, str] | None = None) -> TaggedSentence:
    """The sentence of one record (raises :class:`RecordRejected`)."""
    field_map = field_map or {}
    if not isinstance(record, Mapping):
        raise RecordRejected(errors.INVALID_CONTENT, "a token-classification record must be an object")
    words_name, words = field_value(record, "tokens", WORD_FIELDS, field_map)
    tags_name, tags = field_value(record, "tags", TAG_FIELDS, field_map)
    if words_name is None or not isinstance(words, list):
        raise RecordRejected(errors.INVALID_CONTENT, f"the record needs a list of words ({' / '.join(WORD_FIELDS)})")
    if tags_name is None or not isinstance(tags, list):
        raise RecordRejected(errors.INVALID_LABEL, f"the record needs a list of tags ({' / '.join(TAG_FIELDS)})")
    if not words:
        raise RecordRejected(errors.INVALID_CONTENT, "the sentence has no words")
    if len(words) != len(tags):
        raise RecordRejected(errors.LENGTH_MISMATCH, f"{len(words)} words but {len(tags)} tags")
    for k, word in enumerate(words):
        if not isinstance(word, str) or not word:
            raise RecordRejected(errors.INVALID_CONTENT, f"word {k} is {word!r}, not a non-empty string")
    for k, tag in enumerate(tags):
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise RecordRejected(errors.INVALID_LABEL, f"tag {k} is {tag!r}, not a name or an id")
    return TaggedSentence(words=tuple(words), tags=tuple(tags))


@dataclass(frozen=True)
class TagSpace:
    """The job's tags: names in id order (``()`` when tags are ids) and the number of tags."""

    names: tuple[str, ...] = ()
    num_labels: int = 1
    _ids: Mapping[str, int] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.names and len(set(self.names)) != len(self.names):
            raise ValueError("tag names must be distinct")
        if self.names and self.num_labels != len(self.names):
            raise ValueError("num_labels must equal the number of tag names")
        if self.num_labels < 1:
            raise ValueError("a tag space needs at least one tag")
        object.__setattr__(self, "_ids", {name: i for i, name in enumerate(self.names)})

    def to_manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"num_labels": self.num_labels}
        if self.names:
            entry["id2label"] = {str(i): name for i, name in enumerate(self.names)}
            entry["label2id"] = {name: i for i, name in enumerate(self.names)}
        return entry

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> "TagSpace":
        names = ()
        if entry.get("id2label"):
            names = tuple(entry["id2label"][str(i)] for i in range(len(entry["id2label"])))
        return cls(names=names, num_labels=int(entry["num_labels"]))

    def b_to_i(self) -> np.ndarray:
        """Per tag id, the id written on continuation pieces under ``label_all_tokens``: the ``I-X`` id
        for a ``B-X`` tag when the map has ``I-X``, else the tag itself (``run_ner.py``'s ``b_to_i_label``)."""
        out = np.arange(self.num_labels, dtype=np.int32)
        for i, name in enumerate(self.names):
            if name.startswith("B-") and "I-" + name[2:] in self._ids:
                out[i] = self._ids["I-" + name[2:]]
        return out

    def encode(self, tags: Sequence[Any]) -> np.ndarray:
        """Tag ids (int32) of a sentence's tags (raises :class:`RecordRejected` ``unmapped_label``)."""
        out = np.empty(len(tags), dtype=np.int32)
        for k, tag in enumerate(tags):
            key = tag if isinstance(tag, str) else str(tag) if self._ids else None
            if key is not None and key in self._ids:
                out[k] = self._ids[key]
            elif isinstance(tag, int) and 0 <= tag < self.num_labels:
                out[k] = tag
            else:
                raise RecordRejected(errors.UNMAPPED_LABEL, f"tag {k} ({tag!r}) is not in the tag map")
        return out


def tag_space_from_values(sentences: Iterable[Sequence[Any]], *, labels: Sequence[str] | None = None) -> TagSpace:
    """The job's :class:`TagSpace` from every sentence's tags (order-independent). ``labels``
    (``--labels``) fixes the names in id order; otherwise names are sorted, and all-integer tags are ids
    (``num_labels`` = largest id + 1). Raises ``ValueError`` when there is no tag."""
    if labels is not None:
        labels = tuple(labels)
        if not labels:
            raise ValueError("--labels names no tag")
        return TagSpace(names=labels, num_labels=len(labels))
    names: set[str] = set()
    max_id = -1
    only_ids = True
    for tags in sentences:
        for tag in tags:
            if isinstance(tag, bool):
                continue
            if isinstance(tag, int):
                max_id = max(max_id, tag)
                names.add(str(tag))
            elif isinstance(tag, str):
                names.add(tag)
                only_ids = False
    if not names:
        raise ValueError("no record has a tag: cannot tell the tag map (give --labels)")
    if only_ids:
        return TagSpace(num_labels=max_id + 1)
    return TagSpace(names=tuple(sorted(names)), num_labels=len(names))


def align_labels(word_ids: Sequence[int | None], tag_ids: np.ndarray, *, label_all_tokens: bool,
                 b_to_i: np.ndarray | None = None) -> np.ndarray:
    """Per-token labels (int32) from the tokens' word indexes (``None`` on special tokens)."""
    labels = np.full(len(word_ids), IGNORE_INDEX, dtype=np.int32)
    previous = None
    for position, word in enumerate(word_ids):
        if word is None:
            previous = None
            continue
        if word != previous:
            labels[position] = tag_ids[word]
        elif label_all_tokens:
            tag = tag_ids[word]
            labels[position] = b_to_i[tag] if b_to_i is not None else tag
        previous = word
    return labels


@dataclass(frozen=True)
class EncodedWords:
    """A sentence's encoding (special tokens added, truncated), its length before truncation and how many
    words lost every token to truncation."""

    encoding: Any
    full_length: int
    words_truncated: int


class WordsEncoder:
    """Encodes sentences as pre-tokenized sequences in one batch call, as ``transformers`` does with
    ``tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)``.

    ``encode`` never raises for one item: a sentence with a word that gives no token is a
    :class:`Failed` (``word_not_tokenized``).
    """

    def __init__(self, tokenizer, *, max_length: int, side: str | None = None):
        self.max_length = max_length
        self.side = side or truncation_side(tokenizer)
        self.added = special_tokens_added(tokenizer, pair=False)
        if max_length <= self.added:
            raise ValueError(f"max_length {max_length} leaves no room after {self.added} special tokens")
        self.token_type_ids = uses_token_type_ids(tokenizer)
        self.backend = own_backend(tokenizer)

    def encode(self, sentences: Sequence[Sequence[str]]) -> list[EncodedWords | Failed]:
        encodings = self.backend.encode_batch([list(words) for words in sentences], is_pretokenized=True,
                                              add_special_tokens=False) if sentences else []
        out: list[EncodedWords | Failed] = []
        for words, encoding in zip(sentences, encodings):
            present = np.zeros(len(words), dtype=bool)
            ids = [w for w in encoding.word_ids if w is not None]
            present[ids] = True
            if not present.all():
                missing = int(np.flatnonzero(~present)[0])
                out.append(Failed(errors.WORD_NOT_TOKENIZED, f"word {missing} ({words[missing]!r}) gives no token, "
                                  "so its tag would be lost"))
                continue
            full = len(encoding.ids) + self.added
            kept_words = len(words)
            if full > self.max_length:
                encoding.truncate(self.max_length - self.added, 0, self.side)
                kept_words = len({w for w in encoding.word_ids if w is not None})
            out.append(EncodedWords(self.backend.post_process(encoding, None, True), full, len(words) - kept_words))
        return out


def token_classification_columns(encoded: EncodedWords, tag_ids: np.ndarray, *, label_all_tokens: bool,
                                 b_to_i: np.ndarray | None, token_type_ids: bool) -> dict[str, Any]:
    """The task columns of one row: ``input_ids`` (int32), ``token_type_ids`` (int8, where defined),
    ``labels`` (int32 per token, -100 where no loss), ``length``, ``truncated_tokens``, ``num_words``,
    ``words_truncated`` (words that lost every token to truncation, so their tag is not trained)."""
    encoding = encoded.encoding
    input_ids = np.asarray(encoding.ids, dtype=np.int32)
    row: dict[str, Any] = {"input_ids": input_ids}
    if token_type_ids:
        row["token_type_ids"] = np.asarray(encoding.type_ids, dtype=np.int8)
    row["labels"] = align_labels(encoding.word_ids, tag_ids, label_all_tokens=label_all_tokens, b_to_i=b_to_i)
    row["length"] = len(input_ids)
    row["truncated_tokens"] = encoded.full_length - len(input_ids)
    row["num_words"] = len(tag_ids)
    row["words_truncated"] = encoded.words_truncated
    return row


# -- audit -------------------------------------------------------------------------------------------
class TokenClassificationFigures(TaskFigures):
    """Audit of token-classification rows: tokens trained per tag (what the loss sees), words, words lost
    to truncation, truncated rows, and the unmapped tags (tags of ``unmapped_label`` rejections, with counts)."""

    def __init__(self, tag_space, field_map: Mapping[str, str] | None = None):
        self.space = tag_space
        self.field_map = dict(field_map or {})
        self.rows = 0
        self.words = 0
        self.words_truncated = 0
        self.truncated_rows = 0
        self.tags = np.zeros(tag_space.num_labels, dtype=np.int64)
        self.unmapped: Counter = Counter()

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        self.words += int(row["num_words"])
        self.words_truncated += int(row["words_truncated"])
        self.truncated_rows += int(row.get("truncated_tokens", 0) > 0)
        labels = np.asarray(row["labels"])
        labels = labels[labels != IGNORE_INDEX]
        self.tags += np.bincount(labels, minlength=self.space.num_labels)[: self.space.num_labels]

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        if item.get("reason") != errors.UNMAPPED_LABEL:
            return
        try:
            tags = parse_tagged(item.get("record"), self.field_map).tags
        except RecordRejected:
            return
        for tag in tags:
            try:
                self.space.encode([tag])
            except RecordRejected:
                self.unmapped[str(tag)] += 1

    def merge(self, other: "TokenClassificationFigures") -> "TokenClassificationFigures":
        self.rows += other.rows
        self.words += other.words
        self.words_truncated += other.words_truncated
        self.truncated_rows += other.truncated_rows
        self.tags += other.tags
        self.unmapped.update(other.unmapped)
        return self

    def to_json(self) -> dict[str, Any]:
        names = list(self.space.names) or [str(i) for i in range(self.space.num_labels)]
        return {"rows": self.rows, "words": self.words, "words_lost_to_truncation": self.words_truncated,
                "truncated_rows": self.truncated_rows,
                "trained_tokens_per_tag": {name: int(n) for name, n in zip(names, self.tags)},
                "unmapped_tags": top_counts(self.unmapped), "unmapped_tag_occurrences": sum(self.unmapped.values())}

    def summary(self) -> dict[str, Any]:
        out = self.to_json()
        out.pop("unmapped_tags")
        return out


# -- the task ----------------------------------------------------------------------------------------
CONLL = "conll"


@dataclass(frozen=True, kw_only=True)
class TokenClassificationOptions(TaskOptions):
    """Options of ``--task token-classification``.

    Attributes:
        labels: the tag names in id order (``--labels``); when not given, the job's scan fills them with the
            sorted distinct tags (or leaves them ``None`` for integer tags).
        num_labels: the number of tags (``--num-labels``; from ``--labels`` or the scan otherwise).
        label_all_tokens: label every sub-token of a word, ``B-X`` as ``I-X`` after the first
            (``--label-all-tokens``); otherwise the first sub-token only.
    """

    FIELDS = ("tokens", "tags")
    FORMATS = ("auto", CONLL)

    labels: tuple[str, ...] | None = None
    num_labels: int | None = None
    label_all_tokens: bool = False

    def validate(self) -> None:
        check_labels_option(self)
        if not isinstance(self.label_all_tokens, bool):
            raise ValueError(f"label_all_tokens must be a bool, got {self.label_all_tokens!r}")

    @property
    def resolved(self) -> bool:
        return self.num_labels is not None

    def tag_space(self) -> TagSpace:
        if not self.resolved:
            raise ValueError("the tag map is not known yet (the job scans the tags at launch)")
        return TagSpace(names=self.labels or (), num_labels=self.num_labels)


@dataclass(frozen=True)
class PendingSentence:
    raw: Any
    sentence: TaggedSentence
    tag_ids: np.ndarray


def conll_file_reader(path: str, options: "TokenClassificationOptions"):
    """The CoNLL reader for ``.conll`` files (also compressed) or any file with ``--format conll``."""
    from transforms.reading.delimited import file_suffix

    return iter_conll_records if options.format == CONLL or file_suffix(path) == ".conll" else None


class TokenClassificationTask(EncoderHeadTask):
    """Token-classification rows (see the module docstring)."""

    name = "token-classification"
    options_class = TokenClassificationOptions
    flags = LABEL_FLAGS + (
        TaskFlag("label-all-tokens", "label_all_tokens", switch=True, value=True,
                 help="token-classification: label every sub-token of a word (B-X as I-X after the first), as "
                      "run_ner.py --label_all_tokens; default: the first sub-token only, -100 on the others"),
    )
    default_max_length = 512  # run_ner.py: the tokenizer's model_max_length

    @classmethod
    def parse(cls, value, options: TokenClassificationOptions, format_options) -> TaggedSentence:
        return parse_tagged(value, options.field_map)

    @classmethod
    def content_key(cls, example: TaggedSentence, options) -> str:
        return content_digest([list(example.words), list(example.tags)])

    @classmethod
    def detect_format(cls, value, options, format_options) -> str:
        return CONLL if options.format == CONLL else "tokens"

    @classmethod
    def file_layout(cls, path: str, options: TokenClassificationOptions):
        return conll_file_reader(path, options)

    @classmethod
    def needs_scan(cls, options: TokenClassificationOptions) -> bool:
        return not options.resolved

    @classmethod
    def resolve_options(cls, options: TokenClassificationOptions, examples) -> TokenClassificationOptions:
        space = tag_space_from_values((e.tags for e in examples), labels=options.labels)
        return dataclasses.replace(options, labels=space.names or None,
                                   num_labels=options.num_labels or space.num_labels)

    @classmethod
    def shard_fields(cls, options, tokenize_options) -> tuple:
        return (pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
                pa.field("labels", pa.list_(pa.int32()), nullable=False),
                pa.field("num_words", pa.int32(), nullable=False),
                pa.field("words_truncated", pa.int32(), nullable=False))

    @classmethod
    def figures(cls, options: TokenClassificationOptions) -> TokenClassificationFigures:
        return TokenClassificationFigures(options.tag_space(), options.field_map)

    @classmethod
    def head_manifest(cls, options: TokenClassificationOptions) -> dict[str, Any]:
        return options.tag_space().to_manifest()

    def __init__(self, *, tokenizer, options, task_options: TokenClassificationOptions | None = None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.space = self.task_options.tag_space()
        self.b_to_i = self.space.b_to_i()
        self.encoder = WordsEncoder(tokenizer, max_length=self.max_length, side=self.side)

    def prepare(self, raw, example: TaggedSentence) -> list[PendingSentence]:
        return [PendingSentence(raw, example, self.space.encode(example.tags))]

    def texts(self, pending: PendingSentence):
        return (pending.sentence.words,)

    def finish(self, pending: PendingSentence, encoded) -> dict[str, Any]:
        if isinstance(encoded, Failed):
            encoded.raise_()
        self.check_length(encoded, "sentence")
        columns = token_classification_columns(encoded, pending.tag_ids,
                                               label_all_tokens=self.task_options.label_all_tokens,
                                               b_to_i=self.b_to_i, token_type_ids=True)
        columns = {key: columns[key] for key in ("input_ids", "token_type_ids", "labels", "num_words",
                                                 "words_truncated")}
        return encoder_row(pending.raw, columns, content_hash=self.content_key(pending.sentence, self.task_options),
                           num_loss_tokens=int(np.count_nonzero(columns["labels"] != IGNORE_INDEX)),
                           full_length=encoded.full_length)
