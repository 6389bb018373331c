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
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transforms.runtime import Collator, LengthGroupedBatchSampler, ShardDataset  # noqa: E402


def tiny_llama(ds: ShardDataset) -> LlamaForCausalLM:
    """A 2-layer, 64-wide Llama whose vocabulary covers every id in the dataset."""
    tok = ds.tokenizer_info
    special = [t for t in (tok.get("pad_token_id"), tok.get("eos_token_id"), tok.get("bos_token_id")) if t is not None]
    largest_id = max([int(v.max()) for v in ds.flat_values() if len(v)] + special)
    vocab_size = max(tok.get("vocab_size") or 0, largest_id + 1)  # the job's manifest records vocab_size
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=int(ds.lengths.max()),
        pad_token_id=tok.get("pad_token_id"), eos_token_id=tok.get("eos_token_id"), bos_token_id=tok.get("bos_token_id"),
        # training needs no KV cache; without one, transformers also finds the sequence boundaries of
        # padding-free batches from position_ids under sdpa/eager attention
        use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


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
    print(f"done: {step} steps in {time.perf_counter() - start:.1f}s, padding fraction "
          f"{sampler.padding_fraction():.3f} (padded mode)")
    return losses


if __name__ == "__main__":
    main()
