"""The job against the recipe users write, whole process against whole process, on short records.

Input (deterministic): short Alpaca records (instruction + input + output of at most 600 characters) and
ShareGPT conversations, interleaved and repeated to N records. The base records come from the committed subsets
in tests/data (what a fresh clone has; ``--base-data shared``: the whole files of ../shared/data). Kinds of
input (``--inputs``, comma-separated; each is measured and reported on its own):

* ``unique``: every message of every record ends with its record's number, so no message text repeats (the
  chat template still injects its default system prompt into every record: the template's own repetition,
  which every contender renders and encodes);
* ``system``: the same plus one shared system prompt in every record (a 400-character assistant brief, as a
  dataset written for one product has): realistic repetition, which the job's segment cache encodes once;
* ``base``: the base records repeated, copies after the first numbered (the input of the README's figures
  before issue 26; the whole FastChat file repeats its own conversations, 167 times "What is up?").

Every record of an input is distinct except in ``base`` (copy 0 of the base records as they are: ../shared/data's
alpaca demo holds exact duplicates). The job reads the records in their own formats; the recipe reads the same
conversations already converted to ``messages`` (which favours the recipe).

Tokenizer: a *user's own tokenizer folder*, loaded by ``--tokenizer DIR`` in both. Without ``--tokenizer`` the
bundled Qwen2-vocabulary tokenizer with the ``{% generation %}`` ChatML template is saved with
``save_pretrained`` to a temporary folder, which then plays that role.

Timed, each as a whole process (``subprocess``), medians over ``--repeats``, interleaved:

* recipe: a script doing ``load_dataset("json")``, ``map(apply_chat_template(...,
  return_assistant_tokens_mask=True), num_proc=W)``, ``save_to_disk``, with a fresh datasets cache per run (it
  keeps nothing between runs: every run of it is a first run);
* job: ``python -m pipeline --tokenizer DIR --workers W`` (the local engine on W processes), the same on Beam
  (``--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=W``), and the default
  command (no flags: whatever the job chooses for that input). These are *warm* runs: ``$CHATSHARDS_CACHE`` is
  a folder of this benchmark, primed by one untimed run, holding the prepared tokenizers;
* first run: the job on the ``--tiny`` input with an empty ``$CHATSHARDS_CACHE`` (a new temporary folder for
  every run), as on a new machine or with a tokenizer folder the job has not seen: it loads the folder through
  transformers and writes the prepared copy (the bundled tokenizer: also converts its vocabulary);
* ceiling: rendering with ``apply_chat_template(tokenize=False)`` on one core, divided by W, plus the Rust
  tokenizer's ``encode_batch`` of every rendered text whole (its own threads). It includes nothing else (no
  reading, parsing, labels, hashing, audit, Arrow, writing, process start), and it encodes every text whole: the
  job encodes a repeated segment (the default or a shared system prompt) once, so on repetitive input the job
  can pass 1.0 of this ceiling.

Each runs on N records, on ``--small`` records (steady rate = (N - small) / (t_N - t_small)) and on ``--tiny``
records (the fixed cost). The job's fixed-cost split (imports, tokenizer load, worker start, first batch,
commit) comes from ``CHATSHARDS_TRACE`` (a file the job appends timestamped events to).

Checked inside the benchmark: the job's rows equal the recipe's (``input_ids`` and ``labels`` of every record,
matched by input file and line) on N records of every input kind and on the first-run job, so a faster job
that does less work cannot pass; the benchmark stops with the first difference.

``--first-run``: only the tiny input, more repeats: the recipe, the job's first run and warm run (own folder and
bundled tokenizer; ``--before-repo``: an older checkout's too, interleaved), and where a first run's
tokenizer load goes (transformers import, ``AutoTokenizer.from_pretrained``, the vocabulary hash, the
serialisation, reading it back, each timed in a fresh process).

``--job-repo DIR`` runs the job from another checkout; ``--legacy`` for a checkout without the local engine (no
``--workers``: its "job, W workers" runs are the Beam ones).

Usage::

    python benchmarks/bench_job.py [--records 20000] [--small 2000] [--tiny 100] [--repeats 3] [--workers 2]
                                   [--inputs unique,system] [--tokenizer DIR] [--before-repo DIR [--before-local]]
    python benchmarks/bench_job.py --first-run [--repeats 5] [--before-repo DIR --before-local]
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

TEST_DATA = REPO / "tests" / "data"
ALPACA = "alpaca/llamafactory_alpaca_en_demo.json"
SHAREGPT = "sharegpt/fastchat_dummy_conversation.json"
SHORT_ALPACA_CHARS = 600
INPUT_FILES = 4
INPUT_KINDS = ("unique", "system", "base")
# One system prompt shared by every record of the ``system`` input (written for this benchmark).
SHARED_SYSTEM_PROMPT = (
    "You are the support assistant of a bicycle shop. Answer in a friendly, concise way, in the language of the "
    "question. When a question is about repairs, give the steps in order and name the tools needed. When you are "
    "not sure, say so and suggest visiting the shop. Never invent prices, opening hours or stock levels; point to "
    "the website for those. Keep answers under 200 words unless the customer asks for more detail."
)

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

def _base_records(data: Path) -> list[tuple[dict, list[dict]]]:
    """(record as written for the job, its conversation as messages), Alpaca and ShareGPT interleaved."""
    alpaca = [r for r in json.loads((data / ALPACA).read_text(encoding="utf-8"))
              if len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= SHORT_ALPACA_CHARS]
    sharegpt = json.loads((data / SHAREGPT).read_text(encoding="utf-8"))
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


def _varied(record: dict, messages: list[dict], number: int, system: str | None) -> tuple[dict, list[dict]]:
    """A base record with `` (#number)`` at the end of every message (``number`` 0: as is) and, given
    ``system``, that system prompt (Alpaca and ShareGPT records carry it in their ``system`` field)."""
    record = json.loads(json.dumps(record))
    suffix = f" (#{number})" if number else ""
    if "instruction" in record:
        record["instruction"] += suffix
        record["output"] += suffix
        user = record["instruction"] + ("\n" + record["input"] if record["input"] else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    else:
        for turn in record["conversations"]:
            turn["value"] += suffix
        messages = [{"role": m["role"], "content": t["value"]} for m, t in zip(messages, record["conversations"])]
    if system is not None:
        record["system"] = system
        messages = [{"role": "system", "content": system}, *messages]
    return record, messages


def build_input(folder: Path, records: int, kind: str, data: Path) -> tuple[Path, Path, list[list[dict]]]:
    """Write ``records`` short records of input ``kind`` (see the module docstring): the job's input
    (``folder/job/part-NN.jsonl``, INPUT_FILES files of ``per_file(records)`` records), the recipe's
    (``folder/recipe.jsonl``, ``{"messages": [...]}`` lines, the same conversations in the same order); return
    them and the messages."""
    base = _base_records(data)
    job_dir = folder / "job"
    job_dir.mkdir(parents=True)
    handles = [open(job_dir / f"part-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(INPUT_FILES)]
    conversations = []
    with open(folder / "recipe.jsonl", "w", encoding="utf-8") as recipe:
        for i in range(records):
            number = i // len(base) if kind == "base" else i + 1
            record, messages = _varied(*base[i % len(base)], number,
                                       SHARED_SYSTEM_PROMPT if kind == "system" else None)
            handles[i // per_file(records)].write(json.dumps(record, ensure_ascii=False) + "\n")
            recipe.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            conversations.append(messages)
    for handle in handles:
        handle.close()
    return job_dir, folder / "recipe.jsonl", conversations


def base_data(name: str) -> Path:
    """The folder of the base records: ``tests`` (the committed subsets) or ``shared`` (../shared/data)."""
    data = SHARED if name == "shared" else TEST_DATA
    if not (data / ALPACA).exists():
        sys.exit(f"{data / ALPACA} is needed (--base-data shared: set CHATSHARDS_SHARED_DATA)")
    return data


def per_file(records: int) -> int:
    return -(-records // INPUT_FILES)


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
            trace: Path, cache: Path) -> dict:
    """``python -m pipeline`` as a whole process with ``$CHATSHARDS_CACHE`` = ``cache`` (a folder that does not
    exist yet: a first run); returns wall time, manifest and start-up events."""
    if out.exists():
        shutil.rmtree(out)
    if trace.exists():
        trace.unlink()
    cmd = [sys.executable, "-m", "pipeline", "--input", str(input_dir / "*.jsonl"), "--output", str(out),
           *(["--tokenizer", tokenizer] if tokenizer else []), *runner_args]
    env = {**_user_env(), "CHATSHARDS_TRACE": str(trace), "PYTHONPATH": str(job_repo), "CHATSHARDS_CACHE": str(cache)}
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


# ---------------------------------------------------------------- the job's rows against the recipe's

def check_rows(job_out: Path, recipe_out: Path, records: int, label: str) -> int:
    """Every record's ``input_ids`` and ``labels`` in the job's shards equal the recipe's saved dataset (rows
    matched by input file and line); exits with the first difference. Returns the rows compared."""
    import datasets
    import pyarrow as pa

    recipe = datasets.load_from_disk(str(recipe_out))
    want_ids = recipe.data.column("input_ids").to_pylist()
    want_labels = recipe.data.column("labels").to_pylist()
    manifest = json.loads((job_out / "manifest.json").read_text())
    if manifest["counts"]["rejected"] or manifest["counts"]["rows"] != records or len(want_ids) != records:
        sys.exit(f"{label}: the job wrote {manifest['counts']['rows']} rows and rejected "
                 f"{manifest['rejected_by_reason']}, the recipe {len(want_ids)} rows, of {records} records")
    compared = 0
    for shard in manifest["shards"]:
        table = pa.ipc.open_stream(pa.memory_map(str(job_out / shard["path"]))).read_all()
        for source, index, ids, labels in zip(table["source"].to_pylist(), table["index"].to_pylist(),
                                              table["input_ids"].to_pylist(), table["labels"].to_pylist()):
            i = int(Path(source).stem.split("-")[1]) * per_file(records) + index
            if ids != want_ids[i] or labels != want_labels[i]:
                what = "input_ids" if ids != want_ids[i] else "labels"
                sys.exit(f"{label}: record {i} ({source} line {index + 1}): the job's {what} differ from the "
                         f"recipe's")
            compared += 1
    if compared != records:
        sys.exit(f"{label}: compared {compared} rows of {records}")
    return compared


# ---------------------------------------------------------------- where a first run's tokenizer load goes

COLD_PHASES_SCRIPT = r"""
import json, os, sys, time
folder, repo = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo)
marks = {"start": time.time()}
from transforms.tokenizer_loading import folder_content_hash
from transforms.prepared_tokenizer import vocab_digest
marks["chatshards imports"] = time.time()
folder_content_hash(folder)
marks["folder hash (cache key)"] = time.time()
import torch  # noqa: F401 - transformers' AutoTokenizer imports it (configuration_utils)
marks["import torch (transformers imports it)"] = time.time()
from transformers import AutoTokenizer
marks["import transformers' AutoTokenizer"] = time.time()
tokenizer = AutoTokenizer.from_pretrained(folder)
marks["AutoTokenizer.from_pretrained"] = time.time()
vocab_digest(tokenizer.get_vocab())
marks["vocabulary hash (get_vocab + sha256)"] = time.time()
text = tokenizer.backend_tokenizer.to_str()
marks["serialise the Rust tokenizer (to_str)"] = time.time()
from tokenizers import Tokenizer
Tokenizer.from_str(text)
marks["parse it back (what reading the prepared copy costs)"] = time.time()
print(json.dumps(marks))
"""

LOAD_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
t0 = time.time()
from transforms.tokenizer_loading import load_tokenizer
load_tokenizer(sys.argv[1] if sys.argv[1] != "bundled" else None, prepared=True)
print(time.time() - t0)
"""


