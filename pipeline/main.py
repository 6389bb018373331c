"""``python -m pipeline``: validate the configuration, then build and run the Beam job.

Config errors (bad flags, unloadable tokenizer, unusable chat template, inputs that match nothing,
an output folder that already holds a dataset) exit with status 2 and one clear line on stderr
before any Beam work starts.
"""
from __future__ import annotations

import logging
import platform
import sys
import time
from typing import Sequence

from pipeline.cli import ConfigError, JobArgs, parse_args

LOG = logging.getLogger("chatshards")
CHATSHARDS_VERSION = "0.1.0"


class OutputExists(ConfigError):
    pass


def library_versions() -> dict[str, str]:
    import apache_beam
    import numpy
    import pyarrow
    import tokenizers
    import transformers

    return {
        "chatshards": CHATSHARDS_VERSION,
        "apache_beam": apache_beam.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def prepare_output(output: str, *, overwrite: bool) -> None:
    """Refuse to write into a folder holding a dataset (finished or not) unless ``overwrite``.

    With ``overwrite`` the old manifest is deleted first (so the folder stops being a finished
    dataset at once), then the old shards, rejected records, audit files and temporaries: shards of
    two runs are never mixed.
    """
    from apache_beam.io.filesystems import FileSystems

    from transforms import shard_format as sf

    names = [sf.MANIFEST_NAME, sf.DATA_DIR, sf.REJECTED_DIR, "audit", ".tmp"]
    present = [name for name in names if FileSystems.exists(FileSystems.join(output, name))]
    if not present:
        return
    if not overwrite:
        raise OutputExists(
            f"--output {output!r} already holds a dataset or a partial run ({', '.join(present)}); "
            "pass --overwrite to replace it, or choose another folder"
        )
    for name in names:  # manifest first
        path = FileSystems.join(output, name)
        if FileSystems.exists(path):
            FileSystems.delete([path])


def _beam_args(job: JobArgs) -> list[str]:
    args = list(job.beam_args)
    if not any(a.startswith("--runner") for a in args):
        # Plain DirectRunner first tries to download the Prism runner; name the Python runner instead.
        args.append("--runner=DirectRunner")
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=in_memory")
    return args


def run(job: JobArgs):
    """Validate, build and run the job; returns the manifest dict (local outputs) or the Beam result."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.build import BuilderSpec
    from pipeline.graph import build_graph
    from pipeline.sources import expand_inputs
    from transforms.config import JobConfig
    from transforms.template_check import TemplateUnusable, check_template
    from transforms.tokenizer_loading import TokenizerConfigError, load_tokenizer, tokenizer_description

    try:
        tokenizer = load_tokenizer(job.tokenizer, chat_template_file=job.chat_template,
                                   trust_remote_code=job.trust_remote_code)
        report = check_template(tokenizer, loss=job.tokenize_options.loss)
        files = expand_inputs(job.inputs) if job.validate_inputs else None
    except (TokenizerConfigError, TemplateUnusable, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from exc
    prepare_output(job.output, overwrite=job.overwrite)

    tokenizer_info = tokenizer_description(tokenizer)
    config = JobConfig(format=job.format_options.to_json(), tokenize=job.tokenize_options,
                       tokenizer=tokenizer_info, dedup=job.dedup, num_shards=job.num_shards)
    manifest_base = {
        "config": {**config.to_json(), "inputs": list(job.inputs)},
        "config_fingerprint": config.fingerprint(),
        "tokenizer": tokenizer_info,
        "chat_template_hash": tokenizer_info["chat_template_hash"],
        "template_check": report.to_json(),
        "versions": library_versions(),
    }
    spec = BuilderSpec(tokenizer=job.tokenizer, chat_template=tokenizer.chat_template,
                       trust_remote_code=job.trust_remote_code, format_options=job.format_options,
                       tokenize_options=job.tokenize_options)
    options = PipelineOptions(_beam_args(job))
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, patterns=job.inputs, files=files, output=job.output, spec=spec,
                manifest_base=manifest_base, num_shards=job.num_shards, batch_size=job.batch_size,
                dedup=job.dedup)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    started = time.monotonic()
    try:
        job = parse_args(argv)
        run(job)
    except ConfigError as exc:
        print(f"chatshards: error: {exc}", file=sys.stderr)
        return 2
    _print_summary(job, time.monotonic() - started)
    return 0


def _print_summary(job: JobArgs, seconds: float) -> None:
    import json
    import os

    from transforms import shard_format as sf

    path = os.path.join(job.output, sf.MANIFEST_NAME)
    if "://" in job.output or not os.path.isfile(path):
        print(f"chatshards: job finished in {seconds:.1f}s; output in {job.output}")
        return
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    counts = manifest["counts"]
    reasons = ", ".join(f"{k}={v}" for k, v in manifest["rejected_by_reason"].items()) or "none"
    print(
        f"chatshards: read {counts['read']} records, wrote {counts['written']} rows "
        f"({manifest['totals']['tokens']} tokens, {manifest['totals']['loss_tokens']} trained) in "
        f"{manifest['num_shards']} shard(s), rejected {counts['rejected']} ({reasons}) in {seconds:.1f}s "
        f"({counts['read'] / max(seconds, 1e-9):.0f} records/s) -> {job.output}"
    )
