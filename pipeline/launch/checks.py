"""The launch-time checks that turn parsed flags into a :class:`~pipeline.launch.plan.JobPlan`:
the tokenizer is loaded (prepared cache) and shared with in-process workers, a template that reads the
clock gets its date pinned, the template is checked under a time limit, the inputs are matched and
checked, the processor of a vision job is loaded. Every problem is a ``ConfigError`` (one line, exit 2)
before any work starts.
"""
from __future__ import annotations

import dataclasses
import logging

from pipeline.io.files import storage_errors
from pipeline.io.input_files import expand_input_sizes, launch_problem, not_regular_reason, storage_error_text
from pipeline.io.remote import load_job_tokenizer, share_job_tokenizer
from pipeline.launch.cli import ConfigError, JobArgs, check_num_shards_for_input
from pipeline.launch.engine_choice import weighted_input_bytes
from pipeline.launch.plan import JobPlan, load_vision, make_plan
from pipeline.launch.time_limit import LaunchCheckTimeout, call_with_time_limit
from pipeline.steps.scan import resolve_task_options
from transforms.template_check import TemplateUnusable, check_template
from transforms.template_env import TemplateRefused, template_traits, today_iso
from transforms.tokenizer_loading import TokenizerConfigError
from transforms.vision.config import VisionConfigError

LOG = logging.getLogger("chatshards")


def list_input_sizes(patterns) -> dict[str, int]:
    """``{path: size}`` of the files the ``--input`` patterns match
    (:func:`pipeline.io.input_files.expand_input_sizes`), at launch. A pattern that matches nothing, or that the
    storage cannot list (a missing bucket, no credentials, no network: Beam's ``BeamIOError``, after the storage
    client's own retries; an invalid local pattern: ``StorageError``) is a configuration error (``ConfigError``),
    one line, before any work."""
    try:
        return expand_input_sizes(patterns)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    except (*storage_errors(), ValueError) as exc:  # ValueError: no filesystem for the scheme
        raise ConfigError(f"--input cannot be listed: {storage_error_text(exc)}") from exc


def match_datasets(job: JobArgs) -> tuple[JobArgs, dict[str, int]]:
    """A job with a datasets list (``--config``): every entry's globs matched (an entry whose globs match nothing,
    or that cannot be listed, is named in the ``ConfigError``), no file in two entries; returns the job with
    each entry's files and ``{path: size}`` of all of them."""
    sizes: dict[str, int] = {}
    owner: dict[str, str] = {}
    files: dict[str, tuple[str, ...]] = {}
    for position, entry in enumerate(job.mixture.datasets):
        try:
            found = list_input_sizes(entry.patterns)
        except ConfigError as exc:
            text = str(exc).replace("--input ", "")
            raise ConfigError(f"datasets[{position}] ({entry.name}): files {text}") from None
        for path in found:
            if path in owner:
                raise ConfigError(f"datasets[{position}] ({entry.name}): {path} is also a file of dataset "
                                  f"{owner[path]}; a file belongs to one dataset (copy it, or use epochs)")
            owner[path] = entry.name
        files[entry.name] = tuple(found)
        sizes.update(found)
    return dataclasses.replace(job, mixture=job.mixture.with_files(files)), sizes


def check_input_files(files) -> None:
    """Local inputs that are directories, unreadable, or compressed files that do not decode are
    configuration errors (``ConfigError``); FIFOs and other non-regular files are rejected by the job
    (``unreadable_input``) and announced here."""
    for path in files or ():
        problem = launch_problem(path)
        if problem is not None:
            raise ConfigError(problem)
        reason = not_regular_reason(path)
        if reason is not None:
            LOG.warning("chatshards: --input %s %s; it is rejected as unreadable_input", path, reason)


