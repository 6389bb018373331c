"""Train a tiny randomly initialised Llama on a chatshards folder with TRL's ``SFTTrainer``.

    python examples/train_trl_sft.py out/ [--steps 10] [--tokenizer PATH_OR_HUB_ID]

The rows go in as they are: ``ShardDataset(out).to_hf_dataset()`` is the ``datasets.Dataset`` TRL asks for
(the memory-mapped shards, no copy); ``skip_prepare_dataset`` keeps TRL from tokenizing again, and
``Collator.from_manifest`` pads them with the manifest's pad id, the labels unchanged (-100 where not trained).
``processing_class`` is the job's tokenizer (TRL needs one; it only saves it with the model here).
Runs on CPU (or the first CUDA device); no download. See docs/huggingface.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
from trl import SFTConfig, SFTTrainer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_model import tiny_llama  # noqa: E402

from transforms.runtime import Collator, ShardDataset  # noqa: E402
from transforms.tokenizer_loading import load_tokenizer  # noqa: E402


def sft_config(output_dir: str, **options) -> SFTConfig:
    """The SFTConfig that trains on chatshards rows as they are."""
    return SFTConfig(
        output_dir=output_dir,
        dataset_kwargs={"skip_prepare_dataset": True},  # the rows are tokenized and labelled already
        remove_unused_columns=False,  # the collator picks its columns (attention_mask of padded shards too)
        **options,
    )


def build_trainer(dataset: str, output_dir: str, *, tokenizer: str | None = None, model=None, steps: int = 10,
                  batch_size: int = 8, **options) -> SFTTrainer:
    ds = ShardDataset(dataset)
    return SFTTrainer(
        model=model if model is not None else tiny_llama(ds),
        args=sft_config(output_dir, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=1e-3,
                        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                        use_cpu=not torch.cuda.is_available(), **options),
        train_dataset=ds.to_hf_dataset(),
        data_collator=Collator.from_manifest(dataset),
        # the job's tokenizer (None: chatshards' bundled one); TRL wants one, our rows need none of it
        processing_class=load_tokenizer(tokenizer),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset folder holding manifest.json")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokenizer", default=None, help="the job's --tokenizer (default: the bundled one)")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(args.dataset, args.output_dir or tmp, tokenizer=args.tokenizer, steps=args.steps,
                                batch_size=args.batch_size)
        result = trainer.train()
    print(f"done: {result.global_step} steps, final loss {result.training_loss:.4f}")
    return {"global_step": result.global_step, "training_loss": result.training_loss}


if __name__ == "__main__":
    main()
