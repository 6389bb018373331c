"""The job's task, tokenizer-free: :class:`TaskSpec` (name, task options, record-format options).

This small, picklable value is what the job's tokenizer-free steps receive (parsing, ``--dedup`` keys,
the audit's format detection and task figures, reading non-JSON files): it dispatches to the task class
registered in :data:`transforms.tasks.TASKS`. Functions that used to take the chat
:class:`~transforms.formats.FormatOptions` accept either; :func:`as_task_spec` turns ``FormatOptions``
into the chat task's spec, so chat callers are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transforms.formats.options import FormatOptions
from transforms.tasks.base import TaskFigures, TaskOptions

CHAT = "chat"


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """The task of a job without its tokenizer.

    Attributes:
        name: the ``--task`` name (a key of :data:`transforms.tasks.TASKS`).
        options: the task's options (``None``: the task's defaults; the chat task has none).
        format_options: the chat record-format options (chat reads them; other tasks keep the default).
    """

    name: str = CHAT
    options: TaskOptions | None = None
    format_options: FormatOptions = field(default_factory=FormatOptions)

    def __post_init__(self):
        from transforms.tasks import task_class  # the registry imports every task module

        task = task_class(self.name)  # an unknown name is a ValueError here
        object.__setattr__(self, "_task", task)  # not a field: equality and the fingerprint ignore it
        if self.options is None and self.name != CHAT:
            object.__setattr__(self, "options", task.default_options())
        if self.options is not None and task.options_class is not None and \
                not isinstance(self.options, task.options_class):
            raise ValueError(f"--task {self.name} takes {task.options_class.__name__}, "
                             f"not {type(self.options).__name__}")

    @property
    def task_class(self):
        return self._task

    @property
    def is_chat(self) -> bool:
        return self.name == CHAT

    def parse(self, value: Any) -> Any:
        """A record's JSON value -> the task's example (raises ``RecordRejected``)."""
        return self.task_class.parse(value, self.options, self.format_options)

    def content_key(self, value: Any) -> str:
        """The ``--dedup`` key of a record's JSON value (raises when the record does not parse)."""
        task = self.task_class
        return task.content_key(task.parse(value, self.options, self.format_options), self.options)

    def detect_format(self, value: Any) -> str:
        """The record shape of a record (for the audit of rejections; may raise ``RecordRejected``)."""
        return self.task_class.detect_format(value, self.options, self.format_options)

    def file_layout(self, path: str):
        """The reader of ``path`` when the task reads it as a non-JSON file (``.txt`` ...), else ``None``."""
        return self.task_class.file_layout(path, self.options)

    def figures(self) -> TaskFigures | None:
        """A fresh audit part of the task (``None`` for chat)."""
        return self.task_class.figures(self.options)

    def shard_fields(self, tokenize_options) -> tuple:
        return self.task_class.shard_fields(self.options, tokenize_options)


def task_spec_from_manifest(manifest) -> TaskSpec | None:
    """The task of a finished dataset from its manifest's ``task`` section (``None``: a chat dataset)."""
    section = manifest.get("task") if isinstance(manifest, dict) else None
    if not section:
        return None
    from transforms.tasks import task_class

    task = task_class(section["name"])
    options = task.options_class(**dict(section.get("options") or {}))
    return TaskSpec(name=section["name"], options=options)


def as_task_spec(options: Any) -> TaskSpec:
    """``options`` as a :class:`TaskSpec`: a spec as is, chat ``FormatOptions`` (or ``None``) as the chat task's."""
    if isinstance(options, TaskSpec):
        return options
    if options is None:
        return TaskSpec()
    if isinstance(options, FormatOptions):
        return TaskSpec(format_options=options)
    raise TypeError(f"expected FormatOptions or TaskSpec, got {type(options).__name__}")
