"""``python -m pipeline``: validate the configuration, then run the job: on the local engine
(:mod:`pipeline.local_engine`, no Beam) for the default command on local files, else as a Beam job.

Config errors (bad flags, unloadable tokenizer, unusable chat template, inputs that match nothing
or cannot be read, an output folder that already holds a dataset, is not this tool's, overlaps the
inputs or is in use by another run) exit with status 2 and one clear line on stderr before any
work starts.

Beam is imported only when the job runs on Beam (importing it costs about 1.2 s).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from typing import Sequence

from pipeline.cli import ConfigError, JobArgs, check_num_shards_for_input, parse_args
from pipeline.files import is_local, join, read_bytes, storage_errors
from pipeline.input_files import launch_problem, list_input_sizes, not_regular_reason, storage_error_text
from pipeline.output_folder import OutputLock, check_inputs_outside_output, check_output_target, prepare_output
from pipeline.plan import JobPlan, load_vision, make_plan
from pipeline.remote import load_job_tokenizer, share_job_tokenizer
from pipeline.time_limit import LaunchCheckTimeout, call_with_time_limit
from pipeline.trace import mark
from transforms import shard_format as sf
from transforms.template_check import TemplateUnusable, check_template
from transforms.template_env import TemplateRefused, template_traits, today_iso
from transforms.tokenizer_loading import TokenizerConfigError
from transforms.vision.config import VisionConfigError

LOG = logging.getLogger("chatshards")


def claim_output(job: JobArgs, files):
    """Launch-time checks and claim of ``--output``: a folder, not overlapping the inputs, locked for this
    run (:class:`pipeline.output_folder.OutputLock`), then prepared (:func:`pipeline.output_folder.prepare_output`:
    with ``--overwrite`` only what an earlier run of this tool wrote is deleted). Returns the held lock
    (release it when the run ends); raises ``ConfigError``."""
    check_output_target(job.output)
    check_inputs_outside_output(job.output, job.inputs, files)
    lock = OutputLock(job.output).acquire()
    try:
        prepare_output(job.output, overwrite=job.overwrite, input_files=files or ())
    except BaseException:
        lock.release()
        raise
    return lock


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


def is_dry_run(options) -> bool:
    """``--dry_run=True`` (Dataflow): the job graph is built and translated, nothing is submitted."""
    from apache_beam.options.pipeline_options import TestOptions  # Beam jobs only (see the module docstring)

    return bool(options.view_as(TestOptions).dry_run)


# The default command runs on every core when the input holds at least this many bytes (compressed files
# count COMPRESSED_FACTOR times their size), else in one process. On the local engine a worker process is
# forked with everything loaded (about 0.1 s), so the threshold is low: LOCAL_PARALLEL_INPUT_BYTES. Beam's
# worker processes start in about 4 s on 2 cores, so a default command forced onto Beam
# (CHATSHARDS_ENGINE=beam) uses every core from PARALLEL_INPUT_BYTES. Measured with
# benchmarks/bench_job.py (README, Performance). CHATSHARDS_PARALLEL_BYTES overrides both thresholds
# (0: always every core); --workers N (local engine) sets the count itself.
PARALLEL_INPUT_BYTES = 12 * 1024 * 1024
LOCAL_PARALLEL_INPUT_BYTES = 1024 * 1024
PARALLEL_BYTES_ENV = "CHATSHARDS_PARALLEL_BYTES"
COMPRESSED_FACTOR = 4
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".deflate", ".lzma", ".zip")
# CHATSHARDS_ENGINE=beam runs the default command on Beam's FnApiRunner (as before the local engine);
# "local" is the default wherever the local engine can run.
ENGINE_ENV = "CHATSHARDS_ENGINE"
LOCAL, BEAM = "local", "beam"


def weighted_input_bytes(sizes) -> int:
    """Total of ``{path: size}`` with compressed files weighted ``COMPRESSED_FACTOR`` times."""
    return sum(size * (COMPRESSED_FACTOR if path.lower().endswith(_COMPRESSED_SUFFIXES) else 1)
               for path, size in sizes.items())


def input_bytes(patterns: Sequence[str]) -> int:
    """Total size of the files ``patterns`` match (compressed files weighted); 0 when they cannot be listed."""
    try:
        return weighted_input_bytes(list_input_sizes(patterns))
    except Exception:  # the input check reports unmatched inputs; here it is only a hint
        return 0


def parallel_threshold(default: int = PARALLEL_INPUT_BYTES) -> int:
    value = os.environ.get(PARALLEL_BYTES_ENV, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"{PARALLEL_BYTES_ENV}={value!r} is not a number of bytes") from None


def chosen_engine(job: JobArgs, plan: JobPlan) -> str:
    """:data:`LOCAL` for the default command (no Beam flags) when the inputs were matched at launch and every
    input and the output are local paths (and ``CHATSHARDS_ENGINE`` is not ``beam``); else :data:`BEAM`."""
    wanted = os.environ.get(ENGINE_ENV, "").strip().lower() or LOCAL
    if wanted not in (LOCAL, BEAM):
        raise ConfigError(f"{ENGINE_ENV}={wanted!r}: use {LOCAL!r} or {BEAM!r}")
    if wanted == BEAM or job.beam_args or plan.files is None:
        return BEAM
    return LOCAL if is_local(job.output) and all(is_local(path) for path in plan.files) else BEAM


def local_workers(job: JobArgs, plan: JobPlan) -> int:
    """Processes of the local engine: ``--workers``, else one per core when the input holds at least
    :data:`LOCAL_PARALLEL_INPUT_BYTES` (said on stderr), else 1."""
    if job.workers is not None:
        return job.workers
    return _every_core(plan.input_bytes or 0, parallel_threshold(LOCAL_PARALLEL_INPUT_BYTES), os.cpu_count() or 1,
                       one_process="--workers 1")


def _every_core(total: int, threshold: int, cores: int, *, one_process: str) -> int:
    """``cores`` when there are several and the input holds at least ``threshold`` bytes (said on stderr,
    with ``one_process``: the flags that run one process instead), else 1."""
    if cores < 2 or total < threshold:
        return 1
    print(f"chatshards: input {total / 2**20:.1f} MiB: running on {cores} worker processes (every core); "
          f"for one process pass {one_process}", file=sys.stderr)
    return cores


def default_running_mode(inputs: Sequence[str], validate_inputs: bool = True) -> tuple[str, int]:
    """``(direct_running_mode, workers)`` for the default command: ``("multi_processing", cores)`` when
    the machine has several cores and the input is at least :func:`parallel_threshold` bytes, else
    ``("in_memory", 1)`` (also when inputs are not matched at launch). Printed on stderr when it
    chooses several processes."""
    return _choose_running_mode(tuple(inputs), bool(validate_inputs), parallel_threshold(), os.cpu_count() or 1)


@functools.lru_cache(maxsize=8)
def _choose_running_mode(inputs: tuple[str, ...], validate_inputs: bool, threshold: int,
                         cores: int) -> tuple[str, int]:
    if cores < 2 or not validate_inputs:
        return "in_memory", 1
    workers = _every_core(input_bytes(inputs), threshold, cores,
                          one_process="--runner=FnApiRunner --direct_running_mode=in_memory")
    return ("multi_processing", workers) if workers > 1 else ("in_memory", 1)


def _beam_args(job: JobArgs) -> list[str]:
    """The Beam flags: the user's, or for the default command the local FnApiRunner in the mode
    :func:`default_running_mode` chooses (a ``--direct_running_mode`` or ``--direct_num_workers`` of
    the user's is kept as given)."""
    mark("launcher_checked")
    args = list(job.beam_args)
    if not any(a.startswith("--runner") for a in args):
        # Plain DirectRunner first tries to download the Prism runner; name the Python runner instead.
        args.append("--runner=FnApiRunner")
        if not any(a.startswith(("--direct_running_mode", "--direct_num_workers")) for a in args):
            mode, workers = default_running_mode(job.inputs, job.validate_inputs)
            args.append(f"--direct_running_mode={mode}")
            if mode != "in_memory":
                args.append(f"--direct_num_workers={workers}")
        elif not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=in_memory")
    return args


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
    """``check_template`` under a time limit (:mod:`pipeline.time_limit`): a template whose loops never
    end is a configuration error at launch instead of a hang."""
    seconds = LAUNCH_CHECK_BUDGETS * job.tokenize_options.render_seconds
    try:
        return call_with_time_limit(
            lambda: check_template(tokenizer, loss=job.tokenize_options.loss, options=job.tokenize_options), seconds)
    except LaunchCheckTimeout:
        raise ConfigError(f"the chat template's launch check (a few renders of a short conversation) took more "
                          f"than {seconds:g} s: the template loops too long (if it is only slow, raise "
                          "--template-timeout)") from None


def plan_job(job: JobArgs) -> JobPlan:
    """The launch-time checks and the :class:`~pipeline.plan.JobPlan` of ``job``: tokenizer loaded (and shared
    with the in-process runner's workers), template checked, inputs matched and checked, processor loaded.
    Raises ``ConfigError``."""
    try:
        tokenizer = load_job_tokenizer(job.tokenizer, chat_template_file=job.chat_template,
                                       trust_remote_code=job.trust_remote_code)
        job = _pin_template_date(job, tokenizer)
        report = _bounded_template_check(check_template, tokenizer, job)
        sizes = list_input_sizes(job.inputs) if job.validate_inputs else None
        files = sorted(sizes) if sizes is not None else None
        check_input_files(files)
        if sizes is not None:
            check_num_shards_for_input(job.num_shards, sum(sizes.values()))
        vision = load_vision(job, tokenizer)  # --processor: its family config
    except (TokenizerConfigError, TemplateUnusable, FileNotFoundError, VisionConfigError) as exc:
        raise ConfigError(str(exc)) from exc
    # the in-process runner's builder and audit writer reuse it (the job's chat template is already set)
    share_job_tokenizer(job.tokenizer, tokenizer, trust_remote_code=job.trust_remote_code)
    return make_plan(job, tokenizer, template_report=report, files=files, vision=vision,
                     input_bytes=weighted_input_bytes(sizes) if sizes is not None else None)


def run(job: JobArgs, *, wait: bool = True):
    """Validate, then run the job; returns the manifest (local engine) or the Beam result.

    ``wait=False`` returns as soon as the runner accepted the job (the Flex Template launcher does
    this: Dataflow jobs must not be waited on there). With ``--dry_run=True`` the output folder is
    not inspected (no storage access: the graph is only built and translated).
    """
    plan = plan_job(job)
    if chosen_engine(job, plan) == LOCAL:
        return _run_locally(job, plan)
    return _run_on_beam(job, plan, wait=wait)


def _run_locally(job: JobArgs, plan: JobPlan) -> dict:
    from pipeline.local_engine import WorkerFailed, run_locally

    workers = local_workers(job, plan)
    mark("launcher_checked")
    try:
        lock = claim_output(job, plan.files)
    except storage_errors() as exc:  # --output cannot be listed or written
        raise ConfigError(f"--output {job.output!r} cannot be used: {storage_error_text(exc)}") from exc
    mark("output_claimed")
    try:
        return run_locally(plan, workers=workers)
    except WorkerFailed as exc:
        raise RuntimeError(f"the job failed; no manifest was written: {exc}") from None
    finally:
        lock.release()


def _run_on_beam(job: JobArgs, plan: JobPlan, *, wait: bool):
    # Beam is imported here, when the job runs on it (about 1.2 s; see the module docstring).
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.graph import build_graph

    options = PipelineOptions(_beam_args(job))
    lock = None
    if is_dry_run(options):
        LOG.warning("chatshards: --dry_run: --output %s is not checked and nothing is submitted", job.output)
    else:
        try:
            lock = claim_output(job, plan.files)
        except storage_errors() as exc:  # the storage of --output cannot be listed or written
            raise ConfigError(f"--output {job.output!r} cannot be used: {storage_error_text(exc)}") from exc
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, plan)
    try:
        result = pipeline.run()
        if wait:
            result.wait_until_finish()
    finally:  # wait=False (Dataflow): the lock covers only the submission (see README, "Reliability")
        if lock is not None:
            lock.release()
    return result


