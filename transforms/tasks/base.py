"""The task interface: what a module under ``transforms/tasks/`` provides (see ``docs/tasks.md``).

A task decides what a record becomes: which record shapes it reads (the *ParseRecords* step, no
tokenizer), which shard columns it writes and how a batch of examples becomes rows (the *BuildRows*
step), how duplicates are keyed, what the audit counts and what the manifest says about it. The job,
both engines, the shard writer, the manifest and the runtime only talk to a task through this
interface, so a task is one module plus one line in :data:`transforms.tasks.TASKS`.

Pieces:

* :class:`TaskOptions`: the task's own options, one frozen, validated, keyword-only dataclass (a
  subclass per task). Every task has ``format`` (the record shapes it reads, ``FORMATS``) and a
  ``field_map`` (canonical field -> the dataset's field, for the canonical names ``FIELDS``).
  ``to_json()`` is what the manifest and the config fingerprint record.
* :class:`TaskFlag`: a command-line flag that sets one option field (``--group-texts N`` ->
  ``group_texts``). ``python -m pipeline`` adds every task's flags, refuses a flag the chosen
  ``--task`` does not declare, and builds the options from the flags given.
* :class:`Task`: the class registered in ``TASKS``. Classmethods work without a tokenizer (parse,
  keys, formats, file layouts, schema, audit figures, manifest section); an instance builds rows
  with one tokenizer (``prepare`` -> one ``encode`` of the batch's texts -> ``finish`` ->
  ``finish_batch``).
* :class:`TaskFigures`: the task's part of the audit (mergeable, order-independent).

Rows of every task carry the provenance columns of :data:`transforms.shard_format.TASK_BASE_FIELDS`
(``length``, ``num_loss_tokens``, ``truncated``, ``truncated_tokens``, ``source``, ``index``,
``record_id``, ``content_hash``, ``row_of_record``) plus a ``sort_key``; the task's ``shard_fields``
come after them. The chat task keeps its own historical schema (:func:`transforms.shard_format.arrow_schema`).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats.options import FrozenMap, _as_frozen_map
from transforms.reading.record import json_type_name
from transforms.shard_format import canonical_json


def check_choice(option: str, value, choices) -> None:
    """``ValueError`` naming ``option`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_positive_int(option: str, value, *, minimum: int = 1, optional: bool = True) -> None:
    """``ValueError`` naming ``option`` unless ``value`` is an int ``>= minimum`` (or ``None`` when optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """Options of a task (subclass per task; validated on construction, ``ValueError`` on a bad value).

    Attributes:
        format: which record shape to read (one of the class's ``FORMATS``; ``auto`` detects per record).
        field_map: canonical field name -> the dataset's field name (keys among the class's ``FIELDS``).
    """

    FIELDS: ClassVar[tuple[str, ...]] = ()
    FORMATS: ClassVar[tuple[str, ...]] = ("auto",)

    format: str = "auto"
    field_map: Mapping[str, str] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        check_choice("--format", self.format, self.FORMATS)
        fmap = _as_frozen_map(self.field_map, "--field-map")
        for key in fmap:
            if key not in self.FIELDS:
                raise ValueError(f"--field-map: unknown field {key!r} for this task; known: {', '.join(self.FIELDS)}")
        used: dict[str, str] = {}
        for canonical in self.FIELDS:
            name = fmap.get(canonical, canonical)
            if name in used:
                raise ValueError(f"--field-map: {used[name]!r} and {canonical!r} would both read the field {name!r}")
            used[name] = canonical
        object.__setattr__(self, "field_map", fmap)
        self.validate()

    def validate(self) -> None:
        """Further checks of a subclass (raise ``ValueError``)."""

    def key(self, canonical: str) -> str:
        """The dataset's name for a canonical field."""
        return self.field_map.get(canonical, canonical)

    def to_json(self) -> dict[str, Any]:
        """Every option as JSON values (recorded in the manifest and the config fingerprint)."""
        out = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            out[item.name] = dict(value) if isinstance(value, Mapping) else (
                list(value) if isinstance(value, tuple) else value)
        return out


@dataclass(frozen=True)
class TaskFlag:
    """One command-line flag of a task: ``--<name>`` sets the option ``field``.

    ``switch``: a flag without a value that sets ``field`` to ``value``; otherwise the flag takes a value
    converted by ``type`` (and checked against ``choices``). Several tasks may declare the same flag (same
    name, same meaning); it is added once.
    """

    name: str
    field: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple | None = None
    metavar: str | None = None
    switch: bool = False
    value: Any = True

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.switch:  # given: True (the option field then gets ``value``); absent: None
            return {"action": "store_const", "const": True, "default": None, "help": self.help}
        kwargs: dict[str, Any] = {"type": self.type, "default": None, "help": self.help}
        if self.choices is not None:
            kwargs["choices"] = self.choices
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        return kwargs


class TaskFigures:
    """The task's part of the audit: counts and histograms over its rows and rejections.

    Must merge exactly in any order (integer counts, fixed-bin histograms), like
    :class:`transforms.audit.accumulator.AuditAccumulator`, whose ``add_row``/``add_rejection``/``merge``
    call these. ``to_json()`` is the ``task`` section of ``audit/stats.json``; ``summary()`` a few figures
    for the manifest's ``audit`` section.
    """

    def add_row(self, row: Mapping[str, Any]) -> None:
        """One shard row (a job row dict, or a row read back from a shard)."""

    def add_rejection(self, item: Mapping[str, Any]) -> None:
        """One rejection dict ``{reason, detail, source, index, record}``."""

    def merge(self, other: "TaskFigures") -> "TaskFigures":
        return self

    def to_json(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {}

    def sample_view(self, row: Mapping[str, Any]):
        """``(ids, labels)`` of equal length showing a row in the report (trained where labels != -100)."""
        ids = row["input_ids"]
        labels = row.get("labels")
        return ids, (ids if labels is None or len(labels) != len(ids) else labels)


def field_value(value: Any, options: TaskOptions, canonical: str, *, required: bool = True) -> Any:
    """``value[options.key(canonical)]`` of a JSON object record; a missing field is ``unknown_format``."""
    if not isinstance(value, dict):
        raise RecordRejected(errors.UNKNOWN_FORMAT, f"record is a {json_type_name(value)}, expected a JSON object")
    name = options.key(canonical)
    if name not in value:
        if not required:
            return None
        raise RecordRejected(errors.UNKNOWN_FORMAT, f"record has no {name!r} field (fields: "
                             f"{', '.join(sorted(map(str, value))[:12])}); map one with --field-map {canonical}=FIELD")
    return value[name]


def text_value(value: Any, what: str) -> str:
    """``value`` as a non-empty text: a string with no lone surrogate and not only whitespace."""
    if not isinstance(value, str):
        raise RecordRejected(errors.INVALID_CONTENT, f"{what} is a {json_type_name(value)}, expected a string")
    if not value.strip():
        raise RecordRejected(errors.EMPTY_TEXT, f"{what} is empty or only whitespace")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordRejected(errors.INVALID_CONTENT, f"{what} holds a lone surrogate (not valid Unicode)") from None
    return value


def content_digest(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (a task's ``content_hash`` and dedup key)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def normalized_text(text: str) -> str:
    """``text`` with runs of whitespace collapsed and the ends stripped (what duplicates are compared on)."""
    return " ".join(text.split())


class Task:
    """Base of the registered task classes. Subclasses set the class attributes and override the methods
    their task needs; the defaults fit a task whose records are one row each.

    Class attributes:
        name: the ``--task`` name.
        options_class: its :class:`TaskOptions` subclass.
        flags: its :class:`TaskFlag` s.
        chat_flags: whether the chat flags (``--loss``, ``--chat-template``, ...) apply (chat only).
        chat_options: the chat flags (their ``JobArgs`` names, e.g. ``"chat_template"``, ``"role_map"``) a task
            other than chat reads as chat does: they reach its ``TokenizeOptions`` and message-reading
            ``FormatOptions``; the other chat flags are refused.
        needs_chat_template: whether the tokenizer must have a chat template (checked at launch, with the chat
            template's launch check and pinned ``--template-date``).
        packable: whether ``--pack-length`` may pack the task's rows (:mod:`transforms.packing`): rows that
            are single causal sequences with ``input_ids`` and unshifted ``labels``, concatenated under a
            block-diagonal mask (``docs/packing.md``). Chat only today.
    """

    name: ClassVar[str] = ""
    options_class: ClassVar[type[TaskOptions]] = TaskOptions
    flags: ClassVar[tuple[TaskFlag, ...]] = ()
    chat_flags: ClassVar[bool] = False
    chat_options: ClassVar[tuple[str, ...]] = ()
    needs_chat_template: ClassVar[bool] = False
    packable: ClassVar[bool] = False

    images = None  # only the chat task has parts (images)

    # -- the parse step: no tokenizer ------------------------------------------------------------------
    @classmethod
    def default_options(cls) -> TaskOptions:
        return cls.options_class()

    @classmethod
    def check_config(cls, options: TaskOptions, tokenize_options) -> None:
        """Launch-time checks of the options with the common ones (``--max-length``, ``--truncation``,
        ``--pad-to``); ``ValueError`` with a one-line reason."""
        if tokenize_options.pad_to is not None:
            raise ValueError(f"--pad-to applies to --task chat; --task {cls.name} rows are padded by the collator")

    @classmethod
    def check_tokenizer(cls, options: TaskOptions, tokenizer) -> None:
        """Launch-time checks that need the tokenizer (a token the task needs is missing...): ``ValueError``."""

    @classmethod
    def check_build(cls, options: TaskOptions, tokenize_options, tokenizer) -> None:
        """Launch-time checks of the options with the tokenizer and the common options together (a
        ``--max-length`` that leaves no room after the tokenizer's special tokens...): ``ValueError``."""

    @classmethod
    def parse(cls, value: Any, options: TaskOptions, format_options) -> Any:
        """One record's JSON value -> the task's example (raises :class:`RecordRejected`)."""
        raise NotImplementedError

    @classmethod
    def content_key(cls, example: Any, options: TaskOptions) -> str:
        """The key of ``--dedup`` and of the ``content_hash`` column: equal for duplicates of the same content."""
        return content_digest(example)

    @classmethod
    def detect_format(cls, value: Any, options: TaskOptions, format_options) -> str:
        """The record shape name of a (rejected) record, for the audit (``parse`` may raise; the audit catches)."""
        return options.format if options.format != "auto" else cls.name

    @classmethod
    def file_layout(cls, path: str, options: TaskOptions) -> Callable[..., Iterator] | None:
        """A reader ``(stream, *, source) -> Iterator[RawRecord]`` for files that are not JSON/Parquet/Arrow
        (for example ``.txt`` files of the text task), chosen by the path; ``None``: the usual readers."""
        return None

    @classmethod
    def needs_scan(cls, options: TaskOptions) -> bool:
        """Whether the job must read every record's example at launch to complete ``options`` (a label map
        built from the data, as ``run_glue.py``/``run_ner.py`` build theirs): see :meth:`resolve_options`."""
        return False

    @classmethod
    def resolve_options(cls, options: TaskOptions, examples) -> TaskOptions:
        """``options`` completed from the parsed examples of every input record (records that do not parse are
        left out: the job rejects them later). Runs once, at launch, only when :meth:`needs_scan` says so, so the
        options every step receives (and the fingerprint and the manifest record) are final. ``ValueError``:
        the examples cannot complete the options (a configuration error)."""
        return options

    @classmethod
    def shard_fields(cls, options: TaskOptions, tokenize_options) -> tuple:
        """The Arrow fields the task adds after :data:`transforms.shard_format.TASK_BASE_FIELDS`."""
        return ()

    @classmethod
    def figures(cls, options: TaskOptions) -> TaskFigures | None:
        """A fresh :class:`TaskFigures` for the audit (``None``: the audit's common figures only)."""
        return None

    @classmethod
    def manifest_section(cls, options: TaskOptions, tokenizer, tokenize_options) -> dict[str, Any]:
        """The manifest's ``task`` section: ``name``, ``options``, ``columns`` (the model inputs the runtime
        serves by default), ``collator`` and whatever the runtime needs (special ids, label maps)."""
        return {"name": cls.name, "options": options.to_json(), "columns": ["input_ids"], "collator": cls.name}

    # -- the build step: one tokenizer -------------------------------------------------------------------
    def __init__(self, *, tokenizer, options, task_options: TaskOptions | None = None, images=None):
        if images is not None:
            raise ValueError(f"--task {self.name} does not take images (--processor)")
        self.tokenizer = tokenizer
        self.options = options
        self.task_options = task_options if task_options is not None else self.default_options()

    def start_batch(self, parsed: Sequence[tuple]) -> None:
        """Run before a batch is prepared."""

    def end_batch(self) -> None:
        """Run after a batch, also when it failed."""

    def prepare(self, raw, example) -> list:
        """The record's pending rows (raises :class:`RecordRejected`)."""
        raise NotImplementedError

    def texts(self, pending) -> Sequence[str]:
        """The texts of one pending row to encode (all texts of a batch are encoded in one call)."""
        return (pending.text,)

    def encode_texts(self, texts: Sequence, rows: Sequence) -> list:
        """The encodings of a batch's texts (:meth:`texts` of each pending row, in order; ``rows``: per text,
        the pending row it belongs to), in one call of the task's encoder."""
        return self.encoder.encode(texts)

    def finish(self, pending, *encodings) -> dict[str, Any]:
        """The row of a pending row from its encodings (raises :class:`RecordRejected`)."""
        raise NotImplementedError

    def finish_batch(self, parsed: Sequence[tuple], built: list) -> list:
        """The batch's rows after ``finish``: per record position a list of rows or the exception that rejects
        it. A task that makes rows from several records (grouping texts into blocks) regroups them here;
        a record may then have no row of its own (it is counted by the ``documents`` column)."""
        return built
