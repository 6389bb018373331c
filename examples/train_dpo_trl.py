"""Train a tiny randomly initialised Llama with TRL's ``DPOTrainer`` (or ``KTOTrainer``) on a chatshards folder of
``--task preference`` (``--task kto``) rows, without TRL tokenizing again.

    python -m pipeline --task preference --input pairs.jsonl --output out/
    python examples/train_dpo_trl.py out/ [--steps 2] [--tokenizer DIR]

TRL 1.16's trainers always run their own dataset preparation (``_prepare_dataset``: prompt extraction, chat
template, tokenization with ``datasets.map``); it cannot be switched off, and on rows that are already
tokenized it would fail (it looks for a ``prompt`` column). :class:`ShardsDPOTrainer` / :class:`ShardsKTOTrainer`
return the dataset as it is instead. TRL takes only a ``datasets.Dataset``: :func:`shards_dataset` opens the
shards as one, memory-mapped (``Dataset.from_file`` reads the Arrow stream files in place, no copy), and the
trainer reads our rows (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) through our collator
(``Collator.from_manifest``: the batches TRL's ``DataCollatorForPreference`` would build from them; TRL's own
collator gives the same). Everything else (reference model, losses, logging, ``precompute_ref_log_probs``) is
TRL's. ``tests/test_preference_trl.py`` checks that the loss TRL computes from these rows equals the loss it
computes from its own preparation of the same pairs.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer  # noqa: E402

from transforms.runtime import Collator, ShardDataset  # noqa: E402


class ShardsDPOTrainer(DPOTrainer):
    """``DPOTrainer`` on rows that are already ``prompt_ids``/``chosen_ids``/``rejected_ids``."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class ShardsKTOTrainer(KTOTrainer):
    """``KTOTrainer`` on rows that are already ``prompt_ids``/``completion_ids``/``label`` (the KL sequences come
    from the collator, ``Collator.from_manifest(out, kl=True)``, rotating the completions within each batch)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def shards_dataset(folder: str):
    """The dataset's shards as one ``datasets.Dataset`` (memory-mapped; the manifest checked by ``ShardDataset``)."""
    from datasets import Dataset, concatenate_datasets

    checked = ShardDataset(folder)  # refuses an unfinished or corrupted folder
    parts = [Dataset.from_file(path) for path in checked.paths]
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_tokenizer(dataset: ShardDataset, path: str | None):
    """The dataset's tokenizer: ``path``, else the bundled one when the dataset was made with it."""
    if path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    from transforms.tokenizer_loading import bundled_tokenizer

    if dataset.manifest["tokenizer"]["name"] != "chatshards/qwen2-bpe-chatml":
        raise SystemExit("pass --tokenizer: the dataset was not made with the bundled tokenizer")
    return bundled_tokenizer()


def tiny_llama(vocab_size: int, pad_token_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                        max_position_embeddings=4096, pad_token_id=pad_token_id, use_cache=False))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset folder (--task preference or --task kto)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--tokenizer", default=None, help="the dataset's tokenizer folder (default: the bundled one)")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)

    dataset = ShardDataset(args.dataset)
    task = (dataset.manifest.get("task") or {}).get("name")
    if task not in ("preference", "kto"):
        raise SystemExit(f"{args.dataset} holds --task {task or 'chat'} rows, not preference or kto rows")
    tokenizer = load_tokenizer(dataset, args.tokenizer)
    collator = Collator.from_manifest(args.dataset, kl=True) if task == "kto" else Collator.from_manifest(args.dataset)
    model = tiny_llama(len(tokenizer), collator.pad_token_id)
    trainer_class, config_class = (ShardsKTOTrainer, KTOConfig) if task == "kto" else (ShardsDPOTrainer, DPOConfig)
    with tempfile.TemporaryDirectory() as tmp:
        config = config_class(output_dir=args.output_dir or tmp, max_steps=args.steps,
                              per_device_train_batch_size=args.batch_size, learning_rate=1e-3, logging_steps=1,
                              save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
                              max_length=None, disable_tqdm=True)
        # the reference model: a frozen copy (TRL would otherwise load one from the model's hub id)
        trainer = trainer_class(model=model, ref_model=copy.deepcopy(model), args=config,
                                train_dataset=shards_dataset(args.dataset),
                                processing_class=tokenizer, data_collator=collator)
        result = trainer.train()
    print(f"done: {result.global_step} steps, final loss {result.training_loss:.4f}")
    return {"global_step": result.global_step, "training_loss": result.training_loss}


if __name__ == "__main__":
    main()
