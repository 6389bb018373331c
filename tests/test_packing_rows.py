"""Packed rows (transforms.packing.rows): the column contract, every sequence recoverable exactly (only its
first label becomes -100), image columns concatenated in token order with image_index shifted, Qwen-VL
M-RoPE planes per sequence, and the packing figures."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from transforms import shard_format as sf
from transforms.packing.bins import STRATEGIES
from transforms.packing.mrope import MropeSpec, packed_mrope_positions, sequence_mrope_positions
from transforms.packing.options import PackingOptions
from transforms.packing.rows import pack_table, packed_schema
from transforms.packing.stats import merge_packing_stats, packing_report
from transforms.packing.unpack import iter_sequences
from transforms.vision.config import VisionConfig
from transforms.vision.part import ImageOptions, image_fields

IMAGE = 900
SPEC = MropeSpec(image_token_id=IMAGE, merge_size=2)


def text_row(rng, index: int, length: int, *, source: str = "a.jsonl") -> dict:
    ids = rng.integers(0, 800, length).astype(np.int32)
    labels = np.where(rng.random(length) < 0.6, ids, -100).astype(np.int32)
    labels[0] = ids[0] if index % 3 == 0 else -100  # some rows trained from their first token
    truncated = index % 5 == 0
    return dict(input_ids=ids, labels=labels, length=length, num_loss_tokens=int((labels != -100).sum()),
                truncated=truncated, source=source, index=index, record_id=f"r{index}", format="openai", num_turns=2,
                num_trained_turns=1, prompt_tokens=0, truncated_tokens=7 if truncated else 0,
                conversation_hash=f"h{index}", turn=-1, reasoning_tokens=0, literal_control_tokens=0,
                row_of_record=0, split_extra_tokens=0)


def text_table(seed: int, n: int = 60, longest: int = 50) -> pa.Table:
    rng = np.random.default_rng(seed)
    return sf.table_from_rows([text_row(rng, i, int(rng.integers(1, longest))) for i in range(n)], sf.arrow_schema())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_packed_rows_hold_every_sequence_exactly_with_reset_positions(strategy):
    table = text_table(1)
    options = PackingOptions(length=64, strategy=strategy)
    packed, figures = pack_table(table, options)
    assert packed.schema == packed_schema(table.schema, options)
    assert packed.schema.names[:7] == ["input_ids", "labels", "position_ids", "seq_lengths", "length",
                                       "num_loss_tokens", "num_sequences"]
    assert packed.schema.field("source").type == pa.list_(pa.string())
    rows = packed.to_pylist()
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) == row["length"] <= 64
        assert sum(row["seq_lengths"]) == row["length"] and len(row["seq_lengths"]) == row["num_sequences"]
        assert len(row["source"]) == len(row["index"]) == len(row["record_id"]) == row["num_sequences"]
        assert row["num_loss_tokens"] == sum(label != -100 for label in row["labels"])
        starts = np.cumsum([0] + row["seq_lengths"][:-1])
        assert all(row["labels"][s] == -100 for s in starts)  # no sequence trained to continue the previous
        assert row["position_ids"] == [p for n in row["seq_lengths"] for p in range(n)]
    original = {row["index"]: row for row in table.to_pylist()}
    seen = []
    for sequence in iter_sequences(packed):
        source = original[sequence["index"]]
        assert sequence["input_ids"].tolist() == source["input_ids"]
        assert sequence["labels"].tolist() == [-100] + source["labels"][1:]
        assert (sequence["record_id"], sequence["truncated"]) == (source["record_id"], source["truncated"])
        seen.append(sequence["index"])
    assert sorted(seen) == sorted(original)
    # figures: tokens, trained tokens, first labels masked, truncation, sequences per pack
    first_trained = sum(1 for row in original.values() if row["labels"][0] != -100)
    assert figures["tokens"] == sum(r["length"] for r in original.values())
    assert figures["first_labels_masked"] == first_trained
    assert figures["trained_tokens"] == sum(r["num_loss_tokens"] for r in original.values()) - first_trained
    assert figures["truncated_sequences"] == sum(r["truncated"] for r in original.values())
    assert figures["truncated_tokens"] == 7 * figures["truncated_sequences"]
    assert figures["sequences_per_pack"] == {str(k): v for k, v in Counter(r["num_sequences"] for r in rows).items()}
    assert sum(figures["fill_counts"]) == figures["packs"] == len(rows)
    assert pack_table(table, options)[0].equals(packed)  # deterministic


def test_packing_figures_merge_and_report():
    options = PackingOptions(length=64)
    parts = [pack_table(text_table(seed), options)[1] for seed in (2, 3)]
    merged = merge_packing_stats(parts)
    assert merged["packs"] == sum(p["packs"] for p in parts)
    assert merged["fill_counts"] == [a + b for a, b in zip(parts[0]["fill_counts"], parts[1]["fill_counts"])]
    report = packing_report(merged, length=64, strategy="bfd")
    assert report["efficiency"] == round(merged["tokens"] / (merged["packs"] * 64), 6)
    padded = report["runtime_padding"]
    assert padded["pad_each_row_to_pack_length"]["efficiency"] < padded["batches_of_8_padded_to_longest"]["efficiency"]
    assert report["efficiency"] > padded["batches_of_32_padded_to_longest"]["efficiency"]
    assert sum(count for _, _, count in report["fill_histogram"]) == report["packs"]
    assert merge_packing_stats(reversed(parts)) == merged
    assert packing_report({}, length=64, strategy="bfd")["packs"] == 0


def test_rows_longer_than_a_pack_and_padded_rows_are_refused():
    with pytest.raises(ValueError, match="more than the pack capacity"):
        pack_table(text_table(4, longest=90), PackingOptions(length=64))
    with pytest.raises(ValueError, match="padded"):
        packed_schema(sf.arrow_schema(padded=True), PackingOptions(length=64))
    empty, figures = pack_table(sf.arrow_schema().empty_table(), PackingOptions(length=64))
    assert empty.num_rows == 0 and figures["packs"] == 0


def vision_table(rng, n: int = 24, dynamic: bool = True) -> tuple[pa.Table, VisionConfig]:
    """Rows with 0-2 images each (Qwen-VL-like: <start> image tokens <end>, grids of (1, 2h, 2w))."""
    vision = VisionConfig(family="dynamic" if dynamic else "fixed", image_token="<|image_pad|>", image_token_id=IMAGE,
                          vision_start_token="<s>", vision_start_id=901, vision_end_token="<e>", vision_end_id=902)
    fields = image_fields(vision, ImageOptions())
    rows = []
    for i in range(n):
        images = int(rng.integers(0, 3))
        ids, payloads, index, hw, grids, counts = [], [], [], [], [], []
        ids += rng.integers(0, 800, int(rng.integers(1, 6))).tolist()
        for k in range(images):
            if k == 1 and rng.random() < 0.5:  # the same image again: one payload, two occurrences
                index.append(index[0])
                hw += hw[:2]
                grids += grids[:3]
                counts.append(counts[0])
            else:
                gh, gw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
                payloads.append(f"image-{i}-{k}".encode())
                index.append(len(payloads) - 1)
                hw += [28 * gh, 28 * gw]
                grids += [1, 2 * gh, 2 * gw]
                counts.append(gh * gw)
            ids += [901] + [IMAGE] * counts[-1] + [902] + rng.integers(0, 800, int(rng.integers(0, 4))).tolist()
        ids = np.asarray(ids, dtype=np.int32)
        row = text_row(rng, i, len(ids))
        row.update(input_ids=ids, labels=np.where(ids == IMAGE, -100, ids).astype(np.int32), length=len(ids))
        row["num_loss_tokens"] = int((row["labels"] != -100).sum())
        row.update({"image_bytes": payloads, "image_sha256": [p.hex() for p in payloads],
                    "image_index": np.asarray(index, np.int32), "image_hw": np.asarray(hw, np.int32),
                    "image_original_hw": np.asarray(hw, np.int32), "image_grid_thw": np.asarray(grids, np.int32),
                    "image_token_counts": np.asarray(counts, np.int32),
                    "image_sources": [f"{i}-{k}" for k in range(len(counts))],
                    "num_images": len(counts), "num_image_tokens": int(sum(counts))})
        if not dynamic:
            del row["image_grid_thw"]
        rows.append(row)
    return sf.table_from_rows(rows, sf.arrow_schema(extra_fields=fields)), vision


def occurrences(row: dict) -> list[bytes]:
    """The payload of every image occurrence of a row, in token order."""
    return [row["image_bytes"][j] for j in row["image_index"]]


@pytest.mark.parametrize("dynamic", [True, False])
def test_image_columns_follow_their_sequences_in_token_order(dynamic):
    table, vision = vision_table(np.random.default_rng(5), dynamic=dynamic)
    spec = MropeSpec(vision.image_token_id, vision.merge_size) if dynamic else None
    packed, _ = pack_table(table, PackingOptions(length=40), mrope=spec)
    assert ("mrope_position_ids" in packed.schema.names) == dynamic
    original = {row["index"]: row for row in table.to_pylist()}
    for row in packed.to_pylist():
        expected = [payload for i in row["index"] for payload in occurrences(original[i])]
        assert occurrences(row) == expected  # row order, then token order: what the model consumes
        assert row["image_token_counts"] == [c for i in row["index"] for c in original[i]["image_token_counts"]]
        assert sum(row["image_token_counts"]) == sum(1 for t in row["input_ids"] if t == IMAGE)
        assert row["num_images"] == [original[i]["num_images"] for i in row["index"]]
        if dynamic:
            planes = np.asarray(row["mrope_position_ids"]).reshape(3, -1)
            alone = [sequence_mrope_positions(np.asarray(original[i]["input_ids"]),
                                              np.asarray(original[i]["image_grid_thw"]).reshape(-1, 3), spec)
                     for i in row["index"]]
            assert np.array_equal(planes, np.concatenate(alone, axis=1))


def test_mrope_positions_of_one_sequence_by_hand():
    # text, text, <start>, a 1 x 4 x 6 grid (2 x 3 merged), <end>, text
    ids = np.array([5, 6, 901] + [IMAGE] * 6 + [902, 7])
    planes = sequence_mrope_positions(ids, np.array([[1, 4, 6]]), SPEC)
    assert planes[:, :3].tolist() == [[0, 1, 2]] * 3
    assert planes[0, 3:9].tolist() == [3] * 6                   # temporal: one frame
    assert planes[1, 3:9].tolist() == [3, 3, 3, 4, 4, 4]        # rows
    assert planes[2, 3:9].tolist() == [3, 4, 5, 3, 4, 5]        # columns
    assert planes[:, 9:].tolist() == [[6, 7]] * 3               # 3 + max(4, 6) // 2, then on
    both = packed_mrope_positions(np.concatenate([ids, ids[:2]]), [11, 2], np.array([[1, 4, 6]]), [1, 0], SPEC)
    assert both[:, 11:].tolist() == [[0, 1]] * 3
    with pytest.raises(ValueError):
        sequence_mrope_positions(ids, np.array([[1, 4, 4]]), SPEC)
