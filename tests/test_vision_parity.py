"""Parity with the real processors on real data (LLaMA-Factory's multimodal demo).

For every record: our ``input_ids`` equal what the processor produces for the same rendered text
and images, our collated ``pixel_values`` (and ``image_grid_thw``) are *bit-identical* to the
processor's, and the trained positions are exactly the assistant answers (plus ``<|im_end|>``).

* LLaVA: ``LlavaProcessor.__call__(text=rendered, images=...)`` is the reference.
* Qwen2-VL: the full processor cannot be built without torchvision, so the reference is the image
  processor's output plus the documented expansion rule (``<|image_pad|>`` repeated
  ``grid_thw.prod() // merge_size**2``) applied to the rendered text, tokenized by the tokenizer.

Images are loaded for the references with ``transformers.image_utils.load_image`` (what users
pass to processors), independently of chatshards' loader.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_vision_fixtures import LLAMAFACTORY, builder, image_token_positions, llava_dir, loaded, qwen_dir, trained_runs

from chatshards_testing import sample
from transforms.reading import iter_raw_records_from_path
from transforms.runtime.vision import VisionCollator


def demo_records():
    """(raw records, expected messages, image paths) of both LLaMA-Factory demo files."""
    folder = sample(LLAMAFACTORY)
    out = []
    raws = list(iter_raw_records_from_path(str(folder / "mllm_demo.json")))
    for raw in raws:
        out.append((raw, raw.value["messages"], [folder / p for p in raw.value["images"]], None))
    root = folder.parent  # v1 paths are relative to vlm/llamafactory/
    for raw in list(iter_raw_records_from_path(str(folder / "v1_multimodal_demo.jsonl")))[:6]:
        messages, images = [], []
        for m in raw.value["messages"]:
            text = ""
            for part in m["content"]:
                if part["type"] == "image_url":
                    text += "<image>"
                    images.append(root / part["value"])
                else:
                    text += part["value"]
            messages.append({"role": m["role"], "content": text})
        out.append((raw, messages, images, str(root)))
    return out


def build_all(kind):
    rows = []
    for raw, messages, images, root in demo_records():
        (result_kind, row), = builder(kind, image_root=root).build_records([raw])
        assert result_kind == "row", row
        rows.append((row, messages, images))
    return rows


def check_labels(tokenizer, vision, row, messages):
    answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in trained_runs(row["labels"])] == answers
    assert (row["labels"][image_token_positions(row, vision)] == -100).all()


def test_llava_input_ids_pixels_and_labels_equal_the_processor():
    from transformers import AutoProcessor
    from transformers.image_utils import load_image

    tokenizer, vision = loaded("llava")
    processor = AutoProcessor.from_pretrained(llava_dir())
    collator = VisionCollator(vision=vision, pad_token_id=tokenizer.pad_token_id)
    rows = build_all("llava")
    assert len(rows) == 12
    for row, messages, images in rows:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        reference = processor(text=text, images=[load_image(str(p)) for p in images], return_tensors="np")
        assert row["input_ids"].tolist() == reference["input_ids"][0].tolist()
        batch = collator([row])
        assert np.array_equal(batch["pixel_values"].numpy(), reference["pixel_values"])  # bit-identical
        assert len(image_token_positions(row, vision)) == 256 * len(images) == row["num_image_tokens"]
        check_labels(tokenizer, vision, row, messages)


def test_qwen_input_ids_pixels_grid_and_labels_equal_the_processor_rule():
    from transformers import AutoImageProcessor
    from transformers.image_utils import load_image

    tokenizer, vision = loaded("qwen")
    image_processor = AutoImageProcessor.from_pretrained(qwen_dir())
    merge = image_processor.merge_size
    collator = VisionCollator(vision=vision, pad_token_id=tokenizer.pad_token_id)
    for row, messages, images in build_all("qwen"):
        reference = image_processor(images=[load_image(str(p)) for p in images], return_tensors="np")
        placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
        text = tokenizer.apply_chat_template(
            [{**m, "content": m["content"].replace("<image>", placeholder)} for m in messages], tokenize=False)
        grids = iter(reference["image_grid_thw"])
        text = re.sub(re.escape("<|image_pad|>"),
                      lambda _, grids=grids: "<|image_pad|>" * (int(np.prod(next(grids))) // merge ** 2), text)
        assert row["input_ids"].tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
        batch = collator([row])
        assert np.array_equal(batch["pixel_values"].numpy(), reference["pixel_values"])
        assert np.array_equal(batch["image_grid_thw"].numpy(), reference["image_grid_thw"])
        assert row["image_grid_thw"].reshape(-1, 3).tolist() == reference["image_grid_thw"].tolist()
        assert batch["mm_token_type_ids"][0].tolist() == (row["input_ids"] == 151655).astype(int).tolist()
        assert "position_ids" not in batch  # Qwen-VL builds 3-D M-RoPE positions itself
        check_labels(tokenizer, vision, row, messages)


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_resize_and_normalisation_match_the_image_processor_on_many_sizes(kind):
    from PIL import Image
    from transformers import AutoImageProcessor

    from transforms.vision.pixels import pixel_values
    from transforms.vision.resize import prepare_pixels
    from transforms.vision.tokens import num_image_tokens

    _, vision = loaded(kind)
    image_processor = AutoImageProcessor.from_pretrained(llava_dir() if kind == "llava" else qwen_dir())
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (7, 300), (300, 7), (28, 28), (29, 57), (224, 224), (500, 333), (1000, 20), (64, 900)]
    sizes += [tuple(int(x) for x in rng.integers(8, 700, size=2)) for _ in range(12)]
    for height, width in sizes:
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        reference = image_processor(images=[Image.fromarray(array)], return_tensors="np")
        prepared = prepare_pixels(vision, array)
        ours = pixel_values(vision, [prepared])
        assert np.array_equal(ours["pixel_values"], reference["pixel_values"]), (height, width)
        if kind == "qwen":
            assert np.array_equal(ours["image_grid_thw"], reference["image_grid_thw"])
            assert num_image_tokens(vision, *prepared.shape[:2]) == int(np.prod(reference["image_grid_thw"][0])) // 4


def test_processor_config_and_hash_are_recorded():
    _, llava = loaded("llava")
    _, qwen = loaded("qwen")
    assert (llava.family, llava.image_token, llava.crop_hw, llava.patch_size) == ("fixed", "<image>", (224, 224), 14)
    assert (qwen.family, qwen.image_token_id, qwen.vision_start_id, qwen.vision_end_id) == (
        "dynamic", 151655, 151652, 151653)
    assert (qwen.min_pixels, qwen.max_pixels) == (56 * 56, 28 * 28 * 256)
    assert json.loads(json.dumps(qwen.to_json()))["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    assert type(qwen).from_json(json.loads(json.dumps(qwen.to_json()))) == qwen
    assert len({llava.hash(), qwen.hash()}) == 2 and qwen.hash() == type(qwen).from_json(qwen.to_json()).hash()
