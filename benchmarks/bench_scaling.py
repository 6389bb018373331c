"""Records/s of the job on 1 vs 2 worker processes, and where the time goes.

Same input (real records from ../shared/data, repeated to --records, 4 JSON Lines files), same
machine, same run:

1. the job (``python -m pipeline``, FnApiRunner ``multi_processing``) with 1 and 2 workers, wall time
   of the whole command, for each ``TOKENIZERS_PARALLELISM`` setting asked for (the Rust tokenizer's
   thread pool inside every worker process can oversubscribe the cores the workers already use);
   a tiny input gives the fixed cost (start-up, worker start, tokenizer load, commit);
2. the per-stage split, single process, on --stage-records of the same records: the pure functions
   the job's stages call (read+decode, parse, chat template, ``encode_batch``, labels, shard table +
   IPC bytes + sha256). ``job - fixed - sum(stages)`` is the runner's own cost (encoding elements
   between stages, in-memory shuffles in the runner process).

Usage::

    python benchmarks/bench_scaling.py [--records 60000] [--parallelism false,true] [--stage-records 10000] [--repeat 2]

Measured here (2 cores, load ~1): TOKENIZERS_PARALLELISM=false, 100k records: 1 worker 1703
records/s, 2 workers 3048 records/s = 1.79x wall (2.02x without the ~6 s fixed cost); 60k records:
1.59x wall (1.85x without it). =true, 60k: 2205 and 2853 records/s = 1.29x (the tokenizer's threads
already use the second core). Pure work per record, 1 process: tokenize (encode_batch) 61%, chat
template 15%, labels 13%, write 5%, parse 4%, read 1%; the runner's own cost is ~5% of a 1-worker
job (23% before records and rows stopped crossing the shuffle). Tokenization is the bottleneck.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from real_data import REPO, SHARED, SOURCES  # noqa: E402 (benchmarks/ is on sys.path)

sys.path.insert(0, str(REPO))


def write_inputs(folder: Path, records: int, files: int = 4) -> None:
    from transforms.reading import iter_raw_records_from_path

    texts = []
    for relative in SOURCES:
        texts += [json.dumps(raw.value, ensure_ascii=False)
                  for raw in iter_raw_records_from_path(str(SHARED / relative)) if raw.value is not None]
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-records // files)
    for part in range(files):
        with open(folder / f"part-{part:03d}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(part * per_file, min(records, (part + 1) * per_file)):
                handle.write(texts[i % len(texts)] + "\n")


def run_job(inputs: Path, out: Path, workers: int, parallelism: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "pipeline", "--input", str(inputs / "*.jsonl"), "--output", str(out),
           "--runner=FnApiRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": parallelism}
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"job failed:\n{result.stderr[-4000:]}")
    return seconds, json.loads((out / "manifest.json").read_text())


STAGES = ("read", "parse", "template", "tokenize", "labels", "write")


def stage_split(inputs: Path, records: int, batch_size: int = 256) -> dict[str, float]:
    """Seconds per stage for the first ``records`` records, single process (this one)."""
    from transforms import shard_format as sf
    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.reading import iter_raw_records_from_path
    from transforms.rows import PARSED, RowBuilder, parse_records
    from transforms.tokenizer_loading import load_tokenizer

    builder = RowBuilder(tokenizer=load_tokenizer(None), format_options=FormatOptions(),
                         tokenize_options=TokenizeOptions())
    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter

    start = clock()
    raws = []
    for path in sorted(inputs.glob("*.jsonl")):
        for raw in iter_raw_records_from_path(str(path)):
            raws.append(raw)
            if len(raws) >= records:
                break
        if len(raws) >= records:
            break
    seconds["read"] = clock() - start

    start = clock()
    parsed = [item for kind, item in parse_records(raws, builder.format_options) if kind == PARSED]
    seconds["parse"] = clock() - start

    rows = []
    for begin in range(0, len(parsed), batch_size):
        batch = parsed[begin:begin + batch_size]
        start = clock()
        pending = []
        for raw, conversation in batch:
            try:
                pending += builder.task.prepare(raw, conversation)
            except Exception:  # noqa: BLE001 - rejected records are counted by the job, not here
                pass
        seconds["template"] += clock() - start
        start = clock()
        encodings = builder.task.encoder.encode([item.text for item in pending], [item.markers for item in pending])
        seconds["tokenize"] += clock() - start
        start = clock()
        for item, encoding in zip(pending, encodings):
            try:
                rows.append(builder.task.finish(item, encoding))
            except Exception:  # noqa: BLE001 - rejected records are counted by the job, not here
                pass
        seconds["labels"] += clock() - start

    start = clock()
    rows.sort(key=lambda row: row["sort_key"])
    data = sf.ipc_stream_bytes(sf.table_from_rows(rows, sf.arrow_schema()))
    hashlib.sha256(data).hexdigest()
    seconds["write"] = clock() - start
    seconds["records"] = len(raws)
    return seconds


def stage_split_subprocess(inputs: Path, records: int, parallelism: str) -> dict[str, float]:
    """:func:`stage_split` in a fresh process with the given ``TOKENIZERS_PARALLELISM``."""
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench_scaling as b; "
            f"from pathlib import Path; print(json.dumps(b.stage_split(Path({str(inputs)!r}), {records})))")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": parallelism}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=60000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--parallelism", default="false,true", help="TOKENIZERS_PARALLELISM values to compare")
    parser.add_argument("--stage-records", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per configuration; the fastest counts (other load on the machine only slows runs)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit("../shared/data is needed for this benchmark")
    workers_list = [int(w) for w in args.workers.split(",")]
    settings = [s.strip() for s in args.parallelism.split(",") if s.strip()]
    figures: dict = {"cpus": os.cpu_count(), "records": args.records, "jobs": {}, "fixed": {}, "stages": {}}
    print(f"machine: {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="chatshards-bench-scaling-") as tmp:
        inputs, tiny = Path(tmp) / "in", Path(tmp) / "tiny"
        write_inputs(inputs, args.records)
        write_inputs(tiny, 40)
        for parallelism in settings:
            for workers in workers_list:
                fixed = seconds = float("inf")
                for attempt in range(args.repeat):
                    tag = f"{parallelism}-{workers}-{attempt}"
                    fixed = min(fixed, run_job(tiny, Path(tmp) / f"tiny-{tag}", workers, parallelism)[0])
                    took, manifest = run_job(inputs, Path(tmp) / f"out-{tag}", workers, parallelism)
                    seconds = min(seconds, took)
                rate = manifest["counts"]["read"] / seconds
                steady = manifest["counts"]["read"] / max(seconds - fixed, 1e-9)
                figures["jobs"][f"{parallelism}/{workers}"] = {"seconds": seconds, "records_per_s": rate,
                                                              "fixed_seconds": fixed, "steady_records_per_s": steady}
                print(f"TOKENIZERS_PARALLELISM={parallelism:5s} workers={workers}: {seconds:7.1f} s "
                      f"{rate:7.0f} records/s (fixed cost {fixed:4.1f} s; {steady:6.0f} records/s without it); "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
            if len(workers_list) >= 2:
                one, two = (figures["jobs"][f"{parallelism}/{w}"] for w in workers_list[:2])
                speedup = one["seconds"] / two["seconds"]
                steady = two["steady_records_per_s"] / one["steady_records_per_s"]
                figures.setdefault("speedup", {})[parallelism] = {"wall": speedup, "without_fixed_cost": steady}
                print(f"  speedup {workers_list[1]} vs {workers_list[0]} workers: {speedup:.2f}x wall, "
                      f"{steady:.2f}x without the fixed cost (target >= 1.7x)", flush=True)
        for parallelism in settings:
            split = stage_split_subprocess(inputs, args.stage_records, parallelism)
            figures["stages"][parallelism] = split
            total = sum(split[s] for s in STAGES)
            print(f"stage split, 1 process, {int(split['records'])} records, TOKENIZERS_PARALLELISM={parallelism}: "
                  f"{total:.2f} s = {split['records'] / total:.0f} records/s of pure work")
            for stage in STAGES:
                print(f"  {stage:9s} {split[stage]:7.2f} s  {100 * split[stage] / total:5.1f}%  "
                      f"{split['records'] / max(split[stage], 1e-9):9.0f} records/s")
        one = figures["jobs"].get(f"{settings[0]}/{workers_list[0]}")
        split = figures["stages"][settings[0]]
        if one:
            pure = sum(split[s] for s in STAGES) / split["records"] * args.records
            overhead = one["seconds"] - one["fixed_seconds"] - pure
            print(f"job with {workers_list[0]} worker(s) ({settings[0]}): {one['seconds']:.1f} s = fixed "
                  f"{one['fixed_seconds']:.1f} s + pure stage work {pure:.1f} s + runner overhead {overhead:.1f} s "
                  f"({100 * overhead / one['seconds']:.0f}%)")
            figures["breakdown"] = {"fixed": one["fixed_seconds"], "pure": pure, "runner_overhead": overhead}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
