"""The launch scan: a task that builds part of its options from the data (the label map of
``--task classification`` / ``token-classification`` without ``--labels``) reads every input record's
example once, before the job is planned (Beam-free; both engines then receive the completed options, so
the fingerprint, the manifest and every worker agree on them)."""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

from pipeline.io.input_files import expand_inputs
from pipeline.launch.cli import ConfigError, JobArgs
from pipeline.steps.reading import read_file
from transforms.errors import RecordRejected


def _examples(spec, paths: Sequence[str]) -> Iterator:
    for path in paths:
        for raw in read_file(path, spec):
            if raw.value is None:
                continue
            try:
                yield spec.parse(raw.value)
            except RecordRejected:
                continue  # rejected again, with its reason, when the job parses it


def resolve_task_options(job: JobArgs, files: Sequence[str] | None) -> JobArgs:
    """``job`` with its task options completed by the task's scan of the inputs (unchanged when the task
    needs none). ``files``: the matched inputs (``None``: the patterns are expanded here). ``ConfigError``
    when the data cannot complete them (for example no record has a label)."""
    from transforms.tasks import task_class
    from transforms.tasks.spec import TaskSpec

    if job.task_options is None:
        return job
    task = task_class(job.task)
    if not task.needs_scan(job.task_options):
        return job
    if job.mixture is not None:  # each dataset's records read with its own options
        examples = (example for entry in job.mixture.datasets for example in _examples(entry.task, entry.files))
    else:
        paths = list(files) if files is not None else expand_inputs(job.inputs)
        examples = _examples(TaskSpec(name=job.task, options=job.task_options), paths)
    try:
        options = task.resolve_options(job.task_options, examples)
    except ValueError as exc:
        raise ConfigError(f"--task {job.task}: {exc}") from exc
    job = dataclasses.replace(job, task_options=options)
    if job.mixture is not None:  # the datasets take the completed options, with their own format and field map
        entries = tuple(dataclasses.replace(entry, task=TaskSpec(name=job.task, options=dataclasses.replace(
            options, format=entry.task.options.format, field_map=entry.task.options.field_map)))
            for entry in job.mixture.datasets)
        job = dataclasses.replace(job, mixture=dataclasses.replace(job.mixture, datasets=entries))
    return job
