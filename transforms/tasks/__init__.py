"""Tasks: what a record becomes for one model head (``python -m pipeline --task NAME``).

Each task is a module here with a :class:`~transforms.tasks.base.Task` subclass registered in :data:`TASKS`
(the ``--task`` choices follow it); :mod:`~transforms.tasks.base` is the interface (options, flags, parse,
schema, build, audit figures, manifest section), :mod:`~transforms.tasks.spec` the tokenizer-free
:class:`~transforms.tasks.spec.TaskSpec` the job's steps receive. ``docs/tasks.md`` describes every task.

- ``chat`` (:class:`~transforms.tasks.chat.ChatTask`, the default): conversations -> chat-template rows.
- ``text`` (:class:`~transforms.tasks.text.TextTask`): raw text for causal LM (continued pretraining).
- ``seq2seq`` (:class:`~transforms.tasks.seq2seq.Seq2SeqTask`): source/target pairs for encoder-decoders.
- ``mlm`` (:class:`~transforms.tasks.mlm.MlmTask`): raw text for masked LM (masked at run time).
- ``classification`` (:class:`~transforms.tasks.classification.ClassificationTask`): a text or a sentence pair
  and a label (class, multi-label, regression) for sequence classification.
- ``token-classification`` (:class:`~transforms.tasks.token_classification.TokenClassificationTask`): words and
  their tags (NER, POS; JSON or CoNLL files), labels on first sub-tokens.
- ``qa`` (:class:`~transforms.tasks.qa.QATask`): SQuAD questions and contexts -> windowed features with answer
  positions (extractive QA).
- ``preference`` / ``kto`` (:mod:`~transforms.tasks.preference`): preference pairs (DPO) and unpaired feedback
  (KTO), split into prompt and completions with the chat template machinery of SFT labels.

:func:`task_class` looks one up.
"""
from __future__ import annotations

from transforms.tasks.base import Task, TaskFigures, TaskFlag, TaskOptions
from transforms.tasks.chat import ChatTask
from transforms.tasks.classification import ClassificationTask
from transforms.tasks.mlm import MlmTask
from transforms.tasks.preference import KtoTask, PreferenceTask
from transforms.tasks.qa import QATask
from transforms.tasks.seq2seq import Seq2SeqTask
from transforms.tasks.text import TextTask
from transforms.tasks.token_classification import TokenClassificationTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (ChatTask, TextTask, Seq2SeqTask, MlmTask,
                                                             ClassificationTask, TokenClassificationTask, QATask,
                                                             PreferenceTask, KtoTask)}


def task_class(name: str):
    """The task class registered as ``name`` (``ValueError`` for an unknown name)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def task_flags() -> dict[str, tuple[TaskFlag, list[str]]]:
    """Every task's flags by name: ``{name: (flag, [tasks that declare it])}`` (a flag shared by several
    tasks must mean the same in each: same field, type, choices and value)."""
    flags: dict[str, tuple[TaskFlag, list[str]]] = {}
    for name, task in TASKS.items():
        for flag in task.flags:
            if flag.name in flags:
                known, owners = flags[flag.name]
                if (known.field, known.type, known.choices, known.switch, known.value) != \
                        (flag.field, flag.type, flag.choices, flag.switch, flag.value):
                    raise ValueError(f"--{flag.name} is declared differently by tasks {owners[0]} and {name}")
                owners.append(name)
            else:
                flags[flag.name] = (flag, [name])
    return flags


__all__ = ["TASKS", "ChatTask", "KtoTask", "MlmTask", "PreferenceTask", "Seq2SeqTask", "Task", "TaskFigures",
           "TaskFlag", "TaskOptions", "TextTask", "task_class", "task_flags"]
