"""Shared helpers of the vision tests (no tests here): processors built offline, image files.

Both processors pair a PIL image processor (no weights, no torchvision) with the bundled
real-vocabulary tokenizer and are saved to a folder, so tests load them through the same
``--processor DIR`` path as users:

* ``llava_dir()``: ``LlavaProcessor`` + ``CLIPImageProcessor`` (224 crop, patch 14, strategy
  ``default``, one extra CLS token: 256 image tokens), tokenizer with ``<image>`` added;
* ``qwen_dir()``: ``Qwen2VLImageProcessor`` (min 56*56, max 28*28*256 pixels) + the bundled
  tokenizer (``<|vision_start|>`` 151652, ``<|image_pad|>`` 151655, ``<|vision_end|>`` 151653).
"""
from __future__ import annotations

import atexit
import functools
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

LLAMAFACTORY = "vlm/llamafactory/data"


def _tempdir(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.lru_cache(maxsize=None)
def llava_dir() -> str:
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from transforms.tokenizer_loading import bundled_tokenizer

    tokenizer = bundled_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    folder = _tempdir("llava_processor_")
    LlavaProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(str(folder))
    return str(folder)


@functools.lru_cache(maxsize=None)
def qwen_dir() -> str:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from transforms.tokenizer_loading import bundled_tokenizer

    folder = _tempdir("qwen_processor_")
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 256).save_pretrained(str(folder))
    bundled_tokenizer().save_pretrained(str(folder))
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    return str(folder)


@functools.lru_cache(maxsize=None)
def loaded(kind: str):
    """``(tokenizer, VisionConfig)`` loaded from the processor folder like the job does."""
    from transforms.tokenizer_loading import load_tokenizer
    from transforms.vision.processors import load_vision_config

    folder = llava_dir() if kind == "llava" else qwen_dir()
    tokenizer = load_tokenizer(folder)
    return tokenizer, load_vision_config(folder, tokenizer)


def builder(kind: str, **options):
    from transforms.config import TokenizeOptions
    from transforms.formats import FormatOptions
    from transforms.rows import RowBuilder
    from transforms.vision.part import ImageOptions, ImagePart

    tokenizer, vision = loaded(kind)
    image_keys = {"image_root", "max_image_pixels", "max_image_bytes", "store_pixels", "encoding"}
    image_options = ImageOptions(**{k: v for k, v in options.items() if k in image_keys})
    tokenize = TokenizeOptions(**{k: v for k, v in options.items() if k not in image_keys and k != "format"})
    images = ImagePart(tokenizer=tokenizer, vision=vision, image_options=image_options)
    return RowBuilder(tokenizer=tokenizer, format_options=FormatOptions(format=options.get("format", "auto")),
                      tokenize_options=tokenize, images=images)


def raw(value, source: str, index: int = 0):
    from transforms.reading import RawRecord

    return RawRecord(source, index, value)


def png_bytes(size=(40, 30), color=(200, 30, 30), mode="RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: Path, size=(40, 30), color=(200, 30, 30), mode="RGB", fmt="PNG", **save) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(str(path), format=fmt, **save)
    return path


def trained_runs(labels) -> list[list[int]]:
    runs, current = [], []
    for value in list(labels) + [-100]:
        if value != -100:
            current.append(int(value))
        elif current:
            runs.append(current)
            current = []
    return runs


def image_token_positions(row, vision) -> np.ndarray:
    return np.flatnonzero(np.asarray(row["input_ids"]) == vision.image_token_id)
