"""Peak memory of the job for N versus 10N records: does the job stream?

Builds JSON Lines inputs of N and 10N real records (../shared/data, repeated, 4 files each), runs
``python -m pipeline`` on each in a subprocess and samples the resident memory (psutil) of the job's
process tree every 50 ms: the launcher/runner process, each worker process, and their sum. Prints the
peaks and the 10N/N ratios (target: total < 2x).

Why it stays flat: a local FnApiRunner keeps every PCollection that crosses a GroupByKey in the
*runner* process (its in-memory shuffle, read in Beam 2.77's ``fn_api_runner/execution.py``). So the
job never moves data through a shuffle: readers spill record batches to ``<out>/.tmp/spill/`` and the
shuffle carries references; tokenizing workers write row fragments (about 32 MiB each) to
``<out>/.tmp/fragments/`` and only ``(shard, fragment batch)`` references are grouped; a writer holds
one shard (automatic shards target 64 MiB). ``--dedup`` groups conversation hashes, not records.

Usage::

    python benchmarks/bench_memory.py [--records 20000] [--factor 10] [--mode multi_processing] [--workers 2]
        [--num-shards N | --records-per-shard K] [--dedup] [--json results.json]

Measured here (2 cores, 24 GiB, FnApiRunner multi_processing x2, 20k vs 200k records, automatic
shards: 1 x 37 MiB vs 7 x <= 54 MiB): total 1730 -> 1806 MiB = 1.04x, runner 513 -> 521 MiB = 1.02x,
largest worker 662 -> 747 MiB = 1.13x (target < 2x). Before spilling (rows crossed the shuffle as
Arrow payloads) the same run grew 2.35x.
With ``--dedup`` (the repeated inputs are 90% / 99% duplicates, each rejected with its record):
total 1595 -> 2955 MiB = 1.85x, runner 2.85x (the conversation keys it groups), largest worker 1.90x.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from real_data import DATA, REPO, SOURCES  # noqa: E402 (benchmarks/ is on sys.path)


def base_records() -> list[str]:
    """The real records of SOURCES, one compact JSON text each."""
    sys.path.insert(0, str(REPO))
    from transforms.reading import iter_raw_records_from_path

    texts = []
    for relative in SOURCES:
        for raw in iter_raw_records_from_path(str(DATA / relative)):
            if raw.value is not None:
                texts.append(json.dumps(raw.value, ensure_ascii=False))
    return texts


def write_inputs(folder: Path, records: int, texts: list[str], files: int = 4) -> int:
    """``records`` records (texts repeated) in ``files`` JSON Lines files; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-records // files)
    total = 0
    for part in range(files):
        with open(folder / f"part-{part:03d}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(part * per_file, min(records, (part + 1) * per_file)):
                line = texts[i % len(texts)] + "\n"
                handle.write(line)
                total += len(line.encode("utf-8"))
    return total


class TreeSampler(threading.Thread):
    """Samples RSS of a process and all its descendants until stopped; keeps the peaks."""

    def __init__(self, pid: int, every_s: float = 0.05):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.stop = threading.Event()
        self.peak_total = self.peak_root = self.peak_worker = 0
        self.max_processes = 0

    def run(self):
        while not self.stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = {}
            for process in processes:
                try:
                    rss[process.pid] = process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_total = max(self.peak_total, sum(rss.values()))
            self.peak_root = max(self.peak_root, rss.get(self.root.pid, 0))
            workers = [v for pid, v in rss.items() if pid != self.root.pid]
            if workers:
                self.peak_worker = max(self.peak_worker, max(workers))
            self.max_processes = max(self.max_processes, len(rss))
            time.sleep(self.every_s)


def run_job(inputs: Path, out: Path, mode: str, workers: int, num_shards: int | None, dedup: bool = False,
            engine: str = "beam") -> dict:
    cmd = [sys.executable, "-m", "pipeline", "--input", str(inputs / "*.jsonl"), "--output", str(out)]
    if engine == "local":  # the local engine: this process, or forked workers (--workers)
        cmd += ["--workers", str(workers if mode == "multi_processing" else 1)]
    else:
        cmd += ["--runner=FnApiRunner", f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    if dedup:
        cmd.append("--dedup")
    if num_shards:
        cmd += ["--num-shards", str(num_shards)]
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"job failed ({process.returncode}):\n{stderr[-4000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "seconds": seconds,
        "records": manifest["counts"]["read"],
        "rejected": manifest["counts"]["rejected"],
        "num_shards": manifest["num_shards"],
        "largest_shard_bytes": max(entry["bytes"] for entry in manifest["shards"]),
        "peak_total_rss": sampler.peak_total,
        "peak_runner_rss": sampler.peak_root,
        "peak_worker_rss": sampler.peak_worker,
        "processes": sampler.max_processes,
    }


def mib(n: int) -> str:
    return f"{n / 2**20:8.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--mode", default="multi_processing",
                        choices=("in_memory", "multi_threading", "multi_processing"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine", default="beam", choices=("beam", "local"),
                        help="Beam's FnApiRunner in --mode, or the local engine (--mode multi_processing: --workers "
                        "processes; otherwise one)")
    parser.add_argument("--num-shards", type=int, default=None, help="default: the job's automatic shard count")
    parser.add_argument("--records-per-shard", type=int, default=None,
                        help="pass --num-shards = records / this to both runs (equal shard sizes)")
    parser.add_argument("--dedup", action="store_true",
                        help="run with --dedup (the repeated inputs are then mostly duplicates: rejected with "
                        "their record)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    print(f"base records from {DATA}", flush=True)
    texts = base_records()
    results = {}
    with tempfile.TemporaryDirectory(prefix="chatshards-bench-memory-") as tmp:
        for label, records in (("N", args.records), (f"{args.factor}N", args.records * args.factor)):
            inputs = Path(tmp) / f"in-{records}"
            input_bytes = write_inputs(inputs, records, texts)
            shards = -(-records // args.records_per_shard) if args.records_per_shard else args.num_shards
            result = run_job(inputs, Path(tmp) / f"out-{records}", args.mode, args.workers, shards, args.dedup,
                             engine=args.engine)
            result["input_bytes"] = input_bytes
            results[label] = result
            largest = result["largest_shard_bytes"] / 2**20
            print(f"{label:>4}: {records:8d} records ({input_bytes / 2**20:.0f} MiB input) in "
                  f"{result['seconds']:.1f} s; {result['rejected']} rejected; {result['num_shards']} shard(s), "
                  f"largest {largest:.0f} MiB; peak RSS "
                  f"total {mib(result['peak_total_rss'])}, runner {mib(result['peak_runner_rss'])}, "
                  f"largest worker {mib(result['peak_worker_rss'])} ({result['processes']} processes)", flush=True)
            import shutil

            shutil.rmtree(inputs, ignore_errors=True)
            shutil.rmtree(Path(tmp) / f"out-{records}", ignore_errors=True)
    small, big = results["N"], results[f"{args.factor}N"]
    ratios = {key: big[key] / max(small[key], 1) for key in ("peak_total_rss", "peak_runner_rss", "peak_worker_rss")}
    print(f"ratio {args.factor}N/N: total {ratios['peak_total_rss']:.2f}x (target < 2x), runner "
          f"{ratios['peak_runner_rss']:.2f}x, largest worker {ratios['peak_worker_rss']:.2f}x "
          f"[mode={args.mode}, workers={args.workers}]")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
