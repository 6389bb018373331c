"""Job throughput before and after a change to the label code, on templates that need no splitting.

Runs ``python -m pipeline`` as a whole process from two checkouts (``--before``: e.g. a ``git worktree`` of
the commit before the change; ``--after``: this one) on the same short-record input (Alpaca + ShareGPT, as
``bench_job.py`` builds its ``base`` input, from tests/data or with ``--base-data shared`` from ../shared/data),
with each chat template given, interleaved run by run, and prints the median wall time of each and the ratio
after/before (below 1.0: faster after). One process (the default runner below the
parallel threshold) so the label work is what is measured, not Beam's worker start-up. Start-up changed too
between the checkouts (prepared tokenizer cache), so the steady cost is also printed: the median wall time at
``--records`` minus that at a fifth of it, per 1,000 records.

    python benchmarks/bench_labels.py --before /path/to/old/checkout [--records 20000] [--repeats 5]

The whole-process times carry Beam's and the tokenizer's start-up; ``--stage`` times the row-building step alone
(parse, render, labels, tokenize: the code the label changes touch) in-process in each checkout, on the same
records, batches of 256, median of ``--repeats``, interleaved.

Templates (the bundled tokenizer's own): ChatML with ``{% generation %}`` markers (the default job) and ChatML
without markers (one-row diff strategy). Both are prefix-preserving on these records: every record is one row.

``--turns 250,500,1000,2000,4000`` times instead the row-building step on one record of that many messages
(user/assistant pairs, ChatML with markers, no length limit, a render budget large enough not to stop it), in
each checkout, and prints the seconds per record and the ratio per doubling (2.0: linear; 4.0: quadratic),
and the time of the render-and-spans part alone (``ChatRenderer.render_rows``; the rest is mostly the
tokenizer on one long text).
A side stops growing the conversation once one record takes longer than ``--turn-seconds``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_job import base_data, build_input, run_job, save_bundled_tokenizer
from real_data import REPO

TEMPLATES = {
    "chatml+markers": "chatml_generation.jinja",
    "chatml (no markers)": "chatml_default_system.jinja",
}


STAGE_SCRIPT = r'''
import json, sys, time
from transforms.config import TokenizeOptions
from transforms.tokenizer_loading import bundled_tokenizer, read_template
from transforms.reading import RawRecord
from transforms.formats import FormatOptions
try:  # the row core (this checkout)
    from transforms.rows.builder import RowBuilder as Builder
    build = "build_records"
except ImportError:  # before the row core: ExampleBuilder
    from transforms.example_builder import ExampleBuilder as Builder
    build = "build_batch"
records = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
tokenizer = bundled_tokenizer(chat_template=read_template(sys.argv[1]))
builder = Builder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions())
raws = [RawRecord(source="bench.jsonl", index=i, value=r) for i, r in enumerate(records)]
run = getattr(builder, build)
run(raws[:256])
start = time.perf_counter()
rows = 0
for k in range(0, len(raws), 256):
    rows += sum(1 for kind, _ in run(raws[k:k + 256]) if kind == "row")
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))
'''


TURNS_SCRIPT = r'''
import json, sys, time
from transforms.config import TokenizeOptions
from transforms.tokenizer_loading import bundled_tokenizer, read_template
from transforms.reading import RawRecord
from transforms.formats import FormatOptions
from transforms.rows.builder import RowBuilder
n = int(sys.argv[2])
messages = []
for k in range(n // 2):
    messages += [{"role": "user", "content": f"Question {k}: what is {k} plus {k}?"},
                 {"role": "assistant", "content": f"{k} plus {k} is {2 * k}."}]
tokenizer = bundled_tokenizer(chat_template=read_template(sys.argv[1]))
builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(),
                     tokenize_options=TokenizeOptions(render_seconds=3600.0))
builder.build_records([RawRecord(source="warm.jsonl", index=0, value={"messages": messages[:4]})])
start = time.perf_counter()
out = builder.build_records([RawRecord(source="bench.jsonl", index=0, value={"messages": messages})])
seconds = time.perf_counter() - start
kind, row = out[0]
start = time.perf_counter()
builder.task.renderer.render_rows(messages)
labels = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "labels": labels, "kind": kind,
                  "trained": int(row["num_loss_tokens"]) if kind == "row" else 0}))
'''


def _per_doubling(cell, previous, n) -> str:
    """The time ratio per doubling of the message count between two sizes (2.0: linear, 4.0: quadratic)."""
    if cell is None or previous is None:
        return "-"
    return f"{(cell['seconds'] / previous['seconds']) ** (1 / math.log2(n / previous['n'])):.2f}"


def turns_table(args) -> None:
    counts = [int(n) for n in args.turns.split(",")]
    template = TEMPLATES["chatml+markers"]
    print(f"one record of N messages, row-building step (parse, render, labels, tokenize), {template}\n")
    print("| messages | before s | after s | before ratio per doubling | after ratio per doubling | "
          "render+spans before s | render+spans after s | same labels |")
    print("|---|---|---|---|---|---|---|---|")
    previous = {}
    stopped = set()
    for n in counts:
        cells = {}
        for side, repo in (("before", args.before), ("after", args.after)):
            if side in stopped:
                continue
            env = {**os.environ, "PYTHONPATH": str(repo)}
            done = subprocess.run([sys.executable, "-c", TURNS_SCRIPT, template, str(n)], cwd=repo, env=env,
                                  capture_output=True, text=True, check=True)
            cells[side] = json.loads(done.stdout.strip().splitlines()[-1])
            if cells[side]["seconds"] > args.turn_seconds:
                stopped.add(side)

        same = "-" if len(cells) < 2 else ("yes" if cells["before"]["trained"] == cells["after"]["trained"] else "NO")
        fmt = {side: f"{cells[side]['seconds']:.3f}" if side in cells else "-" for side in ("before", "after")}
        ratio = {side: _per_doubling(cells.get(side), previous.get(side), n) for side in ("before", "after")}
        spans = {side: f"{cells[side]['labels']:.3f}" if side in cells else "-" for side in ("before", "after")}
        print(f"| {n} | {fmt['before']} | {fmt['after']} | {ratio['before']} | {ratio['after']} | {spans['before']} | "
              f"{spans['after']} | {same} |", flush=True)
        for side, cell in cells.items():
            previous[side] = {**cell, "n": n}
    print()


def stage_seconds(repo: Path, template: str, records: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, template, str(records)], cwd=repo, env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_table(args, tmp: Path) -> None:
    from bench_job import _base_records

    base = _base_records(base_data(args.base_data))
    records = tmp / "stage.jsonl"
    with open(records, "w", encoding="utf-8") as handle:
        for i in range(args.records):
            handle.write(json.dumps(base[i % len(base)][0], ensure_ascii=False) + "\n")
    print(f"row-building step alone, {args.records} records, median of {args.repeats} (in-process)\n")
    print("| template | before s | after s | after/before | rows before | rows after |")
    print("|---|---|---|---|---|---|")
    for label, template in TEMPLATES.items():
        runs = {"before": [], "after": []}
        for _ in range(args.repeats):
            for side, repo in (("before", args.before), ("after", args.after)):
                runs[side].append(stage_seconds(repo, template, records))
        before = statistics.median(r["seconds"] for r in runs["before"])
        after = statistics.median(r["seconds"] for r in runs["after"])
        print(f"| {label} | {before:.2f} | {after:.2f} | {after / before:.2f} | {runs['before'][0]['rows']} | "
              f"{runs['after'][0]['rows']} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    parser.add_argument("--after", type=Path, default=REPO, help="checkout of the code after (default: this one)")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stage", action="store_true", help="only the row-building step, in-process")
    parser.add_argument("--base-data", choices=("tests", "shared"), default="tests",
                        help="base records from tests/data or ../shared/data (see bench_job.py)")
    parser.add_argument("--turns", help="comma-separated message counts: time one record of each (see above)")
    parser.add_argument("--turn-seconds", type=float, default=120.0,
                        help="with --turns: a side stops at the first record slower than this")
    args = parser.parse_args()
    if args.turns:
        turns_table(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stage_table(args, tmp)
        if args.stage:
            return
        small = max(1, args.records // 5)
        inputs = {n: build_input(tmp / f"input_{n}", n, "base", base_data(args.base_data))[0]
                  for n in (args.records, small)}
        tokenizer = str(save_bundled_tokenizer(tmp / "tokenizer"))
        print(f"{args.records} short records, one process, median of {args.repeats} whole-process runs each; "
              f"steady = (wall at {args.records} - wall at {small}) per 1,000 records\n")
        print("| template | wall before s | wall after s | after/before | steady before s/1k | steady after s/1k | "
              "steady after/before | rows before | rows after |")
        print("|---|---|---|---|---|---|---|---|---|")
        for side, repo in (("before", args.before), ("after", args.after)):  # untimed: prepare the tokenizer
            run_job(inputs[small], tmp / f"out_{side}", tokenizer, ["--overwrite"], repo, tmp / "trace.tsv",
                    tmp / f"cache_{side}")
        for label, template in TEMPLATES.items():
            walls = {(side, n): [] for side in ("before", "after") for n in inputs}
            rows = {}
            for _ in range(args.repeats):
                for n, input_dir in inputs.items():
                    for side, repo in (("before", args.before), ("after", args.after)):
                        runner = ["--chat-template", str(repo / "transforms" / "templates" / template),
                                  "--no-audit", "--overwrite", "--runner=FnApiRunner"]
                        run = run_job(input_dir, tmp / f"out_{side}", tokenizer, runner, repo, tmp / "trace.tsv",
                                      tmp / f"cache_{side}")
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
