"""Job throughput before and after a change to the label code, on templates that need no splitting.

Runs ``python -m pipeline`` as a whole process from two checkouts (``--before``: e.g. a ``git worktree`` of
the commit before the change; ``--after``: this one) on the same short-record input (Alpaca + ShareGPT, as
``bench_job.py`` builds it), with each chat template given, interleaved run by run, and prints the median wall
time of each and the ratio after/before (below 1.0: faster after). One process (the default runner below the
parallel threshold) so the label work is what is measured, not Beam's worker start-up. Start-up changed too
between the checkouts (prepared tokenizer cache), so the steady cost is also printed: the median wall time at
``--records`` minus that at a fifth of it, per 1,000 records.

    python benchmarks/bench_labels.py --before /path/to/old/checkout [--records 20000] [--repeats 5]

Templates (the bundled tokenizer's own): ChatML with ``{% generation %}`` markers (the default job) and ChatML
without markers (one-row diff strategy). Both are prefix-preserving on these records: every record is one row.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench_job import build_input, run_job, save_bundled_tokenizer
from real_data import REPO

TEMPLATES = {
    "chatml+markers": "chatml_generation.jinja",
    "chatml (no markers)": "chatml_default_system.jinja",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    parser.add_argument("--after", type=Path, default=REPO, help="checkout of the code after (default: this one)")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = max(1, args.records // 5)
        inputs = {n: build_input(tmp / f"input_{n}", n)[0] for n in (args.records, small)}
        tokenizer = str(save_bundled_tokenizer(tmp / "tokenizer"))
        print(f"{args.records} short records, one process, median of {args.repeats} whole-process runs each; "
              f"steady = (wall at {args.records} - wall at {small}) per 1,000 records\n")
        print("| template | wall before s | wall after s | after/before | steady before s/1k | steady after s/1k | "
              "steady after/before | rows before | rows after |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, template in TEMPLATES.items():
            walls = {(side, n): [] for side in ("before", "after") for n in inputs}
            rows = {}
            for _ in range(args.repeats):
                for n, input_dir in inputs.items():
                    for side, repo in (("before", args.before), ("after", args.after)):
                        runner = ["--chat-template", str(repo / "transforms" / "templates" / template),
                                  "--no-audit", "--overwrite", "--runner=FnApiRunner"]
                        run = run_job(input_dir, tmp / f"out_{side}", tokenizer, runner, repo, tmp / "trace.tsv")
                        walls[side, n].append(run["wall"])
                        if n == args.records:
                            counts = run["manifest"]["counts"]
                            rows[side] = counts.get("rows", counts["written"])
            med = {key: statistics.median(values) for key, values in walls.items()}
            steady = {side: (med[side, args.records] - med[side, small]) / (args.records - small) * 1000
                      for side in ("before", "after")}
            before, after = med["before", args.records], med["after", args.records]
            print(f"| {label} | {before:.2f} | {after:.2f} | {after / before:.2f} | {steady['before']:.3f} | "
                  f"{steady['after']:.3f} | {steady['after'] / steady['before']:.2f} | {rows['before']} | "
                  f"{rows['after']} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
