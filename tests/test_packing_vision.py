"""Vision rows pack too: a packed LLaVA batch (pixel_values in row and token order) and a packed Qwen2-VL batch
(per-sequence 3-D M-RoPE positions, as the model's get_rope_index computes them for each sequence alone) give
every sequence the logits it gives alone, for tiny randomly initialised models (eager and SDPA); the naive
modes leak. The job runs on generated image records with processor folders on a small trained tokenizer
(tests/packing_fixtures.py): ids are used as they are.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from packing_fixtures import chat_records, run_job, small_llava_dir, small_qwen_dir, write_jsonl, write_png

from transforms.runtime import ShardDataset
from transforms.runtime.vision import VisionCollator, vision_columns

PACK = 192
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing_vision")
    write_png(root / "a.png", (60, 45), 1)
    write_png(root / "b.png", (90, 40), 2)
    records = chat_records(7, 30, words=15, image="a.png", every=2)
    for i, record in enumerate(records):
        if i % 4 == 0 and "images" in record:
            record["images"] = ["b.png"]
    data = write_jsonl(root / "images.jsonl", records)
    out = {}
    for family, processor in (("llava", small_llava_dir()), ("qwen", small_qwen_dir())):
        for name, flags in (("packed", ["--pack-length", str(PACK)]), ("rows", ["--max-length", str(PACK)])):
            folder = root / f"{family}-{name}"
            assert run_job(["--input", data, "--output", str(folder), "--processor", processor, "--num-shards", "1",
                            "--workers", "1", *flags]) == 0
            out[family, name] = str(folder)
    return out


def tiny_vlm(family: str, folder: str, attn: str):
    """A 1-2 layer LLaVA (CLIP vision tower, Llama text model) or Qwen2-VL, hidden 32, on the dataset's ids."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    from transforms import shard_format as sf

    manifest = sf.load_manifest(folder)
    vision = manifest["vision"]["config"]
    vocab = int(manifest["tokenizer"]["vocab_size"])
    torch.manual_seed(0)
    if family == "llava":
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=56, patch_size=14),
            text_config=LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                    rope_theta=10.0, initializer_range=0.2),
            image_token_id=vision["image_token_id"], vision_feature_select_strategy="default",
            vision_feature_layer=-1)
        model_class = LlavaForConditionalGeneration
    else:
        config = Qwen2VLConfig(
            text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2], "rope_theta": 10.0},
                             rope_theta=10.0, initializer_range=0.2),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
            image_token_id=vision["image_token_id"], vision_start_token_id=vision["vision_start_id"],
            vision_end_token_id=vision["vision_end_id"], video_token_id=vision["image_token_id"] + 3)
        model_class = Qwen2VLForConditionalGeneration
    config._attn_implementation = attn
    return model_class(config).eval()


def packed_rows(folder: str, count: int = 3) -> list[dict]:
    """Packed rows with several sequences, where some sequence other than the first holds an image."""
    dataset = ShardDataset(folder, columns=vision_columns(folder) + ("index", "num_images"))
    chosen = [row for row in (dataset[i] for i in range(len(dataset)))
              if len(row["seq_lengths"]) > 1 and np.asarray(row["num_images"])[1:].sum() > 0][:count]
    assert len(chosen) == count
    return chosen


def alone_logits(model, folder: str, indexes) -> list[torch.Tensor]:
    """Logits of the unpacked job's rows (by record index), each collated and run by itself: for Qwen2-VL the
    model computes its own M-RoPE positions (get_rope_index) from mm_token_type_ids."""
    dataset = ShardDataset(folder, columns=vision_columns(folder) + ("index",))
    by_index = {int(dataset[i]["index"]): dataset[i] for i in range(len(dataset))}
    collator = VisionCollator.from_manifest(folder)
    out = []
    with torch.no_grad():
        for index in indexes:
            batch = collator([by_index[int(index)]])
            batch.pop("position_ids", None)
            out.append(model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0])
    return out


def differences(model, batch, rows, reference, padding_free: bool) -> list[float]:
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    out, k, offset = [], 0, 0
    for b, row in enumerate(rows):
        start = 0
        for length in np.asarray(row["seq_lengths"]).tolist():
            got = logits[0, offset + start:offset + start + length] if padding_free else logits[b, start:start + length]
            out.append(float((got - reference[k]).abs().max()))
            start += length
            k += 1
        offset += start
    return out


