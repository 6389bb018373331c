"""``python -m pipeline``: check the configuration, claim the output folder, run the job on the engine
chosen for it, print the summary.

1. flags (and a ``--config`` file, :mod:`pipeline.launch.config_file`) -> :class:`~pipeline.launch.cli.JobArgs`
   (:mod:`pipeline.launch.cli`);
2. launch-time checks -> the frozen :class:`~pipeline.launch.plan.JobPlan` (:mod:`pipeline.launch.checks`);
3. the engine (:mod:`pipeline.launch.engine_choice`): the local engine (:mod:`pipeline.engines.local`, no
   Beam) for the default command on local files, else the Beam graph (:mod:`pipeline.engines.beam.run`);
4. ``--output`` claimed (:func:`pipeline.launch.output_folder.claim_output`) and the job run.

Every way a job can end is one line on stderr and an exit status shells expect:

* configuration errors (bad flags, unloadable tokenizer, unusable chat template, inputs that match nothing
  or cannot be read, an output folder that already holds a dataset, is not this tool's, overlaps the
  inputs, is in use by another run, or cannot be written): status 2, before any work starts;
* a job that fails while it runs (a worker that raised, died or stalled, a full disk, a storage error):
  status 1, with the cause;
* a job that ran to the end but whose data failed: status 3, after the manifest, the shards, ``rejected/``
  and the audit are written (so the audit says why): it wrote no row (every record rejected, or inputs
  that hold no record), or it rejected more records than ``--max-rejected`` allows
  (:func:`data_problem`). A job whose rejections are over :data:`WARN_REJECTED_FRACTION` of the records read
  still exits 0, with a warning after the summary;
* ``SIGINT`` (Ctrl-C), ``SIGTERM``, ``SIGHUP``: status 130, 143, 129.

What the terminal shows: a progress line for the whole job (local engine:
:mod:`pipeline.engines.local.progress`), then the summary; ``--quiet`` shows neither (warnings and errors
still print). Apache Beam's own log lines (its workers' forwarded lines included) are hidden unless
``--verbose``.

A job that does not finish leaves no manifest, no shards or rejected files of its own and no ``.tmp``
(a local ``--output``: :func:`pipeline.launch.output_folder.abandon_run`), its workers stopped and its lock
released; ``CHATSHARDS_DEBUG=1`` adds the traceback. Beam is imported only when the job runs on it
(importing it costs about 1.2 s).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Sequence

from pipeline.io.files import is_local, join, read_bytes, storage_errors
from pipeline.io.input_files import storage_error_text
from pipeline.io.trace import mark
from pipeline.launch.checks import plan_job
from pipeline.launch.cli import ConfigError, JobArgs
from pipeline.launch.config_file import parse_command_line
from pipeline.launch.engine_choice import LOCAL, chosen_engine, local_workers
from pipeline.launch.output_folder import abandon_run, claim_output
from pipeline.launch.plan import JobPlan
from transforms import shard_format as sf
from transforms.audit.summary import prompt_mismatch_line

LOG = logging.getLogger("chatshards")
PREVIEWED = "previewed"  # what run() returns for --preview
DEBUG_ENV = "CHATSHARDS_DEBUG"
#: exit status of a job that ran to the end but wrote no row or rejected more than --max-rejected allows
DATA_FAILED = 3
#: above this fraction of the records read rejected, the summary warns (the job still succeeds)
WARN_REJECTED_FRACTION = 0.10
# Signals that stop a job cleanly (SIGINT is Python's KeyboardInterrupt).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class JobStopped(BaseException):
    """A stop signal reached the launcher (a ``BaseException``: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise():
    """While the job runs, ``SIGTERM`` and ``SIGHUP`` raise :class:`JobStopped` in the main thread (so the
    clean-up in ``finally`` blocks runs); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise JobStopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def failure_text(exc: BaseException) -> str:
    """One line saying why a running job failed: the last line of a worker's traceback, an ``OSError``'s
    message and file, else the exception's type and its message's last line (at most 400 characters)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        text = lines[-1] if lines else type(exc).__name__
        if not isinstance(exc, RuntimeError) or not lines:
            text = f"{type(exc).__name__}: {text}" if lines else text
    return text if len(text) <= 400 else text[:397] + "..."


def run(job: JobArgs, *, wait: bool = True):
    """Check, then run the job; returns the manifest (local engine) or ``(Beam result, dry_run)``.

    ``wait=False`` returns as soon as the runner accepted the job (the Flex Template launcher does
    this: Dataflow jobs must not be waited on there). With ``--dry_run=True`` the output folder is
    not inspected (no storage access: the graph is only built and translated).
    """
    plan = plan_job(job)
    if job.preview:  # the plan printed; nothing claimed, nothing written
        from pipeline.launch.preview import print_preview

        print_preview(job, plan)
        return PREVIEWED
    if chosen_engine(job, plan) == LOCAL:
        return _run_locally(job, plan)
    from pipeline.engines.beam.run import run_on_beam  # imports Beam (about 1.2 s): Beam jobs only

    claimed = []

    def claim():
        claimed.append(_claim(job, plan))
        return claimed[-1].release

    try:
        return run_on_beam(job, plan, wait=wait, claim_output=claim)
    except BaseException:
        if claimed and wait and is_local(job.output):
            abandon_run(job.output, input_files=plan.files or ())
        raise


def _claim(job: JobArgs, plan: JobPlan):
    """:func:`~pipeline.launch.output_folder.claim_output`, a storage failure reported as a ``ConfigError``."""
    try:
        return claim_output(job.output, inputs=job.inputs, files=plan.files, overwrite=job.overwrite)
    except storage_errors() as exc:  # the storage of --output cannot be listed or written
        raise ConfigError(f"--output {job.output!r} cannot be used: {storage_error_text(exc)}") from exc
    except OSError as exc:  # a read-only or unwritable folder, a full disk: found before any work
        raise ConfigError(f"--output {job.output!r} cannot be written: {exc.strerror or exc}") from exc


def _run_locally(job: JobArgs, plan: JobPlan) -> dict:
    from pipeline.engines.local.engine import run_locally, total_input_bytes
    from pipeline.engines.local.progress import ProgressLine
    from pipeline.engines.local.workers import WorkerFailed

    workers = local_workers(job, plan)
    mark("launcher_checked")
    lock = _claim(job, plan)
    mark("output_claimed")
    progress = ProgressLine(total_bytes=total_input_bytes(plan), enabled=not job.quiet)
    try:
        return run_locally(plan, workers=workers, worker_timeout=job.worker_timeout, progress=progress)
    except BaseException as exc:
        abandon_run(job.output, input_files=plan.files)
        if isinstance(exc, WorkerFailed):
            raise RuntimeError(str(exc)) from None
        raise
    finally:
        lock.release()


def _quiet_beam_logs(verbose: bool) -> None:
    """Beam's own log lines (``apache_beam.*``, and its workers' lines that local runners forward as
    ``Worker: ...``) only with ``--verbose`` (then Beam's INFO lines too); its errors always."""
    logging.getLogger("apache_beam").setLevel(logging.INFO if verbose else logging.ERROR)
    if verbose:
        logging.getLogger().setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None, *, wait: bool = True) -> int:
    """``python -m pipeline``; ``wait=False`` returns once the job is submitted (Flex Template launcher)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    started = time.monotonic()
    cleaned = "nothing was written"
    try:
        with stop_signals_raise():
            job = parse_command_line(argv)
            _quiet_beam_logs(job.verbose)
            if is_local(job.output):
                cleaned = "the run's partial files were removed"
            result = run(job, wait=wait)
    except ConfigError as exc:
        print(f"chatshards: error: {exc}", file=sys.stderr)
        return 2
    except (JobStopped, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, JobStopped) else signal.SIGINT
        _debug_traceback()
        print(f"chatshards: stopped by {signal.Signals(signum).name}; nothing was committed (no manifest; {cleaned})",
              file=sys.stderr)
        return 128 + signum
    except Exception as exc:  # noqa: BLE001 - a failed job is one line, not a traceback
        _debug_traceback()
        print(f"chatshards: error: the job failed: {failure_text(exc)}; no manifest was written ({cleaned}; "
              f"{DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return 1
    if result == PREVIEWED:
        return 0
    if isinstance(result, dict):  # the local engine's manifest
        return _finish(job, time.monotonic() - started, result)
    beam_result, dry_run = result
    if dry_run:
        if not job.quiet:
            print(f"chatshards: dry run: job graph built ({type(beam_result).__name__}), nothing submitted")
    elif not wait:
        if not job.quiet:
            print(f"chatshards: job submitted; output will be in {job.output}")
    else:
        return _finish(job, time.monotonic() - started, _read_manifest(job))
    return 0


def _debug_traceback() -> None:
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        traceback.print_exc()


def _read_manifest(job: JobArgs) -> dict | None:
    try:  # local or gs://
        return json.loads(read_bytes(join(job.output, sf.MANIFEST_NAME)).decode("utf-8"))
    except Exception:  # the summary is informational
        return None


def data_problem(counts: dict, max_rejected: int | float | None) -> str | None:
    """Why a finished job's data fails (exit status :data:`DATA_FAILED`), or ``None``: no row written (every
    record rejected, or no record read), or more rejections than ``max_rejected`` (a count, or a fraction of
    the records read)."""
    read, rejected = counts["read"], counts["rejected"]
    if read == 0:
        return "the inputs hold no records, so no row was written (an empty input file?)"
    if counts.get("rows", counts["written"]) == 0:
        return (f"no row was written: all {read:,} records read were rejected" if rejected == read
                else f"no row was written from the {read:,} records read")
    if isinstance(max_rejected, float) and rejected > max_rejected * read:
        return (f"{rejected:,} of {read:,} records were rejected ({100 * rejected / read:.1f}%), more than "
                f"--max-rejected {100 * max_rejected:g}% allows")
    if isinstance(max_rejected, int) and rejected > max_rejected:
        return f"{rejected:,} records were rejected, more than --max-rejected {max_rejected:,} allows"
    return None


def _finish(job: JobArgs, seconds: float, manifest: dict | None) -> int:
    """The summary (unless ``--quiet``), the rejection warning, and the exit status of a job that ran to the end."""
    if not job.quiet:
        _print_summary(job, seconds, manifest)
    if manifest is None:
        return 0
    counts = manifest["counts"]
    problem = data_problem(counts, job.max_rejected)
    reasons = ", ".join(f"{k}={v}" for k, v in manifest["rejected_by_reason"].items()) or "none"
    where = (f"{join(job.output, 'audit', 'report.html')}#rejections and " if "audit" in manifest else "") \
        + f"{join(job.output, sf.REJECTED_DIR)}/"
    if problem is not None:
        why = f" (rejected: {reasons}); the manifest, rejected/ and the audit are written: see {where}" \
            if counts["rejected"] else f"; the manifest is written in {job.output}"
        print(f"chatshards: error: {problem}{why}", file=sys.stderr)
        return DATA_FAILED
    if counts["read"] and counts["rejected"] > WARN_REJECTED_FRACTION * counts["read"]:
        print(f"chatshards: warning: {100 * counts['rejected'] / counts['read']:.1f}% of the records read were "
              f"rejected ({counts['rejected']:,} of {counts['read']:,}: {reasons}); see {where} "
              "(--max-rejected N|P% fails the job above a limit)", file=sys.stderr)
    return 0


def _print_summary(job: JobArgs, seconds: float, manifest: dict | None = None) -> None:
    if manifest is None:
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
    if "mixture" in manifest:
        taken = counts["read"] - counts["mixture_skipped"] + counts["mixture_repeats"]
        print(f"chatshards: mixture of {len(manifest['mixture']['datasets'])} datasets: took {taken} examples of "
              f"{counts['read']} records read ({counts['mixture_skipped']} not taken, {counts['mixture_repeats']} "
              f"repeats); per dataset in the manifest's mixture section")
    if "audit" in manifest:
        mismatch = manifest["audit"].get("prompt_mismatch")
        if mismatch:
            print(f"chatshards: {prompt_mismatch_line(mismatch)}")
        print(f"chatshards: audit report: {join(job.output, 'audit', 'report.html')}")
