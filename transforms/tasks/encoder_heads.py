"""What the encoder-model tasks (classification, token classification, extractive QA) share: their own
copy of the Rust tokenizer, the tokenizer facts they read, field lookup, and the failure value an
encoder hands back for one item instead of raising for the batch.

The copy (:func:`own_backend`) matters: a ``transformers`` fast tokenizer switches truncation and
padding on its Rust tokenizer at every call, so a task that shares it could see a truncation left
on by a caller. A task's copy is built from the tokenizer's JSON with truncation and padding off,
and the task switches on exactly what it needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from transforms import errors
from transforms.errors import RecordRejected
from transforms.tasks.base import Task, TaskFlag, check_choice, check_positive_int


@dataclass(frozen=True)
class Failed:
    """An item an encoder could not encode; :meth:`raise_` turns it into the record's rejection."""

    reason: str
    detail: str

    def raise_(self):
        raise RecordRejected(self.reason, self.detail)


def own_backend(tokenizer):
    """A private copy of ``tokenizer``'s Rust tokenizer with truncation and padding off."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def uses_token_type_ids(tokenizer) -> bool:
    """Whether the tokenizer returns ``token_type_ids`` (BERT does, RoBERTa and Llama do not)."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def special_tokens_added(tokenizer, *, pair: bool) -> int:
    """How many special tokens the tokenizer adds to one sequence (``pair=False``) or a pair."""
    return int(tokenizer.backend_tokenizer.num_special_tokens_to_add(pair))


def truncation_side(tokenizer) -> str:
    """``"right"`` or ``"left"``: the side ``transformers`` truncates (``tokenizer.truncation_side``)."""
    side = getattr(tokenizer, "truncation_side", "right")
    if side not in ("right", "left"):
        raise ValueError(f"unsupported truncation_side {side!r}")
    return side


def field_value(record: Mapping[str, Any], canonical: str, candidates: Sequence[str],
                field_map: Mapping[str, str]) -> tuple[str | None, Any]:
    """``(field name, value)`` of a canonical field: the mapped name when ``--field-map`` names it,
    else the first candidate present in the record; ``(None, None)`` when none is."""
    if canonical in field_map:
        name = field_map[canonical]
        return (name, record[name]) if name in record else (None, None)
    for name in candidates:
        if name in record:
            return name, record[name]
    return None, None


# -- what the three task classes share --------------------------------------------------------------
ENCODER_TRUNCATION = ("right", "left", "drop")


def encoder_row(raw, columns: Mapping[str, Any], *, content_hash: str, num_loss_tokens: int, full_length: int,
                row_number: int = 0, record_id: str | None = None) -> dict[str, Any]:
    """A task row: the task's ``columns`` and the provenance columns every task row has
    (:data:`transforms.shard_format.TASK_BASE_FIELDS`) plus its ``sort_key``; ``row_number``: the row's place
    among its record's rows (QA features), which orders them after the record's key; ``record_id``: the
    record's :func:`~transforms.shard_format.record_id_of` when the caller has it (one per record, not per row)."""
    from transforms.shard_format import record_id_of, row_sort_key

    length = len(columns["input_ids"])
    key = row_sort_key(raw.source, raw.index)
    return {
        **columns,
        "length": length,
        "num_loss_tokens": num_loss_tokens,
        "truncated": full_length > length,
        "truncated_tokens": max(full_length - length, 0),
        "source": raw.source,
        "index": raw.index,
        "record_id": record_id_of(raw.value) if record_id is None else record_id,
        "content_hash": content_hash,
        "row_of_record": row_number,
        "sort_key": key if row_number == 0 else f"{key}:{row_number:08d}",
    }


def tokenizer_entries(tokenizer) -> dict[str, Any]:
    """What the runtime needs from the tokenizer: its pad id and pad token type id, and whether it has
    ``token_type_ids`` (then they are among the columns served to the model)."""
    return {"pad_token_id": tokenizer.pad_token_id,
            "pad_token_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            "token_type_ids": uses_token_type_ids(tokenizer)}


def max_length_of(tokenize_options, tokenizer, default: int) -> int:
    """``--max-length``, else ``default`` (the example script's) capped by the tokenizer's ``model_max_length``."""
    if tokenize_options.max_length is not None:
        return int(tokenize_options.max_length)
    limit = getattr(tokenizer, "model_max_length", None)
    return min(default, int(limit)) if isinstance(limit, int) and 0 < limit < 10**9 else default


def labels_value(text):
    """``--labels a,b,c`` -> ``("a", "b", "c")`` (names stripped; empty names are refused by the options)."""
    return tuple(name.strip() for name in str(text).split(","))


MAX_LISTED = 50  # unmapped labels listed in the audit (most frequent first); all are counted


def top_counts(counter) -> dict[str, int]:
    """The ``MAX_LISTED`` largest counts of a ``Counter``, largest first (ties by name)."""
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED])


