"""The training examples in examples/ run on a synthetic dataset folder (the code blocks of docs/training.md run in
tests/test_doc_examples.py)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from transforms.runtime.synthetic import write_synthetic_dataset

pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_synthetic_dataset(root, num_rows=64, num_shards=2, vocab_size=128)
    return str(root)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_loop_script_runs_two_steps(dataset_dir):
    out = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "train_torch_loop.py"), dataset_dir, "--steps", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "step 2 " in out.stdout and "done: 2 steps" in out.stdout


def test_torch_loop_padding_free_gives_the_same_losses(dataset_dir):
    loop = _load("train_torch_loop")
    padded = loop.main([dataset_dir, "--steps", "2", "--num-workers", "0"])
    flat = loop.main([dataset_dir, "--steps", "2", "--num-workers", "0", "--padding-free"])
    assert len(padded) == len(flat) == 2
    assert padded == pytest.approx(flat, rel=1e-4)


def test_hf_trainer_example_runs(dataset_dir):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    trainer = _load("train_hf_trainer")
    result = trainer.main([dataset_dir, "--steps", "2"])
    assert result["global_step"] == 2