def cold_phases(tokenizer: str, repo: Path, repeats: int) -> dict[str, float]:
    """Median seconds of each phase of a first run's tokenizer load, measured in fresh processes."""
    phases: dict[str, list[float]] = {}
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", COLD_PHASES_SCRIPT, tokenizer, str(repo)], env=_user_env(),
                              capture_output=True, text=True, check=True)
        marks = json.loads(done.stdout.strip().splitlines()[-1])
        names = list(marks)
        for before, name in zip(names, names[1:]):
            phases.setdefault(name, []).append(marks[name] - marks[before])
    return {name: _median(values) for name, values in phases.items()}


def load_seconds(tokenizer: str, repo: Path, cache: Path) -> float:
    """``load_tokenizer(prepared=True)`` in a fresh process, imports included, with ``$CHATSHARDS_CACHE``=cache."""
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, tokenizer, str(repo)], capture_output=True, text=True,
                          env={**_user_env(), "CHATSHARDS_CACHE": str(cache)}, check=True)
    return float(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main

def _median(values):
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--small", type=int, default=2000, help="for the steady rate (0: skip)")
    parser.add_argument("--tiny", type=int, default=100, help="for the fixed cost and the first run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--inputs", default="unique,system", help=f"input kinds, comma-separated, of {INPUT_KINDS}")
    parser.add_argument("--base-data", choices=("tests", "shared"), default="tests", help="base records: the "
                        "subsets in tests/data (default) or the whole files of ../shared/data")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the bundled one, saved to a folder)")
    parser.add_argument("--job-repo", type=Path, default=REPO, help="checkout to run the job from")
    parser.add_argument("--legacy", action="store_true", help="the --job-repo checkout has no local engine "
                        "(no --workers): run its W-worker jobs on Beam")
    parser.add_argument("--no-beam", action="store_true", help="skip the Beam W-worker runs")
    parser.add_argument("--before-repo", type=Path, default=None, help="also run an older checkout on the same "
                        "inputs, interleaved (without the local engine: Beam W workers, and its default command)")
    parser.add_argument("--before-local", action="store_true", help="the --before-repo checkout has the local "
                        "engine: run it with --workers W (not on Beam), and print its steady rate")
    parser.add_argument("--no-default-runner", action="store_true", help="skip the default-command runs on N")
    parser.add_argument("--mode-sizes", default="", help="comma-separated record counts: also run the job in one "
                        "process and on W processes at each (where the default command's threshold should be)")
    parser.add_argument("--first-run", action="store_true", help="only the fixed cost on --tiny records: first "
                        "runs (empty cache) against warm runs and the recipe, and where the first run's seconds go")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.inputs.split(",") if k.strip()]
    if not kinds or any(k not in INPUT_KINDS for k in kinds):
        sys.exit(f"--inputs takes kinds of {INPUT_KINDS}")
    data = base_data(args.base_data)
    if args.first_run and not args.tiny:
        sys.exit("--first-run needs --tiny N")
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp_name:
        bench = Bench(args, Path(tmp_name), data)
        if args.first_run:
            bench.first_run(kinds[0])
            return
        for kind in kinds:
            bench.measure(kind)


