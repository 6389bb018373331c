"""Packing: what ``--pack-length`` costs the job, and what packed batches give a training loop.

1. **Job cost** (whole processes, medians over ``--repeats``, alternating): ``python -m pipeline --workers W
   --max-length L`` (rows as built, cut to L) against ``--pack-length L`` (the same rows, packed per shard
   at shard-write time) on the same input; prints both wall times and the ratio (target: at most 1.10).
   Also the packing step alone: :func:`transforms.packing.rows.pack_table` over the unpacked job's shards.
2. **Training throughput** (one process, ``torch`` on CPU unless CUDA is present): a tiny randomly
   initialised Llama (hidden ``--hidden``, 2 layers, SDPA, vocabulary ``--vocab``: token ids are taken
   modulo it, which changes no shape) trained for ``--steps`` steps on batches of

   * padded rows, random order, padded to the longest row of the batch (``Collator.from_manifest``),
   * padded rows, length-grouped (``LengthGroupedBatchSampler``),
   * packed rows ``[B, L]`` with the block-diagonal 4D additive mask (``Collator.from_manifest`` on the packed
     folder),
   * packed rows, padding-free (one ``[1, total]`` row, ``use_cache=False``);

   each batch holds about the same number of real tokens; prints real (non-padding) tokens per second and the
   ratio to the first.

Input: bench_job.py's short real records (Alpaca + ShareGPT from ../shared/data, about 100 tokens each) with
the bundled tokenizer (``--generated``: generated chat records of random words instead, no shared data).

Usage::

    python benchmarks/bench_packing.py [--records 20000] [--pack-length 2048] [--workers 2] [--repeats 3]
                                       [--steps 12] [--train-pack-length 1024] [--generated]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def generated_input(folder: Path, records: int) -> Path:
    """Chat records of random words, 1-3 exchanges, message lengths spread like chat data (log-normal)."""
    words = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud light "
             "paper glass music table garden").split()
    rng = random.Random(0)
    folder.mkdir(parents=True)
    with open(folder / "part-00.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(records):
            messages = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                for role in ("user", "assistant"):
                    n = min(400, int(rng.lognormvariate(3.0, 0.9)) + 1)
                    messages.append({"role": role, "content": " ".join(rng.choices(words, k=n))})
            handle.write(json.dumps({"messages": messages}) + "\n")
    return folder


def run_job(input_dir: Path, out: Path, tokenizer: Path, flags: list[str]) -> float:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "pipeline", "--input", str(input_dir / "*.jsonl"), "--output", str(out),
           "--tokenizer", str(tokenizer), *flags]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"job failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return wall


def job_cost(args, work: Path, input_dir: Path, tokenizer: Path) -> dict:
    common = ["--workers", str(args.workers), "--num-shards", str(args.shards)]
    variants = {"rows (--max-length L)": ["--max-length", str(args.pack_length)],
                f"packed (--pack-length L, {args.strategy})": ["--pack-length", str(args.pack_length),
                                                               "--pack-strategy", args.strategy]}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, flags in variants.items():
            walls[name].append(run_job(input_dir, work / name.split()[0], tokenizer, [*common, *flags]))
    medians = {name: statistics.median(values) for name, values in walls.items()}
    rows_name, packed_name = list(variants)
    packed = json.loads((work / "packed" / "manifest.json").read_text())
    rows = json.loads((work / "rows" / "manifest.json").read_text())
    pairs = [p / r for p, r in zip(walls[packed_name], walls[rows_name])]  # runs alternate: pairs share the load
    return {"walls": walls, "medians": medians, "ratio": medians[packed_name] / medians[rows_name],
            "pair_ratio_median": statistics.median(pairs), "pair_ratios": pairs,
            "packing": packed["packing"], "counts": {"rows": rows["counts"], "packed": packed["counts"]},
            "pack_step": pack_step_seconds(work / "rows", args)}


def pack_step_seconds(folder: Path, args) -> dict:
    """The packing step alone over the unpacked job's shards (what write_shard adds per shard)."""
    import pyarrow as pa

    from transforms import shard_format as sf
    from transforms.packing.options import PackingOptions
    from transforms.packing.rows import pack_table

    manifest = sf.load_manifest(str(folder))
    tables = [pa.ipc.open_stream(p.read_bytes()).read_all() for p in (folder / e["path"] for e in manifest["shards"])]
    options = PackingOptions(length=args.pack_length, strategy=args.strategy)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for table in tables:
            pack_table(table, options)
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "rows": sum(t.num_rows for t in tables), "shards": len(tables)}


# ---------------------------------------------------------------- training throughput