def main(argv: Sequence[str] | None = None, *, wait: bool = True) -> int:
    """``python -m pipeline``; ``wait=False`` returns once the job is submitted (Flex Template launcher)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    started = time.monotonic()
    try:
        job = parse_args(argv)
        result = run(job, wait=wait)
    except ConfigError as exc:
        print(f"chatshards: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, dict):  # the local engine's manifest
        _print_summary(job, time.monotonic() - started, result)
    elif is_dry_run(_beam_options(job)):
        print(f"chatshards: dry run: job graph built ({type(result).__name__}), nothing submitted")
    elif not wait:
        print(f"chatshards: job submitted; output will be in {job.output}")
    else:
        _print_summary(job, time.monotonic() - started)
    return 0


def _beam_options(job: JobArgs):
    from apache_beam.options.pipeline_options import PipelineOptions  # Beam jobs only

    return PipelineOptions(_beam_args(job))


def _print_summary(job: JobArgs, seconds: float, manifest: dict | None = None) -> None:
    if manifest is None:
        try:  # local or gs://
            manifest = json.loads(read_bytes(join(job.output, sf.MANIFEST_NAME)).decode("utf-8"))
        except Exception:  # the summary is informational
            print(f"chatshards: job finished in {seconds:.1f}s; output in {job.output}")
            return
    counts = manifest["counts"]
    reasons = ", ".join(f"{k}={v}" for k, v in manifest["rejected_by_reason"].items()) or "none"
    split = f" from {counts['written']} records" if counts.get("rows", counts["written"]) != counts["written"] else ""
    print(
        f"chatshards: read {counts['read']} records, wrote {counts.get('rows', counts['written'])} rows{split} "
        f"({manifest['totals']['tokens']} tokens, {manifest['totals']['loss_tokens']} trained) in "
        f"{manifest['num_shards']} shard(s), rejected {counts['rejected']} ({reasons}) in {seconds:.1f}s "
        f"({counts['read'] / max(seconds, 1e-9):.0f} records/s) -> {job.output}"
    )
    packing = manifest.get("packing")
    if packing:
        print(f"chatshards: packed {packing['sequences']} rows into {packing['packs']} rows of at most "
              f"{packing['length']} tokens ({packing['strategy']}, per shard): efficiency {packing['efficiency']}, "
              f"{packing['truncated_to_fit']['sequences']} rows truncated to fit")
    if "audit" in manifest:
        print(f"chatshards: audit report: {join(job.output, 'audit', 'report.html')}")
