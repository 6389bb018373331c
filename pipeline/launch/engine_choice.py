"""Which engine runs the job, and on how many processes: the local engine for the default command on
local files (one process, or one per core from :data:`LOCAL_PARALLEL_INPUT_BYTES` of input), the Beam
graph for any Beam flag, a ``gs://`` path, ``--no-validate-inputs`` or ``CHATSHARDS_ENGINE=beam``.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from pipeline.io.files import is_local
from pipeline.io.input_files import expand_input_sizes
from pipeline.launch.cli import ConfigError, JobArgs
from pipeline.launch.plan import JobPlan

# The default command runs on every core when the input holds at least this many bytes (compressed files
# count COMPRESSED_FACTOR times their size), else in one process. On the local engine a worker process is
# forked with everything loaded (about 0.1 s), but one process already encodes on every core (the Rust
# tokenizer's own threads), so forked workers pay off only on larger inputs: on 2 cores, one process was
# faster at 3,000, 10,000 and 20,000 short records (1.1 to 15 MiB) and 2 workers at 50,000 records without
# repeated text (18 MiB): LOCAL_PARALLEL_INPUT_BYTES (benchmarks/bench_job.py --mode-sizes, README
# Benchmarks). Beam's worker processes start in about 4 s on 2 cores, so a default command forced onto Beam
# (CHATSHARDS_ENGINE=beam) uses every core from PARALLEL_INPUT_BYTES. CHATSHARDS_PARALLEL_BYTES overrides both
# thresholds (0: always every core); --workers N (local engine) sets the count itself.
PARALLEL_INPUT_BYTES = 12 * 1024 * 1024
LOCAL_PARALLEL_INPUT_BYTES = 16 * 1024 * 1024
PARALLEL_BYTES_ENV = "CHATSHARDS_PARALLEL_BYTES"
COMPRESSED_FACTOR = 4
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".deflate", ".lzma", ".zip")
# CHATSHARDS_ENGINE=beam runs the default command on Beam's FnApiRunner (as before the local engine);
# "local" is the default wherever the local engine can run.
ENGINE_ENV = "CHATSHARDS_ENGINE"
LOCAL, BEAM = "local", "beam"
# What one local-engine worker may need at most (peak RSS measured 220-405 MiB, benchmarks/bench_memory.py):
# --workers is capped so that the workers fit in the memory available at launch.
WORKER_MEMORY_BYTES = 512 * 1024 * 1024


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available for new processes (``MemAvailable`` of ``/proc/meminfo``), or ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def worker_limit() -> tuple[int, str]:
    """``(most worker processes this machine can run well, why)``: one per usable core, and no more than the
    available memory holds at :data:`WORKER_MEMORY_BYTES` each."""
    cores, memory = usable_cores(), available_memory()
    by_memory = max(1, memory // WORKER_MEMORY_BYTES) if memory is not None else cores
    why = f"{cores} usable core{'s' if cores != 1 else ''}" + (
        f", {memory / 2**30:.1f} GiB available" if memory is not None else "")
    return max(1, min(cores, by_memory)), why


def weighted_input_bytes(sizes) -> int:
    """Total of ``{path: size}`` with compressed files weighted ``COMPRESSED_FACTOR`` times."""
    return sum(size * (COMPRESSED_FACTOR if path.lower().endswith(_COMPRESSED_SUFFIXES) else 1)
               for path, size in sizes.items())


def input_bytes(patterns: Sequence[str]) -> int:
    """Total size of the files ``patterns`` match (compressed files weighted); 0 when they cannot be listed."""
    try:
        return weighted_input_bytes(expand_input_sizes(patterns))
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
    """Processes of the local engine: ``--workers`` (capped at :func:`worker_limit`, said on stderr), else one
    per usable core (within :func:`worker_limit`) when the input holds at least
    :data:`LOCAL_PARALLEL_INPUT_BYTES` (said on stderr), else 1."""
    limit, why = worker_limit()
    if job.workers is not None:
        if job.workers > limit:
            print(f"chatshards: --workers {job.workers} is more than this machine runs well ({why}); using {limit}",
                  file=sys.stderr)
            return limit
        return job.workers
    return every_core(plan.input_bytes or 0, parallel_threshold(LOCAL_PARALLEL_INPUT_BYTES), limit,
                      one_process="--workers 1")


def every_core(total: int, threshold: int, cores: int, *, one_process: str) -> int:
    """``cores`` when there are several and the input holds at least ``threshold`` bytes (said on stderr,
    with ``one_process``: the flags that run one process instead), else 1."""
    if cores < 2 or total < threshold:
        return 1
    print(f"chatshards: input {total / 2**20:.1f} MiB: running on {cores} worker processes (every core); "
          f"for one process pass {one_process}", file=sys.stderr)
    return cores


