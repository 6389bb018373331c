"""Preparing DPO data: ``python -m pipeline --task preference`` against ``DPOTrainer``'s own preparation (TRL 1.16,
``datasets.map``), whole processes, on the same pairs and tokenizer.

Pairs: TRL's explicit conversational format (``prompt`` messages, one-message ``chosen``/``rejected``) built from
LLaMA-Factory's ``dpo_en_demo`` subset in ``tests/data`` (its real prompts and answers, each copy numbered so no two
pairs are the same), ``--pairs`` of them. Tokenizer: the bundled Qwen2 tokenizer with its ChatML template, saved as
a folder both sides load.

* chatshards: ``python -m pipeline --task preference --input pairs.jsonl --output OUT --tokenizer DIR`` (the
  default command: the local engine, ``--workers`` processes; the audit included, as users run it);
* TRL: a process that imports TRL, loads the pairs with ``datasets.Dataset.from_json`` and runs
  ``DPOTrainer._prepare_dataset`` (prompt check, chat template, tokenization of prompt, prompt+chosen,
  prompt+rejected, the common-prefix split) with ``dataset_num_proc`` = ``--workers`` (``None`` for 1), writing
  the ``datasets`` cache as it does; a fresh cache folder per run, so nothing is reused.

Medians of ``--repeats`` interleaved runs; the ratio TRL / chatshards (above 1.0: chatshards is faster). The rows
are compared too: chatshards' ``prompt_ids`` equal TRL's and its completions equal TRL's less the newline ChatML
writes after ``<|im_end|>`` (the SFT end rule), which the script checks on every pair.

    python benchmarks/bench_preference.py [--pairs 4000] [--workers 1] [--repeats 3]
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "llamafactory_dpo_en_demo_12.json"

TRL_SCRIPT = r'''
import json, sys, types
from datasets import Dataset
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer
pairs, tokenizer_dir, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
dataset = Dataset.from_json(pairs, cache_dir=out + "/cache")
args = DPOConfig(output_dir=out, dataset_num_proc=workers if workers > 1 else None, report_to=[], use_cpu=True)
prepared = DPOTrainer._prepare_dataset(types.SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, args, "train")
prepared.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_json(out + "/rows.jsonl")
'''


def build_pairs(path: Path, count: int) -> None:
    records = json.loads(DATA.read_text(encoding="utf-8"))
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    with path.open("w", encoding="utf-8") as sink:
        for k in range(count):
            record = records[k % len(records)]
            prompt = [{"role": roles[m["from"]], "content": m["value"]} for m in record["conversations"]]
            prompt[-1] = {**prompt[-1], "content": f"[{k}] {prompt[-1]['content']}"}
            pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": record["chosen"]["value"]}],
                    "rejected": [{"role": "assistant", "content": record["rejected"]["value"]}]}
            sink.write(json.dumps(pair, ensure_ascii=False) + "\n")


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds


def read_ours(out: Path) -> list[dict]:
    import pyarrow as pa

    rows = []
    for shard in sorted((out / "data").glob("*.arrow")):
        rows += pa.ipc.open_stream(shard.read_bytes()).read_all().to_pylist()
    return sorted(rows, key=lambda r: r["index"])


def compare(ours: list[dict], theirs_path: Path, newline: list[int]) -> tuple[int, int]:
    theirs = [json.loads(line) for line in theirs_path.read_text().splitlines()]
    same = 0
    for mine, trl in zip(ours, theirs):
        if mine["prompt_ids"] == trl["prompt_ids"] and all(mine[k] + newline == trl[k]
                                                           for k in ("chosen_ids", "rejected_ids")):
            same += 1
    return same, len(theirs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from transforms.tokenizer_loading import bundled_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = bundled_tokenizer()
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        pairs = tmp / "pairs.jsonl"
        build_pairs(pairs, args.pairs)
        script = tmp / "trl_prepare.py"
        script.write_text(TRL_SCRIPT)
        ours_cmd = [sys.executable, "-m", "pipeline", "--task", "preference", "--input", str(pairs), "--output",
                    str(tmp / "ours"), "--tokenizer", str(tmp / "tokenizer"), "--workers", str(args.workers),
                    "--overwrite"]
        trl_cmd = [sys.executable, str(script), str(pairs), str(tmp / "tokenizer"), str(tmp / "trl"), str(args.workers)]
        times = {"chatshards": [], "trl": []}
        for _ in range(args.repeats):
            times["chatshards"].append(timed(ours_cmd))
            shutil.rmtree(tmp / "trl", ignore_errors=True)
            times["trl"].append(timed(trl_cmd))
        same, total = compare(read_ours(tmp / "ours"), tmp / "trl" / "rows.jsonl", newline)
    ours, trl = statistics.median(times["chatshards"]), statistics.median(times["trl"])
    print(f"pairs {args.pairs}, workers {args.workers}, repeats {args.repeats} (medians, whole processes)")
    print(f"  chatshards --task preference   : {ours:7.2f} s  ({args.pairs / ours:,.0f} pairs/s)  "
          f"runs {times['chatshards']}")
    print(f"  TRL DPOTrainer._prepare_dataset: {trl:7.2f} s  ({args.pairs / trl:,.0f} pairs/s)  runs {times['trl']}")
    print(f"  ratio TRL / chatshards: {trl / ours:.2f}")
    print(f"  rows equal up to ChatML's newline after <|im_end|>: {same} of {total}")


if __name__ == "__main__":
    main()