@pytest.mark.parametrize("family", ["llava", "qwen"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_vision_sequences_equal_the_sequences_alone(folders, family, attn):
    packed, rows_folder = folders[family, "packed"], folders[family, "rows"]
    model = tiny_vlm(family, packed, attn)
    rows = packed_rows(packed)
    reference = alone_logits(model, rows_folder, [i for row in rows for i in np.asarray(row["index"]).tolist()])
    collator = VisionCollator.from_manifest(packed)
    batch = collator(rows)
    assert batch["input_ids"].shape == (len(rows), PACK) and batch["attention_mask"].shape == (len(rows), 1, PACK, PACK)
    images = sum(int(np.asarray(row["num_images"]).sum()) for row in rows)
    if family == "llava":
        assert batch["pixel_values"].shape[0] == images  # one per occurrence, in row then token order
    else:
        assert batch["position_ids"].shape == (3, len(rows), PACK) and len(batch["image_grid_thw"]) == images
    assert max(differences(model, batch, rows, reference, False)) < TOLERANCE
    if family == "qwen":  # padding-free: [4, 1, total] positions (text plane first), cu_seq_lens per sequence
        flat = VisionCollator.from_manifest(packed, padding_free=True)(rows)
        assert flat["position_ids"].shape[:2] == (4, 1)
        assert max(differences(model, flat, rows, reference, True)) < TOLERANCE


def test_qwen_vl_needs_its_per_sequence_positions(folders):
    """The block mask alone is not enough for Qwen2-VL: 1-D positions on the three M-RoPE planes (what a
    text-only packing collator gives) change every sequence holding an image."""
    packed = folders["qwen", "packed"]
    model = tiny_vlm("qwen", packed, "sdpa")
    rows = packed_rows(packed)
    reference = alone_logits(model, folders["qwen", "rows"], [i for row in rows for i in np.asarray(row["index"])])
    batch = VisionCollator.from_manifest(packed)(rows)
    text = torch.stack([torch.from_numpy(np.concatenate(
        [np.arange(n) for n in np.asarray(row["seq_lengths"])] + [np.zeros(PACK - len(row["input_ids"]), int)]))
        for row in rows])
    batch["position_ids"] = text[None].expand(3, -1, -1)
    found = differences(model, batch, rows, reference, False)
    with_images = [k for k, n in enumerate(n for row in rows for n in np.asarray(row["num_images"])) if n]
    assert min(found[k] for k in with_images) > 1e-2, found
    assert max(d for k, d in enumerate(found) if k not in with_images) < TOLERANCE  # text-only: same positions


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_naive_vision_packing_leaks(folders, family):
    """A 2D mask over a packed row (and, for Qwen2-VL, the model's own positions over the whole row, what a
    collator that ignores sequence boundaries gives) makes later sequences differ."""
    packed = folders[family, "packed"]
    model = tiny_vlm(family, packed, "sdpa")
    rows = packed_rows(packed)
    reference = alone_logits(model, folders[family, "rows"], [i for row in rows for i in np.asarray(row["index"])])
    batch = VisionCollator.from_manifest(packed)(rows)
    lengths = torch.tensor([len(row["input_ids"]) for row in rows])
    batch["attention_mask"] = (torch.arange(PACK)[None, :] < lengths[:, None]).long()
    if family == "qwen":
        batch.pop("position_ids")  # the model computes get_rope_index over the whole packed row
    found = differences(model, batch, rows, reference, False)
    later = [d for k, d in enumerate(found) if k not in _firsts(rows)]
    assert min(later) > 1e-3, found


def _firsts(rows) -> set[int]:
    firsts, k = set(), 0
    for row in rows:
        firsts.add(k)
        k += len(row["seq_lengths"])
    return firsts


def test_stored_mrope_positions_equal_get_rope_index_of_each_sequence(folders):
    packed = folders["qwen", "packed"]
    model = tiny_vlm("qwen", packed, "sdpa")
    dataset = ShardDataset(packed, columns=vision_columns(packed) + ("image_grid_thw", "num_images"))
    image_id = int(VisionCollator.from_manifest(packed).vision.image_token_id)
    checked = 0
    for i in range(len(dataset)):
        row = dataset[i]
        ids = torch.from_numpy(np.array(row["input_ids"], dtype=np.int64))
        planes = np.asarray(row["mrope_position_ids"]).reshape(3, -1)
        grids = torch.from_numpy(np.array(row["image_grid_thw"], dtype=np.int64).reshape(-1, 3))
        start = image = 0
        for length, count in zip(np.asarray(row["seq_lengths"]).tolist(), np.asarray(row["num_images"]).tolist()):
            seq = ids[start:start + length][None]
            if count:
                expected, _ = model.model.get_rope_index(seq, (seq == image_id).long(), grids[image:image + count])
                assert np.array_equal(planes[:, start:start + length], expected[:, 0].numpy())
                checked += 1
            else:
                assert np.array_equal(planes[:, start:start + length], np.tile(np.arange(length), (3, 1)))
            start += length
            image += count
    assert checked > 5


def test_qwen_vl_padding_free_batches_of_unpacked_rows_get_their_positions(folders):
    """Padding-free batches of ordinary (unpacked) Qwen-VL rows were refused before packing came: each row's
    M-RoPE positions are now computed for it alone (the rule of get_rope_index) at collation."""
    folder = folders["qwen", "rows"]
    model = tiny_vlm("qwen", folder, "sdpa")
    dataset = ShardDataset(folder, columns=vision_columns(folder) + ("index", "num_images"))
    every = [dataset[i] for i in range(len(dataset))]  # the shard order follows the inputs' paths: pick rows
    with_images = [row for row in every if int(row["num_images"])]
    rows = (with_images[:3] + [row for row in every if not int(row["num_images"])])[:6]
    assert sum(int(row["num_images"]) for row in rows) >= 2 and len(rows) == 6
    reference = alone_logits(model, folder, [row["index"] for row in rows])
    batch = VisionCollator.from_manifest(folder, padding_free=True)(rows)
    assert batch["position_ids"].shape == (4, 1, sum(len(row["input_ids"]) for row in rows))
    assert "use_cache" not in batch  # unpacked rows: as documented for padding-free batches, run without a cache
    batch["use_cache"] = False
    with_lengths = [dict(row, seq_lengths=[len(row["input_ids"])]) for row in rows]
    assert max(differences(model, batch, with_lengths, reference, True)) < TOLERANCE
