"""Processor families: read a ``transformers`` processor into a :class:`VisionConfig` (launch time).

:data:`FAMILY_READERS` lists the families in the order they are tried: a reader says whether an
image processor belongs to its family and reads its settings. A new image family is a reader
here plus its rules in :mod:`transforms.vision.tokens` and :mod:`transforms.vision.resize`.
``transformers`` is imported only inside :func:`load_processor`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from transforms.formats.conversation import IMAGE_TAG
from transforms.vision.config import (
    BICUBIC,
    DYNAMIC,
    FIXED,
    QWEN_IMAGE_PAD,
    QWEN_VISION_END,
    QWEN_VISION_START,
    VisionConfig,
    VisionConfigError,
)
from transforms.vision.tokens import token_id


def _as_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    return {k: v for k, v in vars(value).items() if v is not None}


def _read_json(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    return {}


def _dynamic_config(image_processor, tokenizer, *, settings: Mapping[str, Any], common: dict[str, Any],
                    min_pixels: int | None, max_pixels: int | None) -> VisionConfig:
    """Qwen2-VL style: ``smart_resize`` within min..max pixels, a grid, start/pad/end tokens."""
    ip_class = type(image_processor).__name__
    size = _as_dict(getattr(image_processor, "size", None))
    lo = size.get("shortest_edge", getattr(image_processor, "min_pixels", None))
    hi = size.get("longest_edge", getattr(image_processor, "max_pixels", None))
    lo = min_pixels if min_pixels is not None else lo
    hi = max_pixels if max_pixels is not None else hi
    if lo is None or hi is None:
        raise VisionConfigError(f"{ip_class}: cannot read min/max pixels from its size {size}")
    if lo > hi:
        raise VisionConfigError(f"min pixels {lo} > max pixels {hi}")
    if not common["do_resize"]:
        raise VisionConfigError(f"{ip_class} with do_resize=False is not supported "
                                "(sizes must be multiples of patch*merge)")
    image_token = settings.get("image_token") or QWEN_IMAGE_PAD
    start = settings.get("vision_start_token") or QWEN_VISION_START
    end = settings.get("vision_end_token") or QWEN_VISION_END
    return VisionConfig(
        family=DYNAMIC, image_token=image_token, image_token_id=token_id(tokenizer, image_token, "image token"),
        vision_start_token=start, vision_start_id=token_id(tokenizer, start, "vision start"),
        vision_end_token=end, vision_end_id=token_id(tokenizer, end, "vision end"),
        patch_size=int(image_processor.patch_size), merge_size=int(image_processor.merge_size),
        temporal_patch_size=int(image_processor.temporal_patch_size), min_pixels=int(lo), max_pixels=int(hi),
        **common,
    )


def _fixed_config(image_processor, tokenizer, *, settings: Mapping[str, Any], common: dict[str, Any],
                  min_pixels: int | None, max_pixels: int | None) -> VisionConfig:
    """LLaVA style: resize, optional pad/crop to one size, ``<image>`` repeated a fixed count."""
    ip_class = type(image_processor).__name__
    if min_pixels is not None or max_pixels is not None:
        raise VisionConfigError("--min-pixels/--max-pixels apply to dynamic-resolution processors (Qwen-VL) only")
    patch = settings.get("patch_size")
    if patch is None:
        raise VisionConfigError(
            f"cannot tell how many tokens an image becomes with {ip_class}: no patch_size in the processor "
            "(supported: LlavaProcessor-style fixed-count processors and Qwen2-VL-style dynamic processors)"
        )
    size = _as_dict(getattr(image_processor, "size", None))
    crop = _as_dict(getattr(image_processor, "crop_size", None))
    resize_short = resize_hw = None
    if common["do_resize"]:
        if size.get("height") and size.get("width"):
            resize_hw = (int(size["height"]), int(size["width"]))
        elif size.get("shortest_edge") and not size.get("longest_edge"):
            resize_short = int(size["shortest_edge"])
        else:
            raise VisionConfigError(f"{ip_class}: unsupported resize size {size}")
    crop_hw = None
    if getattr(image_processor, "do_center_crop", False):
        if not (crop.get("height") and crop.get("width")):
            raise VisionConfigError(f"{ip_class}: unsupported crop_size {crop}")
        crop_hw = (int(crop["height"]), int(crop["width"]))
    pad_square = bool(getattr(image_processor, "do_pad", False)) and hasattr(image_processor, "pad_to_square")
    if getattr(image_processor, "do_pad", False) and not pad_square and crop_hw is None and resize_hw is None:
        raise VisionConfigError(f"{ip_class}: do_pad with variable image sizes is not supported")
    if crop_hw is None and resize_hw is None:
        raise VisionConfigError(f"{ip_class}: images of a fixed-count family must end at one size "
                                "(crop or fixed resize)")
    image_token = settings.get("image_token") or IMAGE_TAG
    return VisionConfig(
        family=FIXED, image_token=image_token, image_token_id=token_id(tokenizer, image_token, "image token"),
        resize_shortest_edge=resize_short, resize_hw=resize_hw, crop_hw=crop_hw, pad_to_square=pad_square,
        patch_size=int(patch), num_additional_image_tokens=int(settings.get("num_additional_image_tokens") or 0),
        vision_feature_select_strategy=settings.get("vision_feature_select_strategy"),
        **common,
    )


@dataclass(frozen=True)
class FamilyReader:
    """One processor family: ``matches(image_processor)`` and ``read(image_processor, tokenizer, ...)``."""

    family: str
    matches: Callable[[Any], bool]
    read: Callable[..., VisionConfig]


def _is_dynamic(image_processor) -> bool:
    return all(getattr(image_processor, attr, None) is not None
               for attr in ("merge_size", "temporal_patch_size", "patch_size"))


FAMILY_READERS = (
    FamilyReader(DYNAMIC, _is_dynamic, _dynamic_config),
    FamilyReader(FIXED, lambda image_processor: True, _fixed_config),  # needs a patch_size; checked when read
)


def vision_config_from_processor(image_processor, tokenizer, *, processor=None,
                                 processor_kwargs: Mapping[str, Any] | None = None, name: str = "",
                                 min_pixels: int | None = None, max_pixels: int | None = None) -> VisionConfig:
    """Build a :class:`VisionConfig` from a ``transformers`` image processor (+ processor settings).

    Args:
        image_processor: e.g. ``CLIPImageProcessor(Pil)``, ``LlavaImageProcessor(Pil)``,
            ``Qwen2VLImageProcessor(Pil)``.
        tokenizer: the job's tokenizer (the image tokens must be single tokens in it).
        processor: the full processor when one could be built (``LlavaProcessor``); its
            ``patch_size``, ``vision_feature_select_strategy``, ``num_additional_image_tokens`` and
            ``image_token`` are used.
        processor_kwargs: the same settings as a mapping (``processor_config.json``) when no
            processor object exists.
        min_pixels / max_pixels: override the dynamic family's resize limits.
    """
    settings = dict(processor_kwargs or {})
    if processor is not None:
        for key in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_token"):
            if getattr(processor, key, None) is not None:
                settings[key] = getattr(processor, key)
    ip_class = type(image_processor).__name__
    ip_dict = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {}
    ip_text = json.dumps(ip_dict, sort_keys=True, default=str)
    common = dict(
        do_rescale=bool(getattr(image_processor, "do_rescale", True)),
        rescale_factor=float(getattr(image_processor, "rescale_factor", 1 / 255) or 1 / 255),
        do_normalize=bool(getattr(image_processor, "do_normalize", True)),
        image_mean=tuple(getattr(image_processor, "image_mean", None) or (0.0, 0.0, 0.0)),
        image_std=tuple(getattr(image_processor, "image_std", None) or (1.0, 1.0, 1.0)),
        resample=int(image_processor.resample if getattr(image_processor, "resample", None) is not None else BICUBIC),
        do_resize=bool(getattr(image_processor, "do_resize", True)),
        processor_name=name,
        processor_class=type(processor).__name__ if processor is not None else str(settings.get("processor_class", "")),
        image_processor_class=ip_class,
        image_processor=ip_text,
    )
    if len(common["image_mean"]) == 1:
        common["image_mean"] = common["image_mean"] * 3
    if len(common["image_std"]) == 1:
        common["image_std"] = common["image_std"] * 3
    family = next(reader for reader in FAMILY_READERS if reader.matches(image_processor))
    return family.read(image_processor, tokenizer, settings=settings, common=common, min_pixels=min_pixels,
                       max_pixels=max_pixels)


def _processor_settings(spec: str) -> dict[str, Any]:
    """Top-level settings of ``processor_config.json`` (local folder, or a hub id in the local cache)."""
    if os.path.isdir(spec):
        config = _read_json(spec, "processor_config.json")
    else:
        try:
            from transformers.utils import cached_file

            path = cached_file(spec, "processor_config.json", _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except Exception:  # noqa: BLE001 - no such file: the processor object is loaded instead
            path = None
        config = _read_json(os.path.dirname(path), os.path.basename(path)) if path else {}
    return {k: v for k, v in config.items() if not isinstance(v, dict)}


def load_processor(spec: str, *, trust_remote_code: bool = False):
    """``(processor or None, image_processor, settings)`` for a local folder or hub id.

    The image processor (``AutoImageProcessor``) plus the settings of ``processor_config.json``
    (``patch_size``, ``vision_feature_select_strategy``, ``image_token``...). The full processor
    (``AutoProcessor``, which loads the tokenizer once more) only when a fixed-count processor's
    settings are not in that file. ``Qwen2VLProcessor`` itself cannot be built without torchvision
    (its video processor) and is never needed.
    """
    from transformers import AutoImageProcessor, AutoProcessor

    settings = _processor_settings(spec)
    try:
        image_processor = AutoImageProcessor.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise VisionConfigError(f"cannot load the image processor of {spec!r}: {type(exc).__name__}: {exc}") from exc
    if _is_dynamic(image_processor) or "patch_size" in settings:
        return None, image_processor, settings
    try:
        processor = AutoProcessor.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise VisionConfigError(f"cannot load processor {spec!r}: {type(exc).__name__}: {exc}") from exc
    if getattr(processor, "image_processor", None) is None:
        raise VisionConfigError(f"{spec!r} is not a vision-language processor (no image processor)")
    return processor, processor.image_processor, settings


def load_vision_config(spec: str, tokenizer, *, min_pixels: int | None = None, max_pixels: int | None = None,
                       trust_remote_code: bool = False) -> VisionConfig:
    """Load ``--processor`` (offline: a local folder, or a hub id already in the local cache)."""
    processor, image_processor, settings = load_processor(spec, trust_remote_code=trust_remote_code)
    return vision_config_from_processor(image_processor, tokenizer, processor=processor, processor_kwargs=settings,
                                        name=spec, min_pixels=min_pixels, max_pixels=max_pixels)
