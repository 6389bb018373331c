"""``python -m pipeline``: check the configuration, claim the output folder, run the job on the engine
chosen for it, print the summary.

1. flags -> :class:`~pipeline.launch.cli.JobArgs` (:mod:`pipeline.launch.cli`);
2. launch-time checks -> the frozen :class:`~pipeline.launch.plan.JobPlan` (:mod:`pipeline.launch.checks`);
3. the engine (:mod:`pipeline.launch.engine_choice`): the local engine (:mod:`pipeline.engines.local`, no
   Beam) for the default command on local files, else the Beam graph (:mod:`pipeline.engines.beam.run`);
4. ``--output`` claimed (:func:`pipeline.launch.output_folder.claim_output`) and the job run.

Configuration errors (bad flags, unloadable tokenizer, unusable chat template, inputs that match nothing
or cannot be read, an output folder that already holds a dataset, is not this tool's, overlaps the
inputs or is in use by another run) exit with status 2 and one clear line on stderr before any work
starts. Beam is imported only when the job runs on it (importing it costs about 1.2 s).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Sequence

from pipeline.io.files import join, read_bytes, storage_errors
from pipeline.io.input_files import storage_error_text
from pipeline.io.trace import mark
from pipeline.launch.checks import plan_job
from pipeline.launch.cli import ConfigError, JobArgs, parse_args
from pipeline.launch.engine_choice import LOCAL, chosen_engine, local_workers
from pipeline.launch.output_folder import claim_output
from pipeline.launch.plan import JobPlan
from transforms import shard_format as sf

LOG = logging.getLogger("chatshards")


def run(job: JobArgs, *, wait: bool = True):
    """Check, then run the job; returns the manifest (local engine) or ``(Beam result, dry_run)``.

    ``wait=False`` returns as soon as the runner accepted the job (the Flex Template launcher does
    this: Dataflow jobs must not be waited on there). With ``--dry_run=True`` the output folder is
    not inspected (no storage access: the graph is only built and translated).
    """
    plan = plan_job(job)
    if chosen_engine(job, plan) == LOCAL:
        return _run_locally(job, plan)
    from pipeline.engines.beam.run import run_on_beam  # imports Beam (about 1.2 s): Beam jobs only

    return run_on_beam(job, plan, wait=wait, claim_output=lambda: _claim(job, plan).release)


def _claim(job: JobArgs, plan: JobPlan):
    """:func:`~pipeline.launch.output_folder.claim_output`, a storage failure reported as a ``ConfigError``."""
    try:
        return claim_output(job.output, inputs=job.inputs, files=plan.files, overwrite=job.overwrite)
    except storage_errors() as exc:  # the storage of --output cannot be listed or written
        raise ConfigError(f"--output {job.output!r} cannot be used: {storage_error_text(exc)}") from exc


def _run_locally(job: JobArgs, plan: JobPlan) -> dict:
    from pipeline.engines.local.engine import run_locally
    from pipeline.engines.local.workers import WorkerFailed

    workers = local_workers(job, plan)
    mark("launcher_checked")
    lock = _claim(job, plan)
    mark("output_claimed")
    try:
        return run_locally(plan, workers=workers)
    except WorkerFailed as exc:
        raise RuntimeError(f"the job failed; no manifest was written: {exc}") from None
    finally:
        lock.release()


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
        return 0
    beam_result, dry_run = result
    if dry_run:
        print(f"chatshards: dry run: job graph built ({type(beam_result).__name__}), nothing submitted")
    elif not wait:
        print(f"chatshards: job submitted; output will be in {job.output}")
    else:
        _print_summary(job, time.monotonic() - started)
    return 0


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
    if "audit" in manifest:
        print(f"chatshards: audit report: {join(job.output, 'audit', 'report.html')}")