def check_labels_option(options) -> None:
    """``labels`` (a tuple of distinct non-empty names) and ``num_labels`` (>= 1, equal to the names)."""
    if options.labels is not None:
        labels = tuple(options.labels)
        if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
            raise ValueError(f"--labels must name distinct, non-empty labels, got {options.labels!r}")
        object.__setattr__(options, "labels", labels)
        if options.num_labels is not None and options.num_labels != len(labels):
            raise ValueError(f"--num-labels {options.num_labels} but --labels names {len(labels)}")
        object.__setattr__(options, "num_labels", len(labels))
    check_positive_int("--num-labels", options.num_labels)


LABEL_FLAGS = (
    TaskFlag("labels", "labels", type=labels_value, metavar="A,B,...",
             help="classification, token-classification: the label (tag) names in id order; a label outside "
                  "them is rejected as unmapped_label (default: the sorted distinct labels of the inputs, "
                  "scanned at launch)"),
    TaskFlag("num-labels", "num_labels", type=int, metavar="N",
             help="classification, token-classification: the number of labels when labels are integer ids "
                  "(default: the largest id in the inputs + 1)"),
)


class EncoderHeadTask(Task):
    """The launch checks, manifest entries and length rule the encoder heads share. A head sets
    ``default_max_length`` (its example script's), ``pair_input`` (question/context or sentence pairs),
    ``truncations`` (the ``--truncation`` modes it takes) and, in :meth:`head_manifest`, what its manifest section
    adds (label space, doc stride)."""

    default_max_length = 512
    pair_input = False
    truncations: tuple[str, ...] = ENCODER_TRUNCATION
    output_columns: tuple[str, ...] = ("labels",)

    @classmethod
    def check_config(cls, options, tokenize_options) -> None:
        super().check_config(options, tokenize_options)
        check_choice("--truncation", tokenize_options.truncation, cls.truncations)

    @classmethod
    def check_tokenizer(cls, options, tokenizer) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(f"--task {cls.name} needs a tokenizer with a pad token (the collator pads with it)")

    @classmethod
    def reserved_tokens(cls, options) -> tuple[int, str]:
        """Tokens a row must keep free beyond the special ones, and the flag that asks for them."""
        return 0, ""

    @classmethod
    def check_build(cls, options, tokenize_options, tokenizer) -> None:
        max_length = max_length_of(tokenize_options, tokenizer, cls.default_max_length)
        added = special_tokens_added(tokenizer, pair=cls.pair_input)
        reserved, flag = cls.reserved_tokens(options)
        if max_length <= added + reserved:
            raise ValueError(f"--task {cls.name}: --max-length {max_length} leaves no room after the tokenizer's "
                             f"{added} special tokens" + (f" plus {flag} {reserved}" if flag else ""))

    @classmethod
    def head_manifest(cls, options) -> dict[str, Any]:
        return {}

    @classmethod
    def manifest_section(cls, options, tokenizer, tokenize_options) -> dict[str, Any]:
        entries = tokenizer_entries(tokenizer)
        model = ["input_ids", "token_type_ids"] if entries["token_type_ids"] else ["input_ids"]
        return {"name": cls.name, "options": options.to_json(), "columns": [*model, *cls.output_columns],
                "collator": cls.name, "max_length": max_length_of(tokenize_options, tokenizer, cls.default_max_length),
                **cls.head_manifest(options), **entries}

    def __init__(self, *, tokenizer, options, task_options=None, images=None):
        super().__init__(tokenizer=tokenizer, options=options, task_options=task_options, images=images)
        self.check_config(self.task_options, options)
        self.max_length = max_length_of(options, tokenizer, self.default_max_length)
        self.drop = options.truncation == "drop"
        self.side = "left" if options.truncation == "left" else "right"

    def check_length(self, encoded, what: str = "record") -> None:
        """``--truncation drop``: a row longer than ``--max-length`` is rejected as ``too_long``."""
        if self.drop and encoded.full_length > self.max_length:
            raise RecordRejected(errors.TOO_LONG, f"the {what} has {encoded.full_length} tokens, more than "
                                 f"--max-length {self.max_length} (--truncation drop)")
