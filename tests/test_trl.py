"""TRL's SFTTrainer trains on the job's rows as they are (docs/huggingface.md, examples/train_trl_sft.py).

The labels the model receives are the shard's labels, position for position (-100 on padding); TRL adds
no column and tokenizes nothing; the first step's loss is the model's own loss on that batch; training
writes nothing into the dataset folder. Padded shards (``--pad-to max_length``) keep their attention mask.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

import torch  # noqa: E402

from pipeline.launch.main import main as default_command  # noqa: E402
from transforms.runtime import ShardDataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from tiny_model import tiny_llama  # noqa: E402
from train_trl_sft import build_trainer  # noqa: E402
from train_trl_sft import main as example_main  # noqa: E402


def tree(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def demo_dataset(out: Path, *extra: str) -> Path:
    """The demo job's rows, cut to 64 tokens (the tiny model's logits over the 151,665-token vocabulary are what
    costs time)."""
    assert default_command(["--input", str(ROOT / "examples" / "data" / "*"), "--output", str(out), "--no-audit",
                            "--quiet", "--max-length", "64", *extra]) == 0
    return out


def train_and_watch(out: Path, tmp_path: Path, steps: int, batch_size: int = 4):
    """Train ``steps`` steps; returns (the batches the model's forward received, the trainer, the initial model)."""
    ds = ShardDataset(out)
    model = tiny_llama(ds)
    initial = copy.deepcopy(model)
    seen: list[dict] = []

    def record(_module, _args, kwargs):
        seen.append({k: kwargs[k].detach().clone() for k in ("input_ids", "labels", "attention_mask") if k in kwargs})

    model.register_forward_pre_hook(record, with_kwargs=True)
    trainer = build_trainer(str(out), str(tmp_path / "trainer"), model=model, steps=steps, batch_size=batch_size,
                            gradient_checkpointing=False)
    trainer.train()
    return seen, trainer, initial


def test_sft_trainer_trains_on_the_shards_labels_unchanged(tmp_path):
    out = demo_dataset(tmp_path / "out")
    ds = ShardDataset(out)
    rows = {tuple(ds[i]["input_ids"].tolist()): ds[i]["labels"].tolist() for i in range(len(ds))}
    before = tree(out)
    seen, trainer, initial = train_and_watch(out, tmp_path, steps=3)
    assert tree(out) == before  # training from the folder wrote nothing into it
    assert trainer.train_dataset.column_names == ["input_ids", "labels"]  # TRL added nothing, tokenized nothing
    assert len(seen) == 3
    trained = set()
    for batch in seen:
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            real = mask.bool()
            key = tuple(ids[real].tolist())
            assert key in rows, "the model received a row that is not in the shards"
            assert labels[real].tolist() == rows[key]  # the shard's labels, unshifted, -100 where not trained
            assert (labels[~real] == -100).all()
            trained.add(key)
    assert trained == set(rows)  # 12 rows drawn over fewer: every row in the first epoch
    # the loss TRL optimised on the first batch is the model's own loss on it
    first = seen[0]
    with torch.no_grad():
        expected = initial(**first).loss.item()
    logged = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert logged == pytest.approx(expected, rel=1e-3)


@pytest.mark.slow
def test_padded_shards_keep_their_attention_mask(tmp_path):
    out = demo_dataset(tmp_path / "padded", "--pad-to", "max_length")
    ds = ShardDataset(out)
    assert "attention_mask" in ds.columns
    seen, _, _ = train_and_watch(out, tmp_path, steps=1, batch_size=len(ds))  # every row in one batch
    batch = seen[0]
    assert batch["input_ids"].shape == (len(ds), 64)
    shard = sorted((ds[i]["input_ids"].tolist(), ds[i]["attention_mask"].tolist()) for i in range(len(ds)))
    assert sorted(zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())) == shard
    assert 0 < int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # some rows are padded


@pytest.mark.slow
def test_the_example_script_runs(tmp_path):
    out = demo_dataset(tmp_path / "out")
    result = example_main([str(out), "--steps", "1", "--batch-size", "2"])
    assert result["global_step"] == 1 and result["training_loss"] > 0