def _pin_template_date(job: JobArgs, tokenizer) -> JobArgs:
    """A template that reads the clock (``strftime_now``, Llama 3) renders the date pinned here (today unless
    ``--template-date``), recorded in the config, so reruns with the same config are byte-identical; other
    templates get no date (it would change nothing)."""
    try:
        traits = template_traits(tokenizer.chat_template)
    except TemplateRefused as exc:
        raise ConfigError(str(exc)) from exc
    date = (job.tokenize_options.template_date or today_iso()) if traits.reads_clock else None
    if date == job.tokenize_options.template_date:
        return job
    return dataclasses.replace(job, tokenize_options=dataclasses.replace(job.tokenize_options, template_date=date))


# The chat template's launch check renders a short probe conversation about a dozen times: it may take
# this many --template-timeout budgets in all before the template counts as one that never ends.
LAUNCH_CHECK_BUDGETS = 3


def _bounded_template_check(check_template, tokenizer, job: JobArgs):
    """``check_template`` under a time limit (:mod:`pipeline.launch.time_limit`): a template whose loops never
    end is a configuration error at launch instead of a hang."""
    seconds = LAUNCH_CHECK_BUDGETS * job.tokenize_options.render_seconds
    try:
        return call_with_time_limit(
            lambda: check_template(tokenizer, loss=job.tokenize_options.loss, options=job.tokenize_options), seconds)
    except LaunchCheckTimeout:
        raise ConfigError(f"the chat template's launch check (a few renders of a short conversation) took more "
                          f"than {seconds:g} s: the template loops too long (if it is only slow, raise "
                          "--template-timeout)") from None


def check_task_tokenizer(job: JobArgs, tokenizer) -> None:
    """The task's launch checks that need the tokenizer (a token it needs, such as EOS or [MASK]): ``ConfigError``."""
    from transforms.tasks import task_class

    try:
        task_class(job.task).check_tokenizer(job.task_options, tokenizer)
        task_class(job.task).check_build(job.task_options, job.tokenize_options, tokenizer)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def plan_job(job: JobArgs) -> JobPlan:
    """The launch-time checks and the :class:`~pipeline.launch.plan.JobPlan` of ``job``: tokenizer loaded (and shared
    with the in-process runner's workers), template checked, inputs matched and checked, processor loaded.
    Raises ``ConfigError``."""
    from transforms.tasks import task_class

    # the tasks that render a chat template (chat, preference, kto) check it at launch; text|seq2seq|mlm... do not
    chat = job.task_options is None or task_class(job.task).needs_chat_template
    try:
        tokenizer = load_job_tokenizer(job.tokenizer, chat_template_file=job.chat_template,
                                       trust_remote_code=job.trust_remote_code, require_chat_template=chat)
        if chat:
            job = _pin_template_date(job, tokenizer)
            report = _bounded_template_check(check_template, tokenizer, job)
        else:
            report = None
        if job.task_options is not None:
            check_task_tokenizer(job, tokenizer)
        if job.mixture is not None:
            job, sizes = match_datasets(job)
        else:
            sizes = list_input_sizes(job.inputs) if job.validate_inputs else None
        files = sorted(sizes) if sizes is not None else None
        check_input_files(files)
        job = resolve_task_options(job, files)  # a label map built from the data (classification, NER)
        if sizes is not None:
            check_num_shards_for_input(job.num_shards, sum(sizes.values()))
        vision = load_vision(job, tokenizer)  # --processor: its family config
    except (TokenizerConfigError, TemplateUnusable, FileNotFoundError, VisionConfigError) as exc:
        raise ConfigError(str(exc)) from exc
    # the in-process runner's builder and audit writer reuse it (the job's chat template is already set)
    share_job_tokenizer(job.tokenizer, tokenizer, trust_remote_code=job.trust_remote_code,
                        require_chat_template=chat)
    return make_plan(job, tokenizer, template_report=report, files=files, vision=vision,
                     input_bytes=weighted_input_bytes(sizes) if sizes is not None else None)


