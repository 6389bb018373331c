"""Dataflow Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE`` in ``deploy/Dockerfile``).

The Flex Template launcher runs ``python launcher.py --name=value ...`` with one ``--name=value`` per
template parameter (names with underscores, see ``deploy/metadata.json``) plus Dataflow's own
pipeline options (project, region, staging/temp locations, ``sdk_container_image`` ...). This module
turns those into the command line ``python -m pipeline`` takes and submits the job **without
waiting for it to finish** (a Flex Template launch must return once the job is created).

Translations (everything else passes through unchanged):

* switches (``--overwrite``, ``--dedup``, ...) arrive as ``--overwrite=true`` / ``--overwrite=false``:
  ``true``/``1``/``yes`` become the bare flag, anything else drops it;
* ``--input=a,b`` (a template parameter is given once) becomes ``--input=a --input=b``;
* ``--runner=DataflowRunner`` is added when no runner is named.

A job config file (``--config=gs://bucket/job.yaml``, ``docs/config.md``) passes through unchanged: the job reads
it from ``gs://`` like any input, and the other parameters given override its keys.

Runs the same locally, e.g. to check a template's arguments offline::

    python deploy/launcher.py --input=gs://b/in/*.jsonl --output=gs://b/out --no_validate_inputs=true \\
        --runner=DataflowRunner --dry_run=True --no_auth --project=p --region=us-central1 \\
        --temp_location=gs://b/tmp
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a script from a source checkout: make ``pipeline`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRUE_VALUES = frozenset({"true", "1", "yes", "y", "on"})


def _switch_options() -> set[str]:
    """Option strings (``--overwrite``, ``--no_validate_inputs``, ...) of the job's on/off flags."""
    from pipeline.launch.cli import build_parser

    options: set[str] = set()
    for action in build_parser()._actions:
        if action.nargs == 0 and action.option_strings and action.dest != "help":
            options.update(action.option_strings)
    return options


def flex_args_to_cli(argv: Sequence[str]) -> list[str]:
    """Translate Flex Template launcher arguments into ``python -m pipeline`` arguments (see module doc)."""
    switches = _switch_options()
    out: list[str] = []
    for arg in argv:
        name, has_value, value = arg.partition("=")
        if name in switches and has_value:
            if value.strip().lower() in TRUE_VALUES:
                out.append(name)
            continue
        if name == "--input" and has_value and "," in value:
            out.extend(f"--input={part.strip()}" for part in value.split(",") if part.strip())
            continue
        out.append(arg)
    if not any(a == "--runner" or a.startswith("--runner=") for a in out):
        out.append("--runner=DataflowRunner")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.launch.main import main as job_main

    args = flex_args_to_cli(sys.argv[1:] if argv is None else argv)
    return job_main(args, wait=False)


if __name__ == "__main__":
    sys.exit(main())
