"""Vision throughput and storage figures (prints figures; not a test).

    python benchmarks/bench_vision.py [--images 240] [--size 640x480] [--skip-job]

Builds both processor families offline (LLaVA: LlavaProcessor + CLIP 224 crop; Qwen2-VL: the
image processor with its default 56*56..28*28*1280 pixel range), paired with the bundled
Qwen2-vocabulary tokenizer, and a set of distinct photo-like JPEGs (smooth random fields, so
nothing is cached and compression behaves like photos). Sections:

1. the job's per-record work without Beam (``RowBuilder`` with an ``ImagePart``: read, decode, validate,
   resize, encode, render, tokenize, label): images/s, one process;
2. the Beam job end to end (``python -m pipeline``, FnApiRunner, 2 workers, startup included);
3. collation images/s through a ``DataLoader`` with 2 workers: ``VisionCollator`` over the shards
   (WebP, PNG, and ``--store-pixels``) versus the seed's hand-written collator that calls the processor
   on every batch (load the JPEGs, ``processor(text=..., images=...)``; for Qwen-VL the image
   processor plus the placeholder expansion and the tokenizer);
4. shard bytes per image (WebP, PNG, raw pixels; JPEG q95 payload) next to the source JPEG size.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from transforms.config import TokenizeOptions  # noqa: E402
from transforms.formats import FormatOptions  # noqa: E402
from transforms.reading import iter_raw_records_from_path  # noqa: E402
from transforms.rows import RowBuilder  # noqa: E402
from transforms.runtime import ShardDataset  # noqa: E402
from transforms.runtime.vision import VisionCollator, vision_columns  # noqa: E402
from transforms.tokenizer_loading import bundled_tokenizer, load_tokenizer  # noqa: E402
from transforms.vision.part import ImageOptions, ImagePart  # noqa: E402
from transforms.vision.processors import load_vision_config  # noqa: E402

BATCH = 8


def make_processors(folder: str) -> dict[str, str]:
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    llava, qwen = os.path.join(folder, "llava"), os.path.join(folder, "qwen")
    tokenizer = bundled_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    LlavaProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(llava)
    Qwen2VLImageProcessorPil().save_pretrained(qwen)
    bundled_tokenizer().save_pretrained(qwen)
    return {"llava": llava, "qwen": qwen}


def make_images(folder: str, count: int, size: tuple[int, int]) -> str:
    """``count`` distinct photo-like JPEGs and a JSONL of one QA record per image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = size
    records = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        noise = rng.normal(0, 6, size=(height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        name = f"img_{i:05d}.jpg"
        Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
        records.append({"messages": [
            {"role": "user", "content": f"<image>Describe picture {i} in one sentence."},
            {"role": "assistant", "content": f"Picture {i} shows soft blotches of colour with fine grain."}],
            "images": [name]})
    path = os.path.join(folder, "records.jsonl")
    with open(path, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return path


def bench_builder(processor: str, records: str, **image_options) -> tuple[float, int]:
    tokenizer = load_tokenizer(processor)
    vision = load_vision_config(processor, tokenizer)
    images = ImagePart(tokenizer=tokenizer, vision=vision, image_options=ImageOptions(**image_options))
    builder = RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(), tokenize_options=TokenizeOptions(),
                         images=images)
    raws = list(iter_raw_records_from_path(records))
    start = time.perf_counter()
    rows = [row for kind, row in builder.iter_records(raws, batch_size=64) if kind == "row"]
    seconds = time.perf_counter() - start
    return len(raws) / seconds, sum(len(b) for row in rows for b in row.get("image_bytes", row.get("image_pixels", [])))


def run_job(processor: str, records: str, out: str, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "--input", records, "--output", out, "--processor", processor,
                    "--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing",
                    "--no-audit", *extra], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


class SeedCollator:
    """The hand-written collator users write today: the processor on every batch (fixed so it trains
    the answer, not the question: pad and image tokens are masked, everything else is trained)."""

    def __init__(self, processor_dir: str, kind: str, image_root: str):
        from transformers import AutoImageProcessor, AutoProcessor

        self.kind = kind
        self.root = image_root
        self.tokenizer = load_tokenizer(processor_dir)
        if kind == "llava":
            self.processor = AutoProcessor.from_pretrained(processor_dir)
        else:
            self.image_processor = AutoImageProcessor.from_pretrained(processor_dir)

    def __call__(self, examples):
        from transformers.image_utils import load_image

        texts = [self.tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in examples]
        images = [load_image(os.path.join(self.root, p)) for e in examples for p in e["images"]]
        if self.kind == "llava":
            batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
            image_id = self.processor.image_token_id
        else:
            out = self.image_processor(images=images, return_tensors="pt")
            grids = iter(out["image_grid_thw"])
            merge = self.image_processor.merge_size ** 2
            expanded = [re.sub(re.escape("<image>"), lambda _: "<|vision_start|>" + "<|image_pad|>" * (
                int(next(grids).prod()) // merge) + "<|vision_end|>", t) for t in texts]
            batch = dict(self.tokenizer(expanded, padding=True, return_tensors="pt"))
            batch.update(out)
            image_id = 151655
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[labels == image_id] = -100
        batch["labels"] = labels
        return batch


def loader_rate(dataset, collate, *, epochs: int = 2) -> float:
    """Images/s of a DataLoader with 2 workers (one image per item), worker start-up excluded."""
    loader = DataLoader(dataset, batch_size=BATCH, collate_fn=collate, num_workers=2, persistent_workers=True)
    for _ in loader:  # warm-up epoch: starts the workers, maps the shards, fills the page cache
        pass
    start = time.perf_counter()
    items = 0
    for _ in range(epochs):
        for batch in loader:
            items += batch["input_ids"].shape[0]
    return items / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--skip-job", action="store_true")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="bench_vision_")
    try:
        processors = make_processors(work)
        image_dir = os.path.join(work, "images")
        os.makedirs(image_dir)
        records = make_images(image_dir, args.images, size)
        records_head = os.path.join(work, "one.jsonl")
        with open(records) as handle, open(records_head, "w") as head:
            head.write(handle.readline().replace('"img_', '"images/img_'))
        source_bytes = sum(os.path.getsize(os.path.join(image_dir, f))
                           for f in os.listdir(image_dir) if f.endswith(".jpg"))
        print(f"{args.images} distinct {size[0]}x{size[1]} JPEGs "
              f"(q90, {source_bytes / args.images / 1024:.1f} KiB each), "
              f"{os.cpu_count()} CPUs, batch {BATCH}")
        results = {}
        for kind, processor in processors.items():
            print(f"\n== {kind} ==")
            for label, opts in (("webp", {"encoding": "webp"}), ("png", {"encoding": "png"}),
                                ("jpeg q95", {"encoding": "jpeg"}), ("raw pixels", {"store_pixels": True})):
                r, p = bench_builder(processor, records, **opts)
                print(f"1. builder, {label:10s} (no Beam, 1 process): {r:6.1f} images/s; "
                      f"payload {p / args.images / 1024:6.1f} KiB/image")
            outs = {}
            if not args.skip_job:
                baseline = run_job(processor, records_head, os.path.join(work, f"out_{kind}_one"))
                for label, extra in (("webp", ("--image-encoding", "webp")), ("png", ("--image-encoding", "png")),
                                     ("pixels", ("--store-pixels",))):
                    out = os.path.join(work, f"out_{kind}_{label}")
                    seconds = run_job(processor, records, out, *extra)
                    manifest = json.load(open(os.path.join(out, "manifest.json")))
                    shard_bytes = sum(s["bytes"] for s in manifest["shards"])
                    outs[label] = out
                    print(f"2. Beam job ({label:6s}, 2 workers): {args.images / seconds:6.1f} images/s end to end "
                          f"({seconds:.1f} s), {args.images / max(seconds - baseline, 1e-9):6.1f} images/s without the "
                          f"{baseline:.1f} s of a 1-record job; "
                          f"shard bytes/image {shard_bytes / args.images / 1024:.1f} KiB")
            seed = SeedCollator(processor, kind, image_dir)
            raw_records = [json.loads(line) for line in open(records)]
            seed_rate = loader_rate(raw_records, seed)
            print(f"3. seed collator (processor per batch, 2 workers): {seed_rate:7.1f} images/s")
            for label, out in outs.items():
                dataset = ShardDataset(out, columns=vision_columns(out))
                ours = loader_rate(dataset, VisionCollator.from_manifest(out))
                print(f"   VisionCollator over shards ({label:6s}, 2 workers): {ours:7.1f} images/s "
                      f"({ours / seed_rate:.1f}x the seed)")
                results[(kind, label)] = ours
            results[(kind, "seed")] = seed_rate
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
