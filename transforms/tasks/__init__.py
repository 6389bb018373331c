"""Tasks: what rows an example becomes (chat today; text, seq2seq, classification and MLM are
sibling modules to come). A task has ``prepare(raw, example) -> pending rows`` (each with the
``text`` to tokenize), ``finish(pending, encoding) -> row``, ``start_batch``/``end_batch`` hooks,
``extra_fields()`` and an ``encoder`` (see :class:`transforms.tasks.chat.ChatTask`).

:data:`TASKS` maps a task name to its class; :func:`task_class` looks one up.
"""
from __future__ import annotations

from transforms.tasks.chat import ChatTask

TASKS = {ChatTask.name: ChatTask}


def task_class(name: str):
    """The task class registered as ``name`` (``ValueError`` for an unknown name)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "ChatTask", "task_class"]
