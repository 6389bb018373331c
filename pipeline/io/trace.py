"""Timestamped start-up events for benchmarks (``benchmarks/bench_job.py``), off unless asked for.

With ``CHATSHARDS_TRACE=FILE`` in the environment, :func:`mark` appends ``event<TAB>pid<TAB>unix time``
lines to ``FILE`` (the launcher and every worker process inherit the variable). Without it
:func:`mark` does nothing. Events: ``tokenizer_load_start`` / ``tokenizer_loaded`` (per process),
``launcher_checked`` (configuration checked, Beam options built), ``output_claimed`` (the local engine:
``--output`` claimed, workers about to start), ``worker_setup_start`` /
``worker_setup_done`` (the tokenizing DoFn's set-up), ``batch_done`` (each tokenized batch).
"""
from __future__ import annotations

import os
import time

TRACE_ENV = "CHATSHARDS_TRACE"


def mark(event: str) -> None:
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{event}\t{os.getpid()}\t{time.time():.6f}\n")
    except OSError:
        pass
