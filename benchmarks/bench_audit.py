"""Wall time of the job with and without the audit branch, on the same input (prints figures; not a test).

    python benchmarks/bench_audit.py [--records 10000] [--repeats 3] [--data ../shared/data] [-- BEAM_ARGS...]

The input is real public sample data (Alpaca, ShareGPT, OpenAI-messages and tool-calling files from
../shared/data, or their subsets in tests/data where it is absent), copied into a temporary folder as many times
as needed to reach ``--records`` records. Each run is a fresh ``python -m pipeline`` process (same flags, fresh
output folder); the runs alternate audit on / off (``--no-audit``) to spread machine noise evenly. Prints
every run, then the median and best wall times and CPU times (user + system of the job process, less
sensitive to other load on a shared machine) with and without the audit, and the overhead in percent.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from real_data import DATA  # noqa: E402 (benchmarks/ is on sys.path)

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_DATA = str(DATA)  # ../shared/data, or the subsets in tests/data where it is absent
FILES = (
    "alpaca/llamafactory_alpaca_en_demo.json",
    "alpaca/llamafactory_identity.json",
    "sharegpt/fastchat_dummy_conversation.json",
    "openai/llamafactory_v1_sft_demo.jsonl",
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl",
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json",
    "tool_calling/openai_cookbook_drone_training_first5.jsonl",  # ../shared/data
    "tool_calling/openai_cookbook_drone_training_first3.jsonl",  # tests/data
    "edge_cases/xtuner_openai_sft_bare_lists.jsonl",
)


def count_records(path: str) -> int:
    sys.path.insert(0, REPO)
    from transforms.reading import iter_raw_records_from_path

    return sum(1 for _ in iter_raw_records_from_path(path))


def make_input(data: str, folder: str, records: int) -> int:
    """Copy the sample files (those of ``FILES`` that ``data`` holds) into ``folder`` (``copyK-<name>``) until at
    least ``records`` records."""
    paths = {name: os.path.join(data, name) for name in FILES}
    sizes = {name: count_records(path) for name, path in paths.items() if os.path.isfile(path)}
    total, copy = 0, 0
    while total < records:
        for name in sizes:
            shutil.copyfile(os.path.join(data, name), os.path.join(folder, f"copy{copy}-{os.path.basename(name)}"))
            total += sizes[name]
        copy += 1
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_job(input_glob: str, output: str, *, audit: bool, extra: list[str]) -> tuple[float, float]:
    """One job in a fresh process: ``(wall seconds, CPU seconds of the process and its children)``."""
    cmd = [sys.executable, "-m", "pipeline", "--input", input_glob, "--output", output, "--max-length", "2048", *extra,
           *([] if audit else ["--no-audit"])]
    cpu_before = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        raise SystemExit(f"job failed ({result.returncode}):\n{result.stderr[-3000:]}")
    has_audit = os.path.isfile(os.path.join(output, "audit", "stats.json"))
    if has_audit != audit:
        raise SystemExit(f"audit files present={has_audit}, expected {audit}")
    return seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("beam_args", nargs="*", help="extra job flags after --, e.g. -- --runner=FnApiRunner")
    args = parser.parse_args()
    if not os.path.isdir(args.data):
        raise SystemExit(f"{args.data} not found")
    tmp = tempfile.mkdtemp(prefix="bench_audit_")
    try:
        inputs = os.path.join(tmp, "in")
        os.makedirs(inputs)
        total = make_input(args.data, inputs, args.records)
        print(f"input: {total:,} records in {len(os.listdir(inputs))} files (from {args.data}); "
              f"{args.repeats} runs each, alternating")
        times: dict[bool, list[float]] = {True: [], False: []}
        cpus: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(args.repeats):
            order = (True, False) if repeat % 2 == 0 else (False, True)
            for audit in order:
                out = os.path.join(tmp, f"out-{repeat}-{int(audit)}")
                seconds, cpu = run_job(os.path.join(inputs, "*"), out, audit=audit, extra=list(args.beam_args))
                times[audit].append(seconds)
                cpus[audit].append(cpu)
                print(f"  run {repeat + 1} audit={'on ' if audit else 'off'}: {seconds:6.2f} s wall, {cpu:6.2f} s CPU",
                      flush=True)
                if audit and repeat == 0:
                    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
                        counts = json.load(handle)["audit"]["counts"]
                    print(f"    (audit counts: read {counts['read']:,}, written {counts['written']:,}, "
                          f"rejected {counts['rejected']:,})")
                shutil.rmtree(out, ignore_errors=True)
        for label, data in (("wall time", times), ("CPU time", cpus)):
            for stat_name, stat in (("median", statistics.median), ("best", min)):
                with_audit, without = stat(data[True]), stat(data[False])
                print(f"{stat_name} {label}: without audit {without:.2f} s, with audit {with_audit:.2f} s, "
                      f"overhead {100 * (with_audit - without) / without:+.1f}%")
        print("budget: 15% of the job's wall time")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
