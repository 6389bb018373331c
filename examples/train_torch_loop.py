"""Train a tiny randomly initialised Llama on a chatshards folder with a plain PyTorch loop.

    python examples/train_torch_loop.py out/ [--steps 20] [--padding-free] [--num-workers 2]

Length-grouped batches from ``LengthGroupedBatchSampler``, batches from ``Collator``; runs on CPU
(or the first CUDA device when there is one). No download: the model is built from a config.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_model import tiny_llama  # noqa: E402

from transforms.runtime import Collator, LengthGroupedBatchSampler, ShardDataset  # noqa: E402


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset folder holding manifest.json")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--padding-free", action="store_true", help="flatten batches (varlen attention)")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)

    ds = ShardDataset(args.dataset, verify=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = tiny_llama(ds).to(device)
    collator = Collator.from_manifest(args.dataset, padding_free=args.padding_free)
    sampler = LengthGroupedBatchSampler(ds.lengths, batch_size=args.batch_size, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collator, num_workers=args.num_workers,
                        pin_memory=device.type == "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    model.train()
    losses: list[float] = []
    step, epoch, start = 0, 0, time.perf_counter()
    while step < args.steps:
        sampler.set_epoch(epoch)  # a new length-grouped shuffle every epoch
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            loss = model(**batch).loss  # labels are unshifted; the model shifts, -100 is ignored
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            print(f"step {step} epoch {epoch} loss {losses[-1]:.4f} tokens {batch['input_ids'].numel()}", flush=True)
            if step >= args.steps:
                break
        epoch += 1
    batches = "padding-free" if args.padding_free else "padded"
    print(f"done: {step} steps in {time.perf_counter() - start:.1f}s on {device.type}, {batches} batches "
          f"(the sampler's padding fraction in padded mode: {sampler.padding_fraction():.3f})")
    return losses


if __name__ == "__main__":
    main()
