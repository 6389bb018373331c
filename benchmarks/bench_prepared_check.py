"""Start-up cost of verifying the prepared-tokenizer cache (issue 19): the checked load against the unchecked one.

The job loads the bundled tokenizer's prepared form at start-up in every process. Since issue 19 the load
reads ``backend.json`` and ``meta.json``, checks the sha256 of the first and the checksum of the second, then
builds the Rust tokenizer from the bytes read (:func:`transforms.prepared_tokenizer.load_prepared`). The peer,
timed in the same process and interleaved, is the unchecked load it replaced: ``meta.json`` parsed and
``tokenizers.Tokenizer.from_file(backend.json)``. Printed: the medians, the check alone
(:func:`transforms.prepared_tokenizer.read_prepared`), and the ratio.

``--job`` also times the default command's whole fixed cost (``python -m pipeline`` on a two-record file,
medians of ``--runs``), this checkout against ``--before CHECKOUT`` (an older checkout, e.g. the main
worktree), interleaved. Compare like with like: with ``PYTHONDONTWRITEBYTECODE`` set, a checkout without
``__pycache__`` compiles every module at each start (about 0.25 s here); run ``python -m compileall -q
pipeline transforms`` in both checkouts first.

Usage::

    python benchmarks/bench_prepared_check.py [--repeats 15] [--job --before /path/to/older/checkout --runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_costs(repeats: int) -> dict[str, float]:
    from tokenizers import Tokenizer

    from transforms.prepared_tokenizer import BACKEND_FILE, META_FILE, load_prepared, read_prepared
    from transforms.tokenizer_loading import _bundled_prepared_key, load_tokenizer, prepared_folder

    load_tokenizer(None, prepared=True)  # the entry exists (prepared now if it did not)
    folder = prepared_folder(_bundled_prepared_key())
    times: dict[str, list[float]] = {"unchecked": [], "checked": [], "check alone": []}
    for _ in range(repeats):
        start = time.perf_counter()
        with open(os.path.join(folder, META_FILE), encoding="utf-8") as handle:
            json.load(handle)
        Tokenizer.from_file(os.path.join(folder, BACKEND_FILE))
        times["unchecked"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert load_prepared(folder, name_or_path="bench") is not None
        times["checked"].append(time.perf_counter() - start)
        start = time.perf_counter()
        read_prepared(folder)
        times["check alone"].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def job_costs(before: str, runs: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench_prepared_check_"))
    data = folder / "in.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(2)))
    times: dict[str, list[float]] = {"before": [], "after": []}
    for run in range(runs + 1):  # the first round warms both checkouts' caches and is not counted
        for name, checkout in (("before", before), ("after", str(REPO))):
            env = dict(os.environ, PYTHONPATH=checkout)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline", "--input", str(data), "--output",
                            str(folder / f"out_{name}"), "--overwrite"], check=True, capture_output=True,
                           env=env, cwd=checkout)
            if run:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--job", action="store_true", help="also time the default command, before and after")
    parser.add_argument("--before", default=None, help="an older checkout for --job")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    costs = load_costs(args.repeats)
    print(f"prepared load, medians of {args.repeats}: unchecked {costs['unchecked'] * 1e3:.1f} ms, checked "
          f"{costs['checked'] * 1e3:.1f} ms (ratio {costs['checked'] / costs['unchecked']:.3f}); the check alone "
          f"(read + 2 sha256) {costs['check alone'] * 1e3:.1f} ms")
    if args.job:
        if not args.before:
            parser.error("--job needs --before CHECKOUT")
        job = job_costs(args.before, args.runs)
        print(f"default command on 2 records, medians of {args.runs}: before {job['before']:.2f} s, after "
              f"{job['after']:.2f} s (ratio {job['after'] / job['before']:.3f})")


if __name__ == "__main__":
    main()