def tiny_llama(vocab: int, hidden: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8192,
                         tie_word_embeddings=True, attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(config)


def throughput(args, work: Path, input_dir: Path, tokenizer: Path) -> dict:
    import numpy as np
    import torch

    from transforms.runtime import Collator, LengthGroupedBatchSampler, ShardDataset

    length = args.train_pack_length
    rows_dir, packed_dir = work / "train-rows", work / "train-packed"
    run_job(input_dir, rows_dir, tokenizer, ["--workers", str(args.workers), "--max-length", str(length)])
    run_job(input_dir, packed_dir, tokenizer, ["--workers", str(args.workers), "--pack-length", str(length)])
    rows, packed = ShardDataset(str(rows_dir)), ShardDataset(str(packed_dir))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mean_row = float(rows.lengths.mean())
    pack_batch = args.pack_batch
    row_batch = max(1, round(pack_batch * float(packed.lengths.mean()) / mean_row))  # same real tokens per batch
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    grouped = LengthGroupedBatchSampler(rows.lengths, batch_size=row_batch, seed=0)
    random_batches = [order[i:i + row_batch] for i in range(0, len(order), row_batch)]
    plans = {
        f"padded rows, random batches of {row_batch}": (rows, Collator.from_manifest(str(rows_dir)), random_batches),
        f"padded rows, length-grouped batches of {row_batch}": (rows, Collator.from_manifest(str(rows_dir)),
                                                                list(grouped)),
        f"packed [{pack_batch}, {length}], 4D additive mask": (
            packed, Collator.from_manifest(str(packed_dir)),
            [list(range(i, min(i + pack_batch, len(packed)))) for i in range(0, len(packed), pack_batch)]),
        f"packed, padding-free ({pack_batch} rows)": (
            packed, Collator.from_manifest(str(packed_dir), padding_free=True),
            [list(range(i, min(i + pack_batch, len(packed)))) for i in range(0, len(packed), pack_batch)]),
    }
    # the variants take turns step by step, so a change in the machine's load falls on all of them alike
    state = {}
    for name in plans:
        model = tiny_llama(args.vocab, args.hidden).to(device)
        model.train()
        state[name] = {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-3),
                       "real": 0, "positions": 0, "seconds": 0.0, "steps": 0}
    for step in range(args.steps + 2):
        for name, (dataset, collator, batches) in plans.items():
            if step >= len(batches):
                continue
            s = state[name]
            indices = batches[step]
            batch = collator([dataset[int(i)] for i in indices])
            batch["input_ids"] = batch["input_ids"] % args.vocab
            labels = batch["labels"]
            batch["labels"] = torch.where(labels >= 0, labels % args.vocab, labels)
            batch = batch.to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = s["model"](**batch).loss
            loss.backward()
            s["optimizer"].step()
            s["optimizer"].zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= 2:  # the first steps warm up
                s["seconds"] += time.perf_counter() - start
                s["real"] += sum(len(dataset[int(i)]["input_ids"]) for i in indices)
                s["positions"] += int(batch["input_ids"].numel())
                s["steps"] += 1
    results = {name: {"real_tokens_per_s": s["real"] / s["seconds"], "real_fraction": s["real"] / s["positions"],
                      "steps": s["steps"]} for name, s in state.items()}
    first = next(iter(results.values()))["real_tokens_per_s"]
    for figure in results.values():
        figure["vs_first"] = figure["real_tokens_per_s"] / first
    return {"device": device.type, "threads": torch.get_num_threads(), "results": results,
            "row_batch": row_batch, "pack_batch": pack_batch, "length": length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--pack-length", type=int, default=2048)
    parser.add_argument("--strategy", default="bfd", choices=("bfd", "ffd", "sequential"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generated", action="store_true", help="generated records instead of ../shared/data")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--train-records", type=int, default=3000)
    parser.add_argument("--train-pack-length", type=int, default=1024)
    parser.add_argument("--pack-batch", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_packing_"))
    try:
        from bench_job import save_bundled_tokenizer

        tokenizer = save_bundled_tokenizer(work / "tokenizer")
        if args.generated:
            inputs = generated_input(work / "input", args.records)
            train_inputs = generated_input(work / "train-input", args.train_records)
        else:
            from bench_job import build_input

            inputs = build_input(work / "input", args.records)[0]
            train_inputs = build_input(work / "train-input", args.train_records)[0]
        report: dict = {"records": args.records, "pack_length": args.pack_length, "workers": args.workers,
                        "cpus": os.cpu_count(), "input": "generated" if args.generated else "bench_job real records"}
        if not args.skip_job:
            cost = job_cost(args, work, inputs, tokenizer)
            report["job"] = cost
            print(f"job, {args.records} records, {args.workers} workers, {args.shards} shards, medians of "
                  f"{args.repeats}:")
            for name, wall in cost["medians"].items():
                print(f"  {name:40s} {wall:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in cost['walls'][name])})")
            print(f"  packed / rows: {cost['ratio']:.3f} (medians); per alternating pair: median "
                  f"{cost['pair_ratio_median']:.3f} ({', '.join(f'{r:.2f}' for r in cost['pair_ratios'])})   "
                  "(target <= 1.10)")
            step = cost["pack_step"]
            print(f"  packing step alone: {step['seconds']:.3f} s for {step['rows']} rows in {step['shards']} shards")
            pack = cost["packing"]
            padding = pack["runtime_padding"]
            print(f"  efficiency {pack['efficiency']} ({pack['sequences']} rows -> {pack['packs']} packed rows, "
                  f"{pack['sequences_per_pack']['mean']} per pack); unpacked: pad to L "
                  f"{padding['pad_each_row_to_pack_length']['efficiency']}, batches of 8 padded to longest "
                  f"{padding['batches_of_8_padded_to_longest']['efficiency']}")
        if not args.skip_train:
            train = throughput(args, work, train_inputs, tokenizer)
            report["train"] = train
            print(f"training a tiny Llama (hidden {args.hidden}, 2 layers, SDPA) on {train['device']} "
                  f"({train['threads']} threads), {args.steps} steps after 2 warm-up, L={train['length']}:")
            for name, figure in train["results"].items():
                print(f"  {name:48s} {figure['real_tokens_per_s']:9.0f} real tokens/s  x{figure['vs_first']:.2f}  "
                      f"(real fraction of positions {figure['real_fraction']:.3f})")
        print(json.dumps(report, default=str)[:200] + " ...")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
