"""Running the job's plan as a Beam pipeline (any Beam flag, ``gs://`` paths, Dataflow): the Beam options
(the default command's running mode on the local FnApiRunner), the output claimed unless ``--dry_run``,
the graph built (:func:`pipeline.engines.beam.graph.build_graph`) and run.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from pipeline.engines.beam.graph import build_graph
from pipeline.io.trace import mark
from pipeline.launch.cli import JobArgs
from pipeline.launch.engine_choice import PARALLEL_INPUT_BYTES, every_core, input_bytes, parallel_threshold
from pipeline.launch.plan import JobPlan

LOG = logging.getLogger("chatshards")


def is_dry_run(options) -> bool:
    """``--dry_run=True`` (Dataflow): the job graph is built and translated, nothing is submitted."""
    return bool(options.view_as(TestOptions).dry_run)


def default_running_mode(inputs: Sequence[str], validate_inputs: bool = True) -> tuple[str, int]:
    """``(direct_running_mode, workers)`` for the default command forced onto Beam: ``("multi_processing",
    cores)`` when the machine has several cores and the input is at least
    :data:`~pipeline.launch.engine_choice.PARALLEL_INPUT_BYTES` (or ``CHATSHARDS_PARALLEL_BYTES``), else
    ``("in_memory", 1)`` (also when inputs are not matched at launch). Printed on stderr when it chooses
    several processes."""
    return _choose_running_mode(tuple(inputs), bool(validate_inputs), parallel_threshold(PARALLEL_INPUT_BYTES),
                                os.cpu_count() or 1)


@functools.lru_cache(maxsize=8)
def _choose_running_mode(inputs: tuple[str, ...], validate_inputs: bool, threshold: int,
                         cores: int) -> tuple[str, int]:
    if cores < 2 or not validate_inputs:
        return "in_memory", 1
    workers = every_core(input_bytes(inputs), threshold, cores,
                         one_process="--runner=FnApiRunner --direct_running_mode=in_memory")
    return ("multi_processing", workers) if workers > 1 else ("in_memory", 1)


def beam_args(job: JobArgs) -> list[str]:
    """The Beam flags: the user's, or for the default command the local FnApiRunner in the mode
    :func:`default_running_mode` chooses (a ``--direct_running_mode`` or ``--direct_num_workers`` of
    the user's is kept as given)."""
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


def run_on_beam(job: JobArgs, plan: JobPlan, *, wait: bool, claim_output: Callable[[], Callable[[], None]]):
    """Build and run the Beam graph of ``plan``; returns ``(result, dry_run)``.

    ``claim_output()`` claims ``--output`` and returns the function that releases it; it is not called with
    ``--dry_run=True`` (then the output folder is not inspected: no storage access). ``wait=False`` returns
    once the runner accepted the job (the Flex Template launcher: Dataflow jobs are not waited on there), so
    the claim covers only the submission."""
    options = PipelineOptions(beam_args(job))
    mark("launcher_checked")
    dry_run = is_dry_run(options)
    release = None
    if dry_run:
        LOG.warning("chatshards: --dry_run: --output %s is not checked and nothing is submitted", job.output)
    else:
        release = claim_output()
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, plan)
    try:
        result = pipeline.run()
        if wait:
            result.wait_until_finish()
    finally:  # wait=False (Dataflow): the lock covers only the submission (see the Reliability docs)
        if release is not None:
            release()
    return result, dry_run
