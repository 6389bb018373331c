"""Rebuild tests/data/ from the public upstream files (see SOURCES.md for repositories, commits, licences).

Usage: ``python tests/data/build_subsets.py UPSTREAM`` where ``UPSTREAM/<owner>/<repo>/<path>`` holds the
upstream files named in ``SUBSETS`` (e.g. ``git -C LLaMA-Factory show COMMIT:data/mllm_demo.json``). Every
output is a subset or a re-serialisation (JSON re-indented, images re-encoded): the records' values are the
upstream values, chosen by the indices below. Not run by the tests (they read the committed files).
``edge_cases/openai_cookbook_01-testing-example_multiline.jsonl`` is not rebuilt here: its point is its byte layout
(raw control characters inside strings), so three of its objects were copied by hand (SOURCES.md).
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: output (relative to tests/data) -> (upstream file under UPSTREAM, record indices or None for all, writer)
SUBSETS = {
    "sharegpt/fastchat_dummy_conversation.json":
        ("lm-sys/FastChat/data/dummy_conversation.json", range(36), "array"),
    "sharegpt/axolotl_conversation.json":
        ("axolotl-ai-cloud/axolotl/tests/fixtures/conversation.json", None, "object"),
    "alpaca/axolotl_alpaca.json":
        ("axolotl-ai-cloud/axolotl/tests/fixtures/alpaca/alpaca.json", None, "array"),
    "openai/openai_cookbook_toy_chat_fine_tuning.jsonl":
        ("openai/openai-cookbook/examples/data/toy_chat_fine_tuning.jsonl", None, "compact_lines"),
    "openai/llamafactory_v1_sft_demo.jsonl":
        ("hiyouga/LLaMA-Factory/data/v1_sft_demo.jsonl", range(30), "lines"),
    "alpaca/llamafactory_alpaca_en_demo.json":
        ("hiyouga/LLaMA-Factory/data/alpaca_en_demo.json", range(30), "array"),
    "alpaca/llamafactory_identity.json":
        ("hiyouga/LLaMA-Factory/data/identity.json", range(20), "array"),
    "tool_calling/llamafactory_glaive_toolcall_en_demo.json":
        ("hiyouga/LLaMA-Factory/data/glaive_toolcall_en_demo.json", range(12), "array"),
    "tool_calling/openai_cookbook_drone_training_first3.jsonl":
        ("openai/openai-cookbook/examples/data/drone_training.jsonl", range(3), "lines"),
    "tool_calling/llamafactory_reason_tool_use_demo.jsonl":
        ("hiyouga/LLaMA-Factory/data/reason_tool_use_demo_50.jsonl", [0, 8, 10, 17, 25, 28], "lines"),
    "edge_cases/xtuner_openai_sft_bare_lists.jsonl":
        ("InternLM/xtuner/tests/resource/openai_sft.jsonl", range(30), "lines"),
    "edge_cases/axolotl_conversation.missingturns.json":
        ("axolotl-ai-cloud/axolotl/tests/fixtures/conversation.missingturns.json", None, "object"),
    "edge_cases/qwen3vl_single_images_trailing_comma.json":
        ("QwenLM/Qwen3-VL/qwen-vl-finetune/demo/single_images.json", None, "array_trailing_comma"),
    "vlm/llamafactory/data/mllm_demo.json":
        ("hiyouga/LLaMA-Factory/data/mllm_demo.json", None, "array"),
    "vlm/llamafactory/data/v1_multimodal_demo.jsonl":
        ("hiyouga/LLaMA-Factory/data/v1_multimodal_demo.jsonl", None, "compact_lines"),
    "vlm/torchtune/tests/assets/vqa_tiny.json":
        ("pytorch/torchtune/tests/assets/vqa_tiny.json", None, "array"),
}
IMAGES = {
    "vlm/llamafactory/data/mllm_demo_data/1.jpg": "hiyouga/LLaMA-Factory/data/mllm_demo_data/1.jpg",
    "vlm/llamafactory/data/mllm_demo_data/2.jpg": "hiyouga/LLaMA-Factory/data/mllm_demo_data/2.jpg",
    "vlm/llamafactory/data/mllm_demo_data/3.jpg": "hiyouga/LLaMA-Factory/data/mllm_demo_data/3.jpg",
    "vlm/torchtune/tests/assets/rgb_pytorch.png": "pytorch/torchtune/tests/assets/rgb_pytorch.png",
}


def load(path: Path) -> list:
    """The records of a JSON array (a trailing comma tolerated), a single object, or JSON Lines."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        stripped = text.rstrip()
        if stripped.endswith("]") and stripped[:-1].rstrip().endswith(","):
            return json.loads(stripped[:-1].rstrip()[:-1] + "]")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return data if isinstance(data, list) else [data]


def serialise(records: list, writer: str) -> str:
    if writer == "array":
        return json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    if writer == "object":
        (record,) = records
        return json.dumps(record, ensure_ascii=False, indent=1) + "\n"
    if writer == "lines":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if writer == "compact_lines":
        return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    if writer == "array_trailing_comma":  # the upstream file before QwenLM/Qwen3-VL@ba5c01b "fix json typo"
        body = ",\n".join(" " + json.dumps(r, ensure_ascii=False) for r in records)
        return "[\n" + body + ",\n]\n"
    raise ValueError(writer)


def reencode(source: Path) -> bytes:
    from PIL import Image

    with Image.open(source) as image:
        image.load()
        out = io.BytesIO()
        if source.suffix == ".png":
            image.save(out, format="PNG", compress_level=9)
        else:
            image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def main(upstream: Path) -> None:
    for target, (source, indices, writer) in SUBSETS.items():
        records = load(upstream / source)
        chosen = records if indices is None else [records[i] for i in indices]
        path = HERE / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(serialise(chosen, writer), encoding="utf-8")
        print(f"{target}: {len(chosen)} of {len(records)} records, {path.stat().st_size:,} bytes")
    for target, source in IMAGES.items():
        path = HERE / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(reencode(upstream / source))
        print(f"{target}: re-encoded, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