class Bench:
    """One benchmark run: its temporary folder, the tokenizer folder, the caches and the runs."""

    def __init__(self, args, tmp: Path, data: Path):
        self.args, self.tmp, self.data = args, tmp, data
        self.tokenizer = args.tokenizer or str(save_bundled_tokenizer(tmp / "user-tokenizer"))
        self.script = tmp / "recipe.py"
        self.script.write_text(RECIPE_SCRIPT)
        self.beam_multi = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                           f"--direct_num_workers={args.workers}"]
        self.multi = self.beam_multi if args.legacy else ["--workers", str(args.workers)]
        self.one = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"] if args.legacy else ["--workers", "1"]
        self.before_multi = self.multi if args.before_local else self.beam_multi
        self.warm = {"after": tmp / "cache-warm", "before": tmp / "cache-warm-before"}
        self.cold_runs = 0
        self.primed: set[str] = set()

    # -- runs --------------------------------------------------------------------------------------------
    def job(self, input_dir: Path, tokenizer, runner_args, *, before: bool = False, cold: bool = False) -> dict:
        repo = self.args.before_repo if before else self.args.job_repo
        if cold:
            self.cold_runs += 1
            cache = self.tmp / f"cache-cold-{self.cold_runs}"
        else:
            cache = self.warm["before" if before else "after"]
        try:
            return run_job(input_dir, self.tmp / "out", tokenizer, runner_args, repo, self.tmp / "trace", cache)
        finally:
            if cold:
                shutil.rmtree(cache, ignore_errors=True)

    def recipe(self, recipe_data: Path) -> dict:
        return run_recipe(self.script, self.tokenizer, recipe_data, self.tmp / "recipe-out", self.args.workers,
                          self.tmp / "hf-cache")

    def prime(self, input_dir: Path) -> None:
        """One untimed run per checkout with each tokenizer: the warm caches hold their prepared tokenizers."""
        sides = ["after"] + (["before"] if self.args.before_repo else [])
        for side in sides:
            if side not in self.primed:
                for tokenizer in (self.tokenizer, None):
                    self.job(input_dir, tokenizer, [], before=side == "before")
                self.primed.add(side)

    # -- the full comparison on one input kind ----------------------------------------------------------
    def measure(self, kind: str) -> None:
        args, tmp = self.args, self.tmp
        mode_sizes = [int(n) for n in args.mode_sizes.split(",") if n.strip()]
        sizes = sorted({n for n in (args.records, args.small, args.tiny, *mode_sizes) if n}, reverse=True)
        inputs = {n: build_input(tmp / f"in-{kind}-{n}", n, kind, self.data) for n in sizes}
        input_mib = {n: sum(p.stat().st_size for p in inputs[n][0].glob("*.jsonl")) / 2**20 for n in sizes}
        self.prime(inputs[min(sizes)][0])
        runs: dict[str, list[dict]] = {}
        checked: list[str] = []

        def add(name, result):
            runs.setdefault(name, []).append(result)

        for repeat in range(args.repeats):
            for n in mode_sizes:
                add(f"one process {n}", self.job(inputs[n][0], self.tokenizer, self.one))
                add(f"job {n}", self.job(inputs[n][0], self.tokenizer, self.multi))
            for n in (args.records, args.small, args.tiny):
                if not n:
                    continue
                job_dir, recipe_data, _ = inputs[n]
                add(f"recipe {n}", self.recipe(recipe_data))
                add(f"job {n}", self.job(job_dir, self.tokenizer, self.multi))
                if repeat == 0 and n in (args.records, args.tiny):
                    rows = check_rows(tmp / "out", tmp / "recipe-out", n, f"{kind} input, job on {n} records")
                    checked.append(f"job, {args.workers} workers, {n} records: {rows} rows")
                if not args.legacy and not args.no_beam:
                    add(f"beam {n}", self.job(job_dir, self.tokenizer, self.beam_multi))
                if args.before_repo:
                    add(f"before {n}", self.job(job_dir, self.tokenizer, self.before_multi, before=True))
                    if n != args.small:
                        add(f"before default {n}", self.job(job_dir, self.tokenizer, [], before=True))
            if args.tiny:  # the recipe's output on the tiny input is still in recipe-out
                job_dir = inputs[args.tiny][0]
                add(f"first run {args.tiny}", self.job(job_dir, self.tokenizer, self.multi, cold=True))
                if repeat == 0:
                    rows = check_rows(tmp / "out", tmp / "recipe-out", args.tiny, f"{kind} input, first run")
                    checked.append(f"first run (empty cache), {args.tiny} records: {rows} rows")
                add(f"default {args.tiny}", self.job(job_dir, self.tokenizer, []))
                add(f"default first run {args.tiny}", self.job(job_dir, self.tokenizer, [], cold=True))
                add(f"default bundled {args.tiny}", self.job(job_dir, None, []))
                add(f"default bundled first run {args.tiny}", self.job(job_dir, None, [], cold=True))
                if args.before_repo:
                    add(f"before default bundled {args.tiny}", self.job(job_dir, None, [], before=True))
                    add(f"before first run {args.tiny}", self.job(job_dir, self.tokenizer, self.before_multi,
                                                                  before=True, cold=True))
            if not args.no_default_runner:
                add(f"default {args.records}", self.job(inputs[args.records][0], self.tokenizer, []))
            print(f"{kind}: repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        ceilings = [run_ceiling(self.tokenizer, inputs[args.records][2], args.workers) for _ in range(args.repeats)]
        self.report(kind, runs, ceilings, input_mib, mode_sizes, checked)

    def report(self, kind, runs, ceilings, input_mib, mode_sizes, checked) -> None:
        args = self.args
        n = args.records
        wall = {name: _median([r["wall"] for r in results]) for name, results in runs.items()}
        manifest = runs[f"job {n}"][0]["manifest"]
        ceiling_s = _median([c["seconds"] for c in ceilings])
        print(f"\n## input: {kind}\n")
        print(f"job from {args.job_repo} ; tokenizer folder {'given' if args.tokenizer else '(bundled, saved)'} ; "
              f"{args.workers} workers ; {os.cpu_count()} cores ; medians of {args.repeats}")
        print(f"input '{kind}': {n} short records (Alpaca <= {SHORT_ALPACA_CHARS} chars + ShareGPT, base records "
              f"from {self.data}); job wrote {manifest['counts']['rows']} rows, {manifest['totals']['tokens']} "
              f"tokens, rejected {manifest['counts']['rejected']}")
        print("checked, the job's input_ids and labels equal the recipe's: " + "; ".join(checked))
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
        if args.tiny:
            print(f"| job, {args.workers} workers, {args.tiny} records, first run (empty $CHATSHARDS_CACHE) | "
                  f"{wall[f'first run {args.tiny}']:.1f} s (recipe {wall[f'recipe {args.tiny}']:.1f} s) |")
        for m in (n, args.small, args.tiny):
            if m and f"beam {m}" in wall:
                print(f"| job on Beam (DirectRunner multi_processing, {args.workers} workers), {m} records | "
                      f"{wall[f'beam {m}']:.1f} s |")
        if args.tiny:
            print(f"| job, default command, {args.tiny} records, own tokenizer folder: warm / first run | "
                  f"{wall[f'default {args.tiny}']:.1f} s / {wall[f'default first run {args.tiny}']:.1f} s |")
            print(f"| job, default command, {args.tiny} records, bundled tokenizer: warm / first run | "
                  f"{wall[f'default bundled {args.tiny}']:.1f} s / "
                  f"{wall[f'default bundled first run {args.tiny}']:.1f} s |")
        if not args.no_default_runner:
            print(f"| job, default command, {n} records | {wall[f'default {n}']:.1f} s "
                  f"({wall[f'recipe {n}'] / wall[f'default {n}']:.2f}x the recipe script) |")
        print(f"| rendering alone (apply_chat_template(tokenize=False), one core) | "
              f"{_median([c['render_1core'] for c in ceilings]):.1f} s |")
        print(f"| encode_batch alone on the rendered texts, whole ({os.cpu_count()} cores) | "
              f"{_median([c['encode_batch'] for c in ceilings]):.1f} s |")
        for m in mode_sizes:
            print(f"| job on {m} records ({input_mib[m]:.1f} MiB): one process / {args.workers} processes | "
                  f"{wall[f'one process {m}']:.2f} s / {wall[f'job {m}']:.2f} s |")
        if args.before_repo:
            for name, label in ((f"before default bundled {args.tiny}", "default command, bundled tokenizer"),
                                (f"before first run {args.tiny}", "first run (empty cache)")):
                if name in wall:
                    print(f"| before: {label}, {args.tiny} records | {wall[name]:.1f} s |")
            for m in (n, args.small, args.tiny):
                if m and f"before {m}" in wall:
                    extra = (f" / default command {wall[f'before default {m}']:.1f} s"
                             if f"before default {m}" in wall else "")
                    how = "local engine" if args.before_local else "Beam"
                    print(f"| before ({args.before_repo}): {how} {args.workers} workers, {m} records | "
                          f"{wall[f'before {m}']:.1f} s{extra} |")
        print(f"\nceiling: rendering ({_median([c['render_1core'] for c in ceilings]):.1f} s on one core) / "
              f"{args.workers} + encode_batch of every rendered text whole "
              f"({_median([c['encode_batch'] for c in ceilings]):.1f} s) = {ceiling_s:.1f} s; nothing else (no "
              "reading, parsing, labels, hashing, audit, Arrow, writing, process start), and no repeated segment "
              "encoded once")
        print("ratios (records/s, higher is better for the job):")
        print(f"  end to end, job / recipe script : {wall[f'recipe {n}'] / wall[f'job {n}']:.2f}x")
        print(f"  end to end, job / ceiling       : {ceiling_s / wall[f'job {n}']:.2f}  (ceiling {n / ceiling_s:.0f} "
              f"records/s on {args.workers} cores)")
        if args.small:
            job_rate = (n - args.small) / (wall[f"job {n}"] - wall[f"job {args.small}"])
            recipe_rate = (n - args.small) / (wall[f"recipe {n}"] - wall[f"recipe {args.small}"])
            print(f"  steady rate ({args.small}..{n}): job {job_rate:.0f} records/s, recipe {recipe_rate:.0f} "
                  f"records/s ({job_rate / recipe_rate:.2f}x), ceiling {n / ceiling_s:.0f} records/s: job / ceiling "
                  f"{job_rate * ceiling_s / n:.2f}")
            if f"before {args.small}" in wall and f"before {n}" in wall:
                before_rate = (n - args.small) / (wall[f"before {n}"] - wall[f"before {args.small}"])
                print(f"  before ({args.before_repo}): end to end {wall[f'recipe {n}'] / wall[f'before {n}']:.2f}x "
                      f"the recipe script; steady {before_rate:.0f} records/s ({before_rate / recipe_rate:.2f}x the "
                      f"recipe, {before_rate * ceiling_s / n:.2f} of the ceiling); job / before, steady: "
                      f"{job_rate / before_rate:.2f}x")
        if args.tiny:
            print(f"  fixed cost, {args.tiny} records, {args.workers} workers: warm {wall[f'job {args.tiny}']:.1f} s, "
                  f"first run {wall[f'first run {args.tiny}']:.1f} s, recipe {wall[f'recipe {args.tiny}']:.1f} s")
            self.print_splits(runs, [f"job {args.tiny}", f"first run {args.tiny}", f"default {args.tiny}",
                                     f"default bundled {args.tiny}", f"default bundled first run {args.tiny}",
                                     f"beam {args.tiny}", f"before {args.tiny}", f"before first run {args.tiny}"])

    @staticmethod
    def print_splits(runs, names) -> None:
        for name in names:
            if name not in runs:
                continue
            splits = [fixed_cost_split(r) for r in runs[name]]
            keys = list(splits[0])
            text = ", ".join(f"{k} {_median([s.get(k, float('nan')) for s in splits]):.2f}" for k in keys)
            print(f"  split ({name}): {text}")

    # -- the first run on its own ----------------------------------------------------------------------
    def first_run(self, kind: str) -> None:
        args, tmp, n = self.args, self.tmp, self.args.tiny
        job_dir, recipe_data, _ = build_input(tmp / f"in-{kind}-{n}", n, kind, self.data)
        self.prime(job_dir)
        runs: dict[str, list[dict]] = {}
        sides = [("after", False)] + ([("before", True)] if args.before_repo else [])
        for repeat in range(args.repeats):
            runs.setdefault("recipe", []).append(self.recipe(recipe_data))
            for side, before in sides:
                multi = self.before_multi if before else self.multi
                runs.setdefault(f"{side}: first run", []).append(self.job(job_dir, self.tokenizer, multi,
                                                                          before=before, cold=True))
                if repeat == 0:
                    check_rows(tmp / "out", tmp / "recipe-out", n, f"{side}: first run")
                runs.setdefault(f"{side}: warm", []).append(self.job(job_dir, self.tokenizer, multi, before=before))
                runs.setdefault(f"{side}: default bundled, first run", []).append(
                    self.job(job_dir, None, [], before=before, cold=True))
                runs.setdefault(f"{side}: default bundled, warm", []).append(self.job(job_dir, None, [],
                                                                                      before=before))
            print(f"first run: repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        wall = {name: _median([r["wall"] for r in results]) for name, results in runs.items()}
        print(f"## first run against warm runs: {n} records ('{kind}' input), {args.workers} workers, own tokenizer "
              f"folder {'(given)' if args.tokenizer else '(the bundled one saved with save_pretrained)'} ; "
              f"{os.cpu_count()} cores ; medians of {args.repeats}, interleaved")
        print(f"checked: the first run's input_ids and labels equal the recipe's ({n} rows)\n")
        print("| what | wall |\n|---|---|")
        print(f"| recipe script (no cache: every run is a first run) | {wall['recipe']:.2f} s |")
        for side, _ in sides:
            label = "this checkout" if side == "after" else f"before ({args.before_repo})"
            print(f"| job, {label}: first run (empty $CHATSHARDS_CACHE) / warm | {wall[f'{side}: first run']:.2f} s "
                  f"/ {wall[f'{side}: warm']:.2f} s |")
            print(f"| job, {label}: default command, bundled tokenizer: first run / warm | "
                  f"{wall[f'{side}: default bundled, first run']:.2f} s / {wall[f'{side}: default bundled, warm']:.2f}"
                  " s |")
        for side, _ in sides:
            print(f"  first run / recipe ({side}): {wall[f'{side}: first run'] / wall['recipe']:.2f}")
            self.print_splits(runs, [f"{side}: first run", f"{side}: warm"])
        print("\nwhere a first run's tokenizer load goes (fresh processes, medians):")
        for name, seconds in cold_phases(self.tokenizer, args.job_repo, args.repeats).items():
            print(f"  {name}: {seconds:.2f} s")
        for side, before in sides:
            repo = args.before_repo if before else args.job_repo
            cold = [load_seconds(self.tokenizer, repo, tmp / f"cache-load-{side}-{k}") for k in range(args.repeats)]
            warm = [load_seconds(self.tokenizer, repo, tmp / f"cache-load-{side}-0") for _ in range(args.repeats)]
            print(f"  load_tokenizer(prepared=True), imports included ({side}): first {_median(cold):.2f} s, "
                  f"warm {_median(warm):.2f} s")


if __name__ == "__main__":
    main()
