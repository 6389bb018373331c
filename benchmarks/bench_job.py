"""The job against the recipe users write, whole process against whole process, on short records.

Input (deterministic, built from ../shared/data): short Alpaca records (instruction + input + output
of at most 600 characters) and ShareGPT conversations, interleaved and repeated to ``--records``;
repeats beyond the first copy are varied (a numbered suffix on every message) so no two records, and no
two messages of different copies, are identical (``--unique-messages``: no two messages at all). About 100
tokens per record. The job reads the records in their own formats; the recipe reads the same
conversations already converted to ``messages`` (which favours the recipe).

Tokenizer: a *user's own tokenizer folder*, loaded by ``--tokenizer DIR`` in both. Without
``--tokenizer`` the bundled Qwen2-vocabulary tokenizer with the ``{% generation %}`` ChatML template
is saved with ``save_pretrained`` to a temporary folder, which then plays that role.

Timed, each as a whole process (``subprocess``), medians over ``--repeats``:

* recipe: a script doing ``load_dataset("json")``, ``map(apply_chat_template(...,
  return_assistant_tokens_mask=True), num_proc=W)``, ``save_to_disk`` (fresh datasets cache per run);
  it also reports when its imports and its tokenizer load were done;
* job: ``python -m pipeline --tokenizer DIR --workers W`` (the local engine on W processes), the same on
  Beam (``--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=W``), and the
  default command (no flags: whatever the job chooses for that input);
* ceiling: rendering (``apply_chat_template(tokenize=False)``, one core) divided by the cores, plus the
  Rust tokenizer's ``encode_batch`` on the rendered texts (its own threads): what W cores allow.

Each runs on N records, on ``--small`` records (steady rate = (N - small) / (t_N - t_small)) and on
``--tiny`` records (the fixed cost). The job's fixed-cost split (imports, tokenizer load, worker start,
first batch, commit) comes from ``CHATSHARDS_TRACE`` (a file the job appends timestamped events to;
versions of the job without it show only what is seen from outside: worker processes' start times,
the manifest's write time).

``--job-repo DIR`` runs the job from another checkout (e.g. an older commit, for before/after figures
on the same input in the same run); ``--legacy`` for a checkout without the local engine (no ``--workers``:
its "job, W workers" runs are the Beam ones).

Usage::

    python benchmarks/bench_job.py [--records 50000] [--small 5000] [--tiny 100] [--repeats 3] [--workers 2]
                                   [--tokenizer DIR] [--job-repo DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from real_data import REPO, SHARED  # noqa: E402 (benchmarks/ is on sys.path)

sys.path.insert(0, str(REPO))

ALPACA = "alpaca/llamafactory_alpaca_en_demo.json"
SHAREGPT = "sharegpt/fastchat_dummy_conversation.json"
SHORT_ALPACA_CHARS = 600
INPUT_FILES = 4

RECIPE_SCRIPT = r'''
import json, sys, time
t0 = time.time()
import datasets
from transformers import AutoTokenizer
datasets.disable_progress_bars()
t_imports = time.time()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
t_tokenizer = time.time()

def tokenize(example):
    out = tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    labels = [t if m else -100 for t, m in zip(out["input_ids"], out["assistant_masks"])]
    return {"input_ids": out["input_ids"], "labels": labels}

ds = datasets.load_dataset("json", data_files=sys.argv[2], split="train")
t_loaded = time.time()
ds = ds.map(tokenize, num_proc=int(sys.argv[4]), remove_columns=ds.column_names)
t_mapped = time.time()
ds.save_to_disk(sys.argv[3])
t_saved = time.time()
print(json.dumps({"start": t0, "imports": t_imports, "tokenizer": t_tokenizer, "loaded": t_loaded,
                  "mapped": t_mapped, "saved": t_saved, "rows": len(ds)}))
'''


# ---------------------------------------------------------------- input

def _base_records() -> list[tuple[dict, list[dict]]]:
    """(record as written for the job, its conversation as messages), Alpaca and ShareGPT interleaved."""
    alpaca = [r for r in json.loads((SHARED / ALPACA).read_text(encoding="utf-8"))
              if len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= SHORT_ALPACA_CHARS]
    sharegpt = json.loads((SHARED / SHAREGPT).read_text(encoding="utf-8"))
    roles = {"human": "user", "gpt": "assistant"}
    out = []
    for i in range(max(len(alpaca), len(sharegpt))):
        if i < len(alpaca):
            r = alpaca[i]
            user = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
            out.append(({"instruction": r["instruction"], "input": r["input"], "output": r["output"]},
                        [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]))
        if i < len(sharegpt):
            r = sharegpt[i]
            out.append(({"id": r["id"], "conversations": r["conversations"]},
                        [{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]]))
    return out


def _varied(record: dict, messages: list[dict], copy: int) -> tuple[dict, list[dict]]:
    """The ``copy``-th repeat of a base record: a numbered suffix on every message (copy 0: as is), so no
    message text repeats across copies (a cache of repeated text would otherwise flatter the job)."""
    if copy == 0:
        return record, messages
    suffix = f" (#{copy})"
    record = json.loads(json.dumps(record))
    if "instruction" in record:
        record["instruction"] += suffix
        record["output"] += suffix
        user = record["instruction"] + ("\n" + record["input"] if record["input"] else "")
        return record, [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    for turn in record["conversations"]:
        turn["value"] += suffix
    return record, [{"role": m["role"], "content": t["value"]} for m, t in zip(messages, record["conversations"])]


def build_input(folder: Path, records: int, *, unique_messages: bool = False) -> tuple[Path, Path, list[list[dict]]]:
    """Write ``records`` short records: the job's input (``folder/job/*.jsonl``, INPUT_FILES files),
    the recipe's (``folder/recipe.jsonl``, ``{"messages": [...]}`` lines); return them and the messages.
    ``unique_messages``: every record numbered, the first copy too, so no message text repeats at all (the
    base data repeats its own short ShareGPT conversations: 167 times "What is up?")."""
    base = _base_records()
    job_dir = folder / "job"
    job_dir.mkdir(parents=True)
    handles = [open(job_dir / f"part-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(INPUT_FILES)]
    per_file = -(-records // INPUT_FILES)
    conversations = []
    with open(folder / "recipe.jsonl", "w", encoding="utf-8") as recipe:
        for i in range(records):
            record, messages = _varied(*base[i % len(base)], i + 1 if unique_messages else i // len(base))
            handles[i // per_file].write(json.dumps(record, ensure_ascii=False) + "\n")
            recipe.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            conversations.append(messages)
    for handle in handles:
        handle.close()
    return job_dir, folder / "recipe.jsonl", conversations


def save_bundled_tokenizer(folder: Path) -> Path:
    """The bundled tokenizer with the generation-marked ChatML template, saved as a user's folder."""
    from transforms.tokenizer_loading import bundled_tokenizer, read_template

    bundled_tokenizer(chat_template=read_template("chatml_generation.jinja")).save_pretrained(str(folder))
    return folder


