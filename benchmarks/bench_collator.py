"""Throughput and memory figures of the trainer-side runtime (prints figures; not a test).

    python benchmarks/bench_collator.py [DATASET_DIR] [--rows N] [--big-gb 1.2] [--skip-big]

Without DATASET_DIR a synthetic dataset with lognormal lengths (50..2000 tokens) is written to a
temporary folder. Sections:

1. collator rows/s and batches/s (batch 32) for ours (padded, padding-free) versus transformers'
   ``DataCollatorForSeq2Seq`` / ``DataCollatorWithFlattening`` on the same rows, and the memcpy rate
   of the same bytes as the ceiling;
2. DataLoader throughput (map-style + length-grouped sampler, iterable mode) with 0 and 2 workers;
3. padding fraction of random, length-grouped and token-budget batching;
4. RSS while iterating a shard set larger than 1 GB (written to a temporary folder, then deleted);
5. GPU only (``torch.cuda.is_available()``): host-to-device transfer, pageable vs pinned.

``--validation-cost [REV ...]``: only the cost of the collator's feature checks. CPU time per batch
(median of interleaved repeats, one process) of this checkout's collator with and without
``check_values`` and of ``transforms/runtime/collate.py`` at each git revision ``REV`` (e.g. the
commit before the checks existed), on the same rows, padded and padding-free.
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transforms.runtime import (  # noqa: E402
    Collator,
    LengthGroupedBatchSampler,
    ResumableDataLoader,
    ShardDataset,
    TokenBudgetBatchSampler,
    padding_fraction,
)
from transforms.runtime.synthetic import lognormal_lengths, write_synthetic_dataset  # noqa: E402

BATCH = 32


def timed(fn, *, min_seconds: float = 1.0, min_repeats: int = 1) -> float:
    """Seconds per call of ``fn`` (repeated until ``min_seconds`` elapsed)."""
    fn()  # warm-up
    repeats, start = 0, time.perf_counter()
    while True:
        fn()
        repeats += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and repeats >= min_repeats:
            return elapsed / repeats


def rss_parts() -> dict[str, float]:
    """Resident set (MiB): total from psutil, anonymous (heap) and file-backed (mapped shards)."""
    out = {"rss": psutil.Process().memory_info().rss / 2**20}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(("RssAnon:", "RssFile:")):
                    key, value = line.split(":")
                    out[key.strip().lower()] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def fmt_rss(parts: dict[str, float]) -> str:
    extra = "".join(f", {k[3:]} {v:7.1f}" for k, v in parts.items() if k != "rss")
    return f"RSS {parts['rss']:7.1f} MiB ({extra.lstrip(', ')})"


def hf_tokenizer(pad_token_id: int):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(max(pad_token_id + 1, 8))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=f"t{pad_token_id}")
    tok.padding_side = "right"
    return tok


def section_collator(ds: ShardDataset, num_rows: int) -> None:
    print(f"\n== 1. collator throughput (batch {BATCH}, {num_rows} rows) ==")
    rows = [ds[i] for i in range(num_rows)]
    batches = [rows[i:i + BATCH] for i in range(0, num_rows - BATCH + 1, BATCH)]
    n_rows = len(batches) * BATCH
    row_bytes = sum(r["input_ids"].nbytes + r["labels"].nbytes for b in batches for r in b)
    print(f"rows {n_rows}, mean length {np.mean([len(r['input_ids']) for b in batches for r in b]):.0f} tokens, "
          f"{row_bytes / 2**20:.1f} MiB of input_ids+labels")

    pad_id = ds.tokenizer_info.get("pad_token_id")
    pad_id = ds.tokenizer_info.get("eos_token_id") if pad_id is None else pad_id
    ours_padded = Collator(pad_token_id=pad_id)
    ours_flat = Collator(padding_free=True)
    results: dict[str, float] = {}

    def consume(collator, data):
        for b in data:  # each batch is dropped before the next one, as in a training loop
            collator(b)

    def run(name, collator, data, min_seconds=1.5):
        seconds = timed(lambda: consume(collator, data), min_seconds=min_seconds)
        results[name] = n_rows / seconds
        print(f"{name:44s} {n_rows / seconds:12,.0f} rows/s {len(data) / seconds:10,.1f} batches/s")

    run("ours padded (numpy views)", ours_padded, batches)
    run("ours padding-free (numpy views)", ours_flat, batches)
    try:
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening
    except ImportError:
        print("transformers not installed: no comparison")
        return
    list_batches = [[{k: v.tolist() for k, v in r.items()} for r in b] for b in batches]
    run("ours padded (lists of ints)", ours_padded, list_batches)
    hf_seq2seq = DataCollatorForSeq2Seq(hf_tokenizer(pad_id))
    hf_flat = DataCollatorWithFlattening(return_flash_attn_kwargs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run("transformers DataCollatorForSeq2Seq (numpy)", hf_seq2seq, batches)
        run("transformers DataCollatorForSeq2Seq (lists)", hf_seq2seq, list_batches)
        run("transformers DataCollatorWithFlattening", hf_flat, batches)

    src = np.concatenate([np.concatenate([r["input_ids"], r["labels"]]) for b in batches for r in b])
    dst = np.empty_like(src)
    seconds = timed(lambda: np.copyto(dst, src), min_seconds=0.5)
    results["memcpy"] = n_rows / seconds
    print(f"{'memcpy of the same bytes (ceiling)':44s} {n_rows / seconds:12,.0f} rows/s "
          f"({src.nbytes / seconds / 1e9:.1f} GB/s)")
    best_hf = max(results["transformers DataCollatorForSeq2Seq (numpy)"],
                  results["transformers DataCollatorForSeq2Seq (lists)"])
    print(f"ratio ours padded / DataCollatorForSeq2Seq: {results['ours padded (numpy views)'] / best_hf:.0f}x "
          f"(vs its numpy input: "
          f"{results['ours padded (numpy views)'] / results['transformers DataCollatorForSeq2Seq (numpy)']:.0f}x; "
          "target >= 50x)")
    print(f"ratio ours padding-free / DataCollatorWithFlattening: "
          f"{results['ours padding-free (numpy views)'] / results['transformers DataCollatorWithFlattening']:.0f}x")
    print(f"ours padded reaches {results['ours padded (numpy views)'] / results['memcpy']:.1%} of the memcpy rate "
          "(it writes int64 padded tensors: 4 outputs of batch*width*8 bytes)")


def section_dataloader(ds: ShardDataset, n_batches: int = 600) -> None:
    print(f"\n== 2. DataLoader throughput (batch {BATCH}, steady state: timed from the first batch on) ==")
    collator = Collator.from_manifest(ds.root)

    def measure(make_iter) -> tuple[float, float, float]:
        count, tokens, epoch, start, first = 0, 0, 0, time.perf_counter(), None
        while count < n_batches:
            for batch in make_iter(epoch):
                if first is None:
                    first = time.perf_counter()
                    continue
                tokens += int(batch["input_ids"].numel())
                count += 1
                if count == n_batches:
                    break
            epoch += 1
        seconds = time.perf_counter() - first
        return count / seconds, tokens / seconds, first - start

    for workers in (0, 2):
        sampler = LengthGroupedBatchSampler(ds.lengths, batch_size=BATCH, seed=0)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collator, num_workers=workers,
                            persistent_workers=workers > 0)

        def epoch_iter(epoch, sampler=sampler, loader=loader):
            sampler.set_epoch(epoch)
            return loader

        bps, tps, startup = measure(epoch_iter)
        print(f"map-style + length-grouped, num_workers={workers}: {bps:8.1f} batches/s {bps * BATCH:10,.0f} rows/s "
              f"{tps / 1e6:6.2f} M padded tokens/s (first batch after {startup:.2f}s)")
    for workers in (0, 2):
        it = ds.iterable(batch_size=BATCH, seed=0, rank=0, world_size=1)
        loader = ResumableDataLoader(it, collate_fn=collator, num_workers=workers)

        def epoch_iter(epoch, it=it, loader=loader):
            it.set_epoch(epoch)
            return loader

        bps, tps, startup = measure(epoch_iter)
        print(f"iterable (resumable),       num_workers={workers}: {bps:8.1f} batches/s {bps * BATCH:10,.0f} rows/s "
              f"{tps / 1e6:6.2f} M padded tokens/s (workers restart every epoch)")


def section_padding(lengths: np.ndarray) -> None:
    print(f"\n== 3. padding fraction ({len(lengths)} rows, batch {BATCH}) ==")
    perm = np.random.default_rng(0).permutation(len(lengths))
    rand = [perm[i:i + BATCH] for i in range(0, len(perm), BATCH)]
    print(f"random batches                         : {padding_fraction(rand, lengths):.3f}")
    for window in (8, 64):
        grouped = LengthGroupedBatchSampler(lengths, batch_size=BATCH, window_batches=window, seed=0)
        print(f"length-grouped (window {window:3d} batches)    : {grouped.padding_fraction():.3f}")
    budget = int(BATCH * np.mean(lengths))
    tb = TokenBudgetBatchSampler(lengths, max_tokens=budget, seed=0)
    print(f"token budget (max_tokens={budget:6d}, padded) : {tb.padding_fraction():.3f} "
          f"({len(tb)} batches, budget use {tb.budget_utilisation():.2f})")
    tbf = TokenBudgetBatchSampler(lengths, max_tokens=budget, padding_free=True, seed=0)
    print(f"token budget (padding-free)            : 0.000 by construction "
          f"({len(tbf)} batches, budget use {tbf.budget_utilisation():.2f})")


def section_rss(gigabytes: float) -> None:
    print(f"\n== 4. RSS while iterating a {gigabytes:.1f} GB shard set ==")
    tmp = tempfile.mkdtemp(prefix="chatshards-bench-big-")
    try:
        mean_len = float(np.mean(lognormal_lengths(100_000, seed=9)))
        num_rows = int(gigabytes * 1e9 / (8 * mean_len))  # input_ids + labels: 8 bytes per token
        start = time.perf_counter()
        write_synthetic_dataset(tmp, lengths=lognormal_lengths(num_rows, seed=9), num_shards=12, vocab_size=32000)
        size = sum(e.stat().st_size for e in os.scandir(os.path.join(tmp, "data")))
        print(f"wrote {num_rows} rows, {size / 1e9:.2f} GB in 12 shards ({time.perf_counter() - start:.1f}s)")
        gc.collect()
        for max_open in (None, 2):
            ds = ShardDataset(tmp, max_open_shards=max_open)
            collator = Collator.from_manifest(tmp)
            n = len(ds)
            label = f"  max_open_shards={max_open!s:4s}"
            print(f"{label} start  row {0:7d}: {fmt_rss(rss_parts())}")
            checksum, middle_done = 0, False
            start = time.perf_counter()
            for lo in range(0, n, BATCH):
                if not middle_done and lo >= n // 2:
                    print(f"{label} middle row {lo:7d}: {fmt_rss(rss_parts())}")
                    middle_done = True
                batch = collator([ds[i] for i in range(lo, min(n, lo + BATCH))])
                checksum += int(batch["input_ids"][:, 0].sum())
            seconds = time.perf_counter() - start
            print(f"{label} end    row {n:7d}: {fmt_rss(rss_parts())}  "
                  f"[{size / seconds / 1e9:.2f} GB/s of shard data collated]")
            ds.close()
            del ds
            gc.collect()
            print(f"  after close():                     {fmt_rss(rss_parts())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"deleted {tmp}")


def section_gpu(ds: ShardDataset) -> None:
    print("\n== 5. GPU: host-to-device batch transfer ==")
    if not torch.cuda.is_available():
        print("skipped: torch.cuda.is_available() is False")
        return
    device = torch.device("cuda")
    collator = Collator.from_manifest(ds.root)
    n = min(len(ds) // BATCH, 64)
    pageable = [collator([ds[i] for i in range(b * BATCH, (b + 1) * BATCH)]) for b in range(n)]
    pinned = [b.pin_memory() for b in pageable]
    nbytes = sum(t.nbytes for b in pageable for t in b.values() if isinstance(t, torch.Tensor))
    torch.cuda.synchronize()
    for name, batches in (("pageable", pageable), ("pinned", pinned)):
        for b in batches[:4]:
            b.to(device)
        torch.cuda.synchronize()
        start = time.perf_counter()
        reps = 0
        while time.perf_counter() - start < 1.0:
            moved = [b.to(device, non_blocking=True) for b in batches]
            torch.cuda.synchronize()
            reps += 1
        seconds = (time.perf_counter() - start) / reps
        print(f"{name:9s}: {nbytes / seconds / 1e9:6.2f} GB/s, {len(batches) / seconds:9.1f} batches/s")
        del moved
    loader = DataLoader(ds, batch_sampler=LengthGroupedBatchSampler(ds.lengths, batch_size=BATCH, seed=0),
                        collate_fn=collator, num_workers=2, pin_memory=True)
    start, count = time.perf_counter(), 0
    for batch in loader:
        batch.to(device, non_blocking=True)
        count += 1
        if count == 200:
            break
    torch.cuda.synchronize()
    print(f"DataLoader(pin_memory=True, 2 workers) -> device: {count / (time.perf_counter() - start):.1f} batches/s")


def collator_at_revision(rev: str):
    """The ``Collator`` class of ``transforms/runtime/collate.py`` at git revision ``rev`` (imported
    as a sibling module of the runtime package, so its relative imports resolve)."""
    import importlib.util
    import subprocess

    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    source = subprocess.run(["git", "show", f"{rev}:transforms/runtime/collate.py"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout
    name = "transforms.runtime._collate_at_" + re.sub(r"\W", "_", rev)
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "transforms.runtime"
    sys.modules[name] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:transforms/runtime/collate.py", "exec"), module.__dict__)
    return module.Collator


def section_validation_cost(ds: ShardDataset, num_rows: int, revisions: list[str], repeats: int = 15) -> None:
    print(f"\n== collator validation cost (batch {BATCH}, CPU time per batch, "
          f"median of {repeats} interleaved repeats) ==")
    rows = [ds[i] for i in range(num_rows)]
    batches = [rows[i:i + BATCH] for i in range(0, num_rows - BATCH + 1, BATCH)]
    mean = np.mean([len(r["input_ids"]) for b in batches for r in b])
    print(f"{len(batches)} batches, mean length {mean:.0f} tokens")
    pad_id = ds.tokenizer_info.get("pad_token_id")
    pad_id = ds.tokenizer_info.get("eos_token_id") if pad_id is None else pad_id
    classes = {"this checkout": Collator, **{f"rev {rev}": collator_at_revision(rev) for rev in revisions}}
    variants = {}
    for label, cls in classes.items():
        variants[f"padded, {label}"] = cls(pad_token_id=pad_id)
        variants[f"padding-free, {label}"] = cls(padding_free=True)
    variants["padded, this checkout, check_values=False"] = Collator(pad_token_id=pad_id, check_values=False)
    variants["padding-free, this checkout, check_values=False"] = Collator(padding_free=True, check_values=False)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for collator in variants.values():  # warm-up
        for b in batches[:8]:
            collator(b)
    for _ in range(repeats):
        for name, collator in variants.items():
            start = time.process_time()
            for b in batches:
                collator(b)
            samples[name].append((time.process_time() - start) / len(batches))
    for mode in ("padded", "padding-free"):
        for name in (n for n in variants if n.startswith(mode + ",")):
            print(f"{name:52s} {np.median(samples[name]) * 1e6:8.1f} us/batch")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", help="dataset folder (default: a synthetic one)")
    parser.add_argument("--rows", type=int, default=4096, help="rows of the synthetic dataset / rows collated")
    parser.add_argument("--big-gb", type=float, default=1.2, help="size of the RSS test shard set")
    parser.add_argument("--skip-big", action="store_true", help="skip the RSS section")
    parser.add_argument("--validation-cost", nargs="*", metavar="REV", default=None,
                        help="only the collator validation cost, versus collate.py at these git revisions")
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"cuda={'yes' if torch.cuda.is_available() else 'no'}")
    tmp = None
    root = args.dataset
    if root is None:
        tmp = tempfile.mkdtemp(prefix="chatshards-bench-")
        root = tmp
        write_synthetic_dataset(root, lengths=lognormal_lengths(args.rows, seed=0), num_shards=4, vocab_size=32000)
        print(f"synthetic dataset: {args.rows} rows, lognormal lengths 50..2000 tokens, in {root}")
    try:
        ds = ShardDataset(root)
        print(f"dataset: {ds!r}, mean length {ds.lengths.mean():.0f}, median {np.median(ds.lengths):.0f}")
        if args.validation_cost is not None:
            section_validation_cost(ds, min(args.rows, len(ds)), args.validation_cost)
            return
        section_collator(ds, min(args.rows, len(ds)))
        section_dataloader(ds)
        section_padding(ds.lengths)
        if not args.skip_big:
            section_rss(args.big_gb)
        section_gpu(ds)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
