"""The Beam job with ``--processor`` end to end: JSON + Parquet + Arrow inputs, rejections, shard
image columns, manifest processor config/hash, then ShardDataset + VisionCollator in DataLoader
workers (text-only and image rows mixed)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_vision_fixtures import LLAMAFACTORY, llava_dir, loaded, qwen_dir, write_image

from chatshards_testing import run_job, sample
from transforms.reading import iter_raw_records_from_path
from transforms.runtime import ShardDataset
from transforms.runtime.vision import VisionCollator, vision_columns


def hf_image_dataset(folder: Path):
    """A ``datasets`` dataset with an Image feature (bytes embedded) plus a text-only row."""
    from datasets import Dataset, Features, Image, Sequence, Value

    photos = sample(LLAMAFACTORY) / "mllm_demo_data"
    features = Features({"messages": [{"role": Value("string"), "content": Value("string")}],
                         "images": Sequence(Image())})
    rows = {"messages": [], "images": []}
    for name, question, answer in (("1.jpg", "<image>Who?", "Two players."),
                                   ("3.jpg", "Describe <image>", "A speech.")):
        rows["messages"].append([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
        rows["images"].append([{"bytes": (photos / name).read_bytes(), "path": name}])
    rows["messages"].append([{"role": "user", "content": "Text only?"}, {"role": "assistant", "content": "Yes."}])
    rows["images"].append([])
    return Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vision_inputs")
    dataset = hf_image_dataset(folder)
    dataset.to_parquet(str(folder / "hf.parquet"))
    dataset.save_to_disk(str(folder / "hf_disk"))
    write_image(folder / "ok.png", (50, 40), (10, 200, 10))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    problems = [
        {"messages": [{"role": "user", "content": "<image>Green?"}, {"role": "assistant", "content": "Yes."}],
         "images": ["ok.png"]},
        {"messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "x"}],
         "images": ["../etc.png"]},
        {"messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "x"}],
         "images": ["broken.png"]},
        {"messages": [{"role": "user", "content": "<image><image>?"}, {"role": "assistant", "content": "x"}],
         "images": ["ok.png"]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Plain text, parts."}]},
                      {"role": "assistant", "content": "Fine."}]},
    ]
    (folder / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in problems))
    text_table = pa.table({"instruction": ["Say hi", "Count to 3"], "output": ["Hi!", "1, 2, 3"]})
    import pyarrow.parquet as pq

    pq.write_table(text_table, str(folder / "text.parquet"))
    return folder


def test_parquet_and_arrow_inputs_are_read_like_json(inputs):
    parquet = list(iter_raw_records_from_path(str(inputs / "hf.parquet")))
    arrow = list(iter_raw_records_from_path(str(next((inputs / "hf_disk").glob("*.arrow")))))
    assert [r.value for r in parquet] == [r.value for r in arrow] and len(parquet) == 3
    first = parquet[0].value["images"][0]
    assert first["path"] == "1.jpg" and first["bytes"].startswith("data:application/octet-stream;base64,")
    assert [r.value for r in iter_raw_records_from_path(str(inputs / "text.parquet"))][1] == {
        "instruction": "Count to 3", "output": "1, 2, 3"}
    (inputs / "bad.parquet").write_bytes(b"PAR1 truncated")
    bad = list(iter_raw_records_from_path(str(inputs / "bad.parquet")))
    assert len(bad) == 1 and bad[0].value is None and "parquet" in bad[0].error


@pytest.fixture(scope="module")
def llava_job(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("vision_job") / "out"
    args = ["--processor", llava_dir(), "--output", str(out), "--num-shards", "2"]
    for path in (sample(LLAMAFACTORY) / "mllm_demo.json",
                 sample("edge_cases/qwen3vl_single_images_trailing_comma.json"),
                 inputs / "hf.parquet", inputs / "problems.jsonl", inputs / "text.parquet"):
        args += ["--input", str(path)]
    assert run_job(args) == 0
    return out


def test_job_counts_rejections_columns_and_manifest(llava_job):
    manifest = json.loads((llava_job / "manifest.json").read_text())
    assert manifest["counts"] == {"read": 6 + 3 + 3 + 5 + 2, "written": 6 + 3 + 2 + 2, "rejected": 6,
                                  "rows": 6 + 3 + 2 + 2}
    assert manifest["rejected_by_reason"] == {"bad_image": 1, "image_count_mismatch": 1, "image_path_escape": 1,
                                              "missing_image": 3}
    vision = manifest["vision"]
    assert vision["processor_hash"] == loaded("llava")[1].hash() and vision["family"] == "fixed"
    assert vision["config"]["image_processor"]["crop_size"] == {"height": 224, "width": 224}
    assert manifest["config"]["extra"]["vision"]["images"]["encoding"] == "webp"
    for column in ("image_bytes", "image_sha256", "image_index", "image_hw", "image_token_counts", "num_images"):
        assert column in manifest["columns"]
    rejected = [json.loads(line) for f in (llava_job / "rejected").glob("*.jsonl")
                for line in f.read_text().splitlines()]
    assert Counter(r["reason"] for r in rejected) == Counter(manifest["rejected_by_reason"])


def test_collator_in_dataloader_workers_mixes_text_and_image_rows(llava_job):
    tokenizer, vision = loaded("llava")
    dataset = ShardDataset(str(llava_job), columns=vision_columns(str(llava_job)))
    collator = VisionCollator.from_manifest(str(llava_job))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collator, num_workers=2)
    images = mixed = 0
    for batch in loader:
        tokens = int((batch["input_ids"] == vision.image_token_id).sum())
        n = 0 if "pixel_values" not in batch else batch["pixel_values"].shape[0]
        assert tokens == 256 * n
        assert (batch["labels"][batch["input_ids"] == vision.image_token_id] == -100).all()
        if n:
            assert batch["pixel_values"].shape[1:] == (3, 224, 224) and batch["pixel_values"].dtype == torch.float32
        rows_with_images = (batch["input_ids"] == vision.image_token_id).any(dim=1)
        mixed += bool(rows_with_images.any() and not rows_with_images.all())
        images += n
    assert images == 8 + 2 + 1 and mixed >= 1
    # a row whose image columns are missing is refused, never silently collated
    row = dict(dataset[0])
    if (np.asarray(row["input_ids"]) == vision.image_token_id).any():
        del row["image_index"], row["image_token_counts"]
        with pytest.raises(ValueError, match="image tokens"):
            collator([row])


def test_qwen_job_store_pixels_image_root_and_pixel_limits(tmp_path):
    from transformers import AutoImageProcessor
    from transformers.image_utils import load_image

    folder = sample(LLAMAFACTORY)
    out = tmp_path / "out"
    args = ["--processor", qwen_dir(), "--input", str(folder / "v1_multimodal_demo.jsonl"), "--output", str(out),
            "--image-root", str(folder.parent), "--store-pixels", "--max-pixels", str(28 * 28 * 64), "--dedup"]
    assert run_job(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # each demo record is repeated 4x
    assert manifest["counts"] == {"read": 24, "written": 6, "rejected": 18, "rows": 6}
    assert manifest["vision"]["config"]["max_pixels"] == 28 * 28 * 64 and manifest["vision"]["images"]["store_pixels"]
    assert "image_pixels" in manifest["columns"] and "image_grid_thw" in manifest["columns"]
    reference = AutoImageProcessor.from_pretrained(qwen_dir(), max_pixels=28 * 28 * 64)
    dataset = ShardDataset(str(out), columns=vision_columns(str(out)) + ("image_sources",))
    collator = VisionCollator.from_manifest(str(out))
    for i in range(len(dataset)):
        row = dataset[i]
        expected = reference(images=[load_image(str(folder.parent / p)) for p in row["image_sources"]],
                             return_tensors="np")
        batch = collator([row])
        assert np.array_equal(batch["pixel_values"].numpy(), expected["pixel_values"])
        assert np.array_equal(batch["image_grid_thw"].numpy(), expected["image_grid_thw"])


@pytest.mark.parametrize("args", [
    ["--store-pixels"],
    ["--format", "vqa"],
    ["--processor", "/nonexistent/processor"],
    ["--processor", "QWEN", "--tokenizer", "bundled", "--min-pixels", "0"],
])
def test_vision_config_errors_exit_2(args, tmp_path, capsys):
    args = [qwen_dir() if a == "QWEN" else a for a in args]
    path = sample(LLAMAFACTORY) / "mllm_demo.json"
    assert run_job(["--input", str(path), "--output", str(tmp_path / "o"), *args]) == 2
    assert "chatshards: error:" in capsys.readouterr().err


def test_the_local_engine_writes_the_beam_jobs_vision_bytes(llava_job, inputs, tmp_path):
    """The default command (local engine, 2 forked workers) on the same vision job: every file equal."""
    import hashlib

    from pipeline.launch.main import main

    def digest(out: Path) -> dict:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    out = tmp_path / "local"
    args = ["--processor", llava_dir(), "--output", str(out), "--num-shards", "2", "--workers", "2"]
    for path in (sample(LLAMAFACTORY) / "mllm_demo.json",
                 sample("edge_cases/qwen3vl_single_images_trailing_comma.json"),
                 inputs / "hf.parquet", inputs / "problems.jsonl", inputs / "text.parquet"):
        args += ["--input", str(path)]
    assert main(args) == 0
    assert digest(out) == digest(llava_job)
