"""Train a tiny randomly initialised Llama on a chatshards folder with the Hugging Face Trainer.

    python examples/train_hf_trainer.py out/ [--steps 10] [--padding-free]

``ShardDataset`` is an ordinary map-style torch dataset, so the Trainer's own sampler, distributed
sharding and checkpoint resume apply unchanged; ``Collator`` pads with the manifest's pad id.
Runs on CPU (or the first CUDA device); no download.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
from transformers import Trainer, TrainingArguments

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_model import tiny_llama  # noqa: E402

from transforms.runtime import Collator, ShardDataset  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset folder holding manifest.json")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--padding-free", action="store_true", help="flatten batches (varlen attention)")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)

    ds = ShardDataset(args.dataset)                        # refuses a folder without a valid manifest
    model = tiny_llama(ds)
    collator = Collator.from_manifest(args.dataset, padding_free=args.padding_free)
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=args.output_dir or tmp,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=2,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=ds, data_collator=collator)
        result = trainer.train()
    print(f"done: {result.global_step} steps, final loss {result.training_loss:.4f}")
    return {"global_step": result.global_step, "training_loss": result.training_loss}


if __name__ == "__main__":
    main()