# ---------------------------------------------------------------- whole-process runs

def _watch_children(pid: int, seen: dict, stop: threading.Event) -> None:
    """Record the start time of every descendant process of ``pid`` (Beam's worker processes)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            for child in parent.children(recursive=True):
                if child.pid not in seen:
                    try:
                        seen[child.pid] = (child.create_time(), " ".join(child.cmdline()[:4]))
                    except psutil.Error:
                        pass
        except psutil.Error:
            return
        stop.wait(0.02)


def _user_env() -> dict[str, str]:
    """This environment as on a user's machine: Python writes its bytecode caches (this sandbox sets
    PYTHONDONTWRITEBYTECODE, which makes every process compile every module it imports from source)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_job(input_dir: Path, out: Path, tokenizer: str | None, runner_args: list[str], job_repo: Path,
            trace: Path) -> dict:
    """``python -m pipeline`` as a whole process; returns wall time, manifest and start-up events."""
    if out.exists():
        shutil.rmtree(out)
    if trace.exists():
        trace.unlink()
    cmd = [sys.executable, "-m", "pipeline", "--input", str(input_dir / "*.jsonl"), "--output", str(out),
           *(["--tokenizer", tokenizer] if tokenizer else []), *runner_args]
    env = {**_user_env(), "CHATSHARDS_TRACE": str(trace), "PYTHONPATH": str(job_repo)}
    children: dict = {}
    stop = threading.Event()
    start = time.time()
    process = subprocess.Popen(cmd, cwd=job_repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_watch_children, args=(process.pid, children, stop), daemon=True)
    watcher.start()
    stdout, stderr = process.communicate()
    end = time.time()
    stop.set()
    watcher.join()
    if process.returncode != 0:
        raise RuntimeError(f"job failed ({process.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    events = []
    if trace.exists():
        for line in trace.read_text().splitlines():
            name, pid, at = line.split("\t")
            events.append((name, int(pid), float(at)))
    return {"wall": end - start, "start": start, "end": end, "pid": process.pid, "manifest": manifest, "events": events,
            "committed": manifest_path.stat().st_mtime, "children": children, "stdout": stdout}


def run_recipe(script: Path, tokenizer: str, data: Path, out: Path, workers: int, cache: Path) -> dict:
    """The recipe script as a whole process (fresh datasets cache); wall time and its own timestamps."""
    for path in (out, cache):
        if path.exists():
            shutil.rmtree(path)
    env = {**_user_env(), "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    start = time.time()
    done = subprocess.run([sys.executable, str(script), tokenizer, str(data), str(out), str(workers)],
                          env=env, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"recipe failed: {done.stderr[-3000:]}")
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": end - start, "after_load": end - marks["tokenizer"], "start": start, **marks}


# ---------------------------------------------------------------- ceiling

def run_ceiling(tokenizer_dir: str, conversations: list[list[dict]], cores: int) -> dict:
    """Rendering on one core (scaled to ``cores``) plus ``encode_batch`` on the rendered texts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    started = time.perf_counter()
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]
    render_s = time.perf_counter() - started
    backend = tokenizer.backend_tokenizer
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), 1024):
        tokens += sum(len(e.ids) for e in backend.encode_batch(texts[start:start + 1024], add_special_tokens=False))
    encode_s = time.perf_counter() - started
    return {"render_1core": render_s, "encode_batch": encode_s, "tokens": tokens,
            "seconds": render_s / cores + encode_s}


# ---------------------------------------------------------------- fixed-cost split

def fixed_cost_split(run: dict) -> dict[str, float]:
    """Seconds per start-up phase of one job run (from its trace events and its child processes).

    Phases follow one another: launcher imports, launcher tokenizer load, configuration checks (template
    check, input matching), graph building and Beam's start of worker processes, worker start (process
    start to the tokenizing stage's set-up: imports, gRPC, reading the input), worker tokenizer load, the
    first batch, the other batches, commit (last batch to the manifest), process exit.
    """
    launcher = run["pid"]
    first: dict = {}
    last: dict = {}
    for name, pid, at in run["events"]:
        key = (name, pid == launcher)
        first.setdefault(key, at)
        first.setdefault(name, at)
        last[name] = at
    children = sorted(t for t, _ in run["children"].values())
    split: dict[str, float] = {}
    if ("tokenizer_load_start", True) in first:
        split["imports (launcher)"] = first[("tokenizer_load_start", True)] - run["start"]
        split["tokenizer load (launcher)"] = first[("tokenizer_loaded", True)] - first[("tokenizer_load_start", True)]
    if "launcher_checked" in first:
        split["template check + inputs"] = first["launcher_checked"] - first[("tokenizer_loaded", True)]
    if "worker_setup_start" not in first:
        if children:
            split["worker processes started after"] = children[0] - run["start"]
        split["exit (after manifest)"] = run["end"] - run["committed"]
        split["total"] = run["wall"]
        return split
    if "output_claimed" in first:  # the local engine: forked workers (or this process) build the rows
        split["claim output"] = first["output_claimed"] - first["launcher_checked"]
        split["start workers (fork) + set-up"] = first["worker_setup_done"] - first["output_claimed"]
        return _batches_to_exit(split, run, first, last, "shards + audit + commit")
    if children:
        split["graph + worker processes start"] = children[0] - first["launcher_checked"]
        split["worker start (imports, gRPC, read)"] = first["worker_setup_start"] - children[0]
    else:
        split["graph + read (one process)"] = first["worker_setup_start"] - first["launcher_checked"]
    split["worker set-up (tokenizer load)"] = first["worker_setup_done"] - first["worker_setup_start"]
    return _batches_to_exit(split, run, first, last, "commit (after last batch)")


def _batches_to_exit(split: dict, run: dict, first: dict, last: dict, commit_label: str) -> dict[str, float]:
    """The phases from the first batch to the process exit, added to ``split``."""
    split["first batch"] = first["batch_done"] - first["worker_setup_done"]
    split["other batches"] = last["batch_done"] - first["batch_done"]
    split[commit_label] = run["committed"] - last["batch_done"]
    split["exit (after manifest)"] = run["end"] - run["committed"]
    split["total"] = run["wall"]
    return split


# ---------------------------------------------------------------- main

def _median(values):
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50000)
    parser.add_argument("--small", type=int, default=5000, help="for the steady rate (0: skip)")
    parser.add_argument("--tiny", type=int, default=100, help="for the fixed cost (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unique-messages", action="store_true", help="number every record's messages, so no "
                        "message text repeats (the default input repeats the base data's own conversations)")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the bundled one, saved to a folder)")
    parser.add_argument("--job-repo", type=Path, default=REPO, help="checkout to run the job from")
    parser.add_argument("--legacy", action="store_true", help="the --job-repo checkout has no local engine "
                        "(no --workers): run its W-worker jobs on Beam")
    parser.add_argument("--no-beam", action="store_true", help="skip the Beam W-worker runs")
    parser.add_argument("--before-repo", type=Path, default=None, help="also run an older checkout (without the "
                        "local engine: Beam W workers, and its default command) on the same inputs, interleaved")
    parser.add_argument("--before-local", action="store_true", help="the --before-repo checkout has the local "
                        "engine: run it with --workers W (not on Beam), and print its steady rate")
    parser.add_argument("--no-default-runner", action="store_true", help="skip the default-command runs on N")
    parser.add_argument("--mode-sizes", default="", help="comma-separated record counts: also run the job in one "
                        "process and on W processes at each (where the default command's threshold should be)")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"{SHARED} is needed for this benchmark (set CHATSHARDS_SHARED_DATA)")
    beam_multi = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                  f"--direct_num_workers={args.workers}"]
    multi = beam_multi if args.legacy else ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp_name:
        tmp = Path(tmp_name)
        tokenizer = args.tokenizer or str(save_bundled_tokenizer(tmp / "user-tokenizer"))
        script = tmp / "recipe.py"
        script.write_text(RECIPE_SCRIPT)
        mode_sizes = [int(n) for n in args.mode_sizes.split(",") if n.strip()]
        sizes = sorted({n for n in (args.records, args.small, args.tiny, *mode_sizes) if n}, reverse=True)
        one = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"] if args.legacy else ["--workers", "1"]
        inputs = {n: build_input(tmp / f"in-{n}", n, unique_messages=args.unique_messages) for n in sizes}
        input_mib = {n: sum(p.stat().st_size for p in inputs[n][0].glob("*.jsonl")) / 2**20 for n in sizes}
        runs: dict[str, list[dict]] = {}

        def add(name, result):
            runs.setdefault(name, []).append(result)

        for repeat in range(args.repeats):
            for n in mode_sizes:
                add(f"one process {n}",
                    run_job(inputs[n][0], tmp / "out", tokenizer, one, args.job_repo, tmp / "trace"))
                add(f"job {n}", run_job(inputs[n][0], tmp / "out", tokenizer, multi, args.job_repo, tmp / "trace"))
            for n in (args.records, args.small, args.tiny):
                if not n:
                    continue
                job_dir, recipe_data, _ = inputs[n]
                add(f"recipe {n}", run_recipe(script, tokenizer, recipe_data, tmp / "recipe-out", args.workers,
                                              tmp / "hf-cache"))
                add(f"job {n}", run_job(job_dir, tmp / "out", tokenizer, multi, args.job_repo, tmp / "trace"))
                if not args.legacy and not args.no_beam:
                    add(f"beam {n}", run_job(job_dir, tmp / "out", tokenizer, beam_multi, args.job_repo, tmp / "trace"))
                if args.before_repo:
                    add(f"before {n}", run_job(job_dir, tmp / "out", tokenizer,
                                               multi if args.before_local else beam_multi, args.before_repo,
                                               tmp / "trace"))
                    if n != args.small:
                        add(f"before default {n}", run_job(job_dir, tmp / "out", tokenizer, [], args.before_repo,
                                                           tmp / "trace"))
            if args.tiny:
                job_dir = inputs[args.tiny][0]
                add(f"default {args.tiny}", run_job(job_dir, tmp / "out", tokenizer, [], args.job_repo, tmp / "trace"))
                add(f"default bundled {args.tiny}", run_job(job_dir, tmp / "out", None, [], args.job_repo,
                                                           tmp / "trace"))
                if args.before_repo:
                    add(f"before default bundled {args.tiny}", run_job(job_dir, tmp / "out", None, [],
                                                                       args.before_repo, tmp / "trace"))
            if not args.no_default_runner:
                add(f"default {args.records}", run_job(inputs[args.records][0], tmp / "out", tokenizer, [],
                                                      args.job_repo, tmp / "trace"))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        ceilings = [run_ceiling(tokenizer, inputs[args.records][2], args.workers) for _ in range(args.repeats)]

    n = args.records
    wall = {name: _median([r["wall"] for r in results]) for name, results in runs.items()}
    manifest = runs[f"job {n}"][0]["manifest"]
    ceiling_s = _median([c["seconds"] for c in ceilings])
    print(f"job from {args.job_repo} ; tokenizer folder {'given' if args.tokenizer else '(bundled, saved)'} ; "
          f"{args.workers} workers ; medians of {args.repeats}")
    print(f"input: {n} short records (Alpaca <= {SHORT_ALPACA_CHARS} chars + ShareGPT"
          f"{', every message numbered' if args.unique_messages else ''}); job wrote "
          f"{manifest['counts']['written']} rows, {manifest['totals']['tokens']} tokens, rejected "
          f"{manifest['counts']['rejected']}")
    print("\n| what | wall |\n|---|---|")
    recipe = runs[f"recipe {n}"]
    print(f"| recipe script, {n} records | {wall[f'recipe {n}']:.1f} s "
          f"({_median([r['after_load'] for r in recipe]):.1f} s after imports and tokenizer load) |")
    if args.tiny:
        print(f"| recipe script, {args.tiny} records | {wall[f'recipe {args.tiny}']:.1f} s |")
    engine = "Beam multi_processing" if args.legacy else "local engine, --workers"
    print(f"| job, {args.workers} workers ({engine}), {n} records | {wall[f'job {n}']:.1f} s "
          f"({wall[f'recipe {n}'] / wall[f'job {n}']:.2f}x the recipe script) |")
    for m in (args.small, args.tiny):
        if m:
            print(f"| job, {args.workers} workers, {m} records | {wall[f'job {m}']:.1f} s |")
    for m in (n, args.small, args.tiny):
        if m and f"beam {m}" in wall:
            print(f"| job on Beam (DirectRunner multi_processing, {args.workers} workers), {m} records | "
                  f"{wall[f'beam {m}']:.1f} s |")
    if args.tiny:
        print(f"| job, default command, {args.tiny} records, own tokenizer folder / bundled | "
              f"{wall[f'default {args.tiny}']:.1f} s / {wall[f'default bundled {args.tiny}']:.1f} s |")
    if not args.no_default_runner:
        print(f"| job, default command, {n} records | {wall[f'default {n}']:.1f} s "
              f"({wall[f'recipe {n}'] / wall[f'default {n}']:.2f}x the recipe script) |")
    print(f"| rendering alone (apply_chat_template(tokenize=False), one core) | "
          f"{_median([c['render_1core'] for c in ceilings]):.1f} s |")
    print(f"| encode_batch alone on the rendered texts ({os.cpu_count()} cores) | "
          f"{_median([c['encode_batch'] for c in ceilings]):.1f} s |")

    for m in mode_sizes:
        print(f"| job on {m} records ({input_mib[m]:.1f} MiB): one process / {args.workers} processes | "
              f"{wall[f'one process {m}']:.1f} s / "
              f"{wall[f'job {m}']:.1f} s |")
    if args.before_repo:
        if f"before default bundled {args.tiny}" in wall:
            print(f"| before: default command, {args.tiny} records, bundled tokenizer | "
                  f"{wall[f'before default bundled {args.tiny}']:.1f} s |")
        for m in (n, args.small, args.tiny):
            if m and f"before {m}" in wall:
                extra = (f" / default command {wall[f'before default {m}']:.1f} s" if f"before default {m}" in wall
                         else "")
                how = "local engine" if args.before_local else "Beam"
                print(f"| before ({args.before_repo}): {how} {args.workers} workers, {m} records | "
                      f"{wall[f'before {m}']:.1f} s{extra} |")
    print("\nratios (records/s, higher is better for the job):")
    print(f"  end to end, job / recipe script : {wall[f'recipe {n}'] / wall[f'job {n}']:.2f}x (target >= 1.0 at 50k, "
          f">= 1.5 at 500k)")
    print(f"  end to end, job / ceiling       : {ceiling_s / wall[f'job {n}']:.2f}  (ceiling {n / ceiling_s:.0f} "
          f"records/s on {args.workers} cores)")
    if args.small:
        job_rate = (n - args.small) / (wall[f"job {n}"] - wall[f"job {args.small}"])
        recipe_rate = (n - args.small) / (wall[f"recipe {n}"] - wall[f"recipe {args.small}"])
        print(f"  steady rate ({args.small}..{n}): job {job_rate:.0f} records/s, recipe {recipe_rate:.0f} records/s "
              f"({job_rate / recipe_rate:.2f}x), ceiling {n / ceiling_s:.0f} records/s: job / ceiling "
              f"{job_rate * ceiling_s / n:.2f} (target >= 0.80)")
        if f"before {args.small}" in wall and f"before {n}" in wall:
            before_rate = (n - args.small) / (wall[f"before {n}"] - wall[f"before {args.small}"])
            print(f"  before ({args.before_repo}): end to end {wall[f'recipe {n}'] / wall[f'before {n}']:.2f}x the "
                  f"recipe script; steady {before_rate:.0f} records/s ({before_rate / recipe_rate:.2f}x the recipe, "
                  f"{before_rate * ceiling_s / n:.2f} of the ceiling); job / before, steady: "
                  f"{job_rate / before_rate:.2f}x")
    if args.tiny:
        print(f"  fixed cost, {args.tiny} records, {args.workers} workers: {wall[f'job {args.tiny}']:.1f} s "
              f"(target <= 2.5 s and <= the recipe's {wall[f'recipe {args.tiny}']:.1f} s); default command, bundled "
              f"tokenizer: {wall[f'default bundled {args.tiny}']:.1f} s (target <= 1.5 s)")
        for name in (f"job {args.tiny}", f"default {args.tiny}", f"default bundled {args.tiny}", f"beam {args.tiny}",
                     f"before {args.tiny}"):
            if name not in runs:
                continue
            splits = [fixed_cost_split(r) for r in runs[name]]
            keys = list(splits[0])
            text = ", ".join(f"{k} {_median([s.get(k, float('nan')) for s in splits]):.2f}" for k in keys)
            print(f"  split ({name}): {text}")


if __name__ == "__main__":
    main()
