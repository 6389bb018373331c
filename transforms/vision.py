"""Processor families: how many tokens an image becomes, how it is resized, how pixels are normalised.

Two families (both read from a real ``transformers`` processor, see :func:`load_vision_config`):

``fixed`` (LLaVA style: ``LlavaProcessor`` + ``CLIPImageProcessor``/``LlavaImageProcessor``)
    Every image is (optionally padded to a square,) resized (shortest edge, or to a fixed
    height x width) and center-cropped; its placeholder is the image token (``<image>``) repeated
    ``(H // patch) * (W // patch) + num_additional_image_tokens - (1 if strategy == "default")``
    times, which is what ``LlavaProcessor`` writes.

``dynamic`` (Qwen2-VL / Qwen2.5-VL / Qwen3-VL style: ``Qwen2VLImageProcessor``)
    Every image is resized with ``smart_resize`` (both sides multiples of ``patch * merge``, pixel
    count within ``[min_pixels, max_pixels]``, aspect ratio kept, at most 200:1); its grid is
    ``(1, H / patch, W / patch)`` and its placeholder is
    ``<|vision_start|>`` + ``<|image_pad|>`` x ``grid.prod() // merge_size**2`` + ``<|vision_end|>``.

The job stores the *resized* image (uint8 RGB, what the processor's resize step produces; the
resize runs through Pillow with the processor's resampling filter exactly like the processor's
PIL backend). The runtime collator only rescales/normalises (and, for ``dynamic``, patchifies):
:func:`pixel_values`. Normalisation goes through a 256-entry lookup table per channel computed
with the processor's own float arithmetic (``float32(float64(v) * rescale)``, then
``(x - mean) / std`` in float32), so the values are bit-identical to the processor's.

This module imports ``transformers`` only inside :func:`load_vision_config` (launch time).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected

FIXED = "fixed"
DYNAMIC = "dynamic"
FAMILIES = (FIXED, DYNAMIC)
IMAGE_TAG = "<image>"  # the canonical placeholder in conversations (see formats.py)

QWEN_VISION_START = "<|vision_start|>"
QWEN_VISION_END = "<|vision_end|>"
QWEN_IMAGE_PAD = "<|image_pad|>"
_BICUBIC = 3


class VisionConfigError(ValueError):
    """The processor given with ``--processor`` cannot be used (a launch-time configuration error)."""


@dataclass(frozen=True)
class VisionConfig:
    """Everything the job and the collator need from a processor (JSON round-trips, hashable).

    Attributes mirror the processor's settings; ``image_processor`` is the canonical JSON text of
    the image processor's ``to_dict()`` (recorded in the manifest with its hash).
    """

    family: str
    image_token: str
    image_token_id: int
    vision_start_token: str | None = None
    vision_start_id: int | None = None
    vision_end_token: str | None = None
    vision_end_id: int | None = None
    # geometry
    do_resize: bool = True
    resample: int = _BICUBIC
    resize_shortest_edge: int | None = None      # fixed: resize so the short side is this
    resize_hw: tuple[int, int] | None = None     # fixed: resize to exactly (height, width)
    crop_hw: tuple[int, int] | None = None       # fixed: center crop
    pad_to_square: bool = False                  # fixed (LlavaImageProcessor do_pad)
    patch_size: int = 14
    num_additional_image_tokens: int = 0
    vision_feature_select_strategy: str | None = None
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    # normalisation
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    # provenance
    processor_name: str = ""
    processor_class: str = ""
    image_processor_class: str = ""
    image_processor: str = "{}"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise VisionConfigError(f"unknown processor family {self.family!r}")
        for name in ("resize_hw", "crop_hw"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(x) for x in value))
        object.__setattr__(self, "image_mean", tuple(float(x) for x in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(x) for x in self.image_std))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_processor"] = json.loads(self.image_processor)
        for name in ("resize_hw", "crop_hw", "image_mean", "image_std"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "VisionConfig":
        data = dict(data)
        data["image_processor"] = json.dumps(data.get("image_processor", {}), sort_keys=True, default=str)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_json` (the manifest's ``processor_hash``)."""
        text = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def uses_grid(self) -> bool:
        return self.family == DYNAMIC


# ------------------------------------------------------------------------------------------------
# geometry


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule (both sides multiples of ``factor``, pixels in range, ratio kept).

    Raises:
        ValueError: aspect ratio above 200.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} is above 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resized_hw(config: VisionConfig, height: int, width: int) -> tuple[int, int]:
    """The (height, width) the processor resizes an RGB image of this size to (before any crop)."""
    if config.family == DYNAMIC:
        return smart_resize(height, width, config.patch_size * config.merge_size, config.min_pixels, config.max_pixels)
    if config.pad_to_square:
        height = width = max(height, width)
    if not config.do_resize:
        return height, width
    if config.resize_hw is not None:
        return config.resize_hw
    return _shortest_edge_size(height, width, int(config.resize_shortest_edge))


def _pad_to_square(array: np.ndarray, color: Sequence[int]) -> np.ndarray:
    height, width = array.shape[:2]
    if height == width:
        return array
    side = max(height, width)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = np.asarray(color, dtype=np.uint8)
    if width > height:
        start = (side - height) // 2
        out[start:start + height] = array
    else:
        start = (side - width) // 2
        out[:, start:start + width] = array
    return out


def _center_crop(array: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    height, width = array.shape[:2]
    top = (height - crop_h) // 2
    left = (width - crop_w) // 2
    if top >= 0 and left >= 0 and top + crop_h <= height and left + crop_w <= width:
        return array[top:top + crop_h, left:left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)  # too small: zero-pad, then crop
    padded = np.zeros((new_h, new_w, 3), dtype=np.uint8)
    top_pad = math.ceil((new_h - height) / 2)
    left_pad = math.ceil((new_w - width) / 2)
    padded[top_pad:top_pad + height, left_pad:left_pad + width] = array
    top += top_pad
    left += left_pad
    return padded[max(top, 0):max(top, 0) + crop_h, max(left, 0):max(left, 0) + crop_w]


def prepare_pixels(config: VisionConfig, array: np.ndarray) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` -> the ``uint8`` image the processor normalises (pad, resize, crop).

    Raises:
        RecordRejected: ``bad_image`` when the processor would refuse the image (aspect ratio > 200).
    """
    from PIL import Image

    height, width = array.shape[:2]
    try:
        target = resized_hw(config, height, width)
    except ValueError as exc:
        raise RecordRejected(errors.BAD_IMAGE, f"{width}x{height}: {exc}") from None
    if config.family == FIXED and config.pad_to_square:
        array = _pad_to_square(array, tuple(int(x * 255) for x in config.image_mean))
        height, width = array.shape[:2]
    if (config.do_resize or config.family == DYNAMIC) and target != (height, width):
        image = Image.fromarray(np.ascontiguousarray(array), "RGB")
        array = np.asarray(image.resize((target[1], target[0]), resample=config.resample))
    if config.family == FIXED and config.crop_hw is not None:
        array = _center_crop(array, *config.crop_hw)
    return np.ascontiguousarray(array)


def grid_thw(config: VisionConfig, height: int, width: int) -> tuple[int, int, int]:
    """Qwen-VL grid of a *resized* image: ``(1, H // patch, W // patch)``."""
    return 1, height // config.patch_size, width // config.patch_size


def num_image_tokens(config: VisionConfig, height: int, width: int) -> int:
    """Placeholder tokens of one *resized* image (the processor's own rule, see the module doc)."""
    if config.family == DYNAMIC:
        t, h, w = grid_thw(config, height, width)
        return (t * h * w) // (config.merge_size ** 2)
    count = (height // config.patch_size) * (width // config.patch_size) + config.num_additional_image_tokens
    if config.vision_feature_select_strategy == "default":
        count -= 1
    return count


def placeholder_text(config: VisionConfig, count: int) -> str:
    """The expanded text of one image: exactly ``count`` image tokens (plus Qwen's start/end)."""
    if config.family == DYNAMIC:
        return f"{config.vision_start_token}{config.image_token * count}{config.vision_end_token}"
    return config.image_token * count


# ------------------------------------------------------------------------------------------------
# normalisation (runtime side)


def normalisation_table(config: VisionConfig) -> np.ndarray:
    """float32 ``[3, 256]``: the processor's rescale + normalise of every uint8 value, per channel."""
    values = np.arange(256, dtype=np.float64)
    if config.do_rescale:
        values = values * config.rescale_factor
    values = values.astype(np.float32)
    table = np.stack([values] * 3)
    if config.do_normalize:
        mean = np.asarray(config.image_mean, dtype=np.float32)
        std = np.asarray(config.image_std, dtype=np.float32)
        table = (table - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def _normalise_chw(array: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` through the lookup table."""
    height, width = array.shape[:2]
    if out is None:
        out = np.empty((3, height, width), dtype=np.float32)
    for c in range(3):
        np.take(table[c], array[:, :, c], out=out[c])
    return out


def patches_per_image(config: VisionConfig, height: int, width: int) -> int:
    return (height // config.patch_size) * (width // config.patch_size)


def patch_dim(config: VisionConfig) -> int:
    return 3 * config.temporal_patch_size * config.patch_size * config.patch_size


def patchify_into(config: VisionConfig, chw: np.ndarray, out: np.ndarray) -> None:
    """Qwen-VL's flattening of one normalised ``[3, H, W]`` image into ``out[(gh*gw), C*T*p*p]``."""
    c, height, width = chw.shape
    p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
    gh, gw = height // p, width // p
    patches = chw.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    view = out.reshape(gh // m, gw // m, m, m, c, t, p, p)
    view[...] = patches[:, :, :, :, :, None, :, :]


def pixel_values(config: VisionConfig, images: Sequence[np.ndarray], table: np.ndarray | None = None,
                 alloc=None) -> dict[str, np.ndarray]:
    """What the processor returns for already-resized uint8 images, as numpy arrays.

    ``fixed``: ``pixel_values`` float32 ``[n, 3, H, W]`` (all images share the crop size).
    ``dynamic``: ``pixel_values`` float32 ``[sum(gh*gw), 3*T*p*p]`` and ``image_grid_thw``
    int64 ``[n, 3]``.

    ``alloc(shape) -> float32 array`` provides the output buffer (e.g. shared memory in a
    DataLoader worker, so the batch is not copied again when sent to the main process).
    """
    table = normalisation_table(config) if table is None else table
    alloc = alloc or (lambda shape: np.empty(shape, dtype=np.float32))
    if config.family == FIXED:
        if not images:
            return {"pixel_values": np.zeros((0, 3, 0, 0), dtype=np.float32)}
        shapes = {img.shape for img in images}
        if len(shapes) != 1:
            raise ValueError(f"fixed-size family images differ in size: {sorted(shapes)}")
        height, width = images[0].shape[:2]
        out = alloc((len(images), 3, height, width))
        for i, img in enumerate(images):
            _normalise_chw(img, table, out[i])
        return {"pixel_values": out}
    grids = np.zeros((len(images), 3), dtype=np.int64)
    counts = []
    for i, img in enumerate(images):
        grids[i] = grid_thw(config, *img.shape[:2])
        counts.append(int(grids[i, 1] * grids[i, 2]))
    out = alloc((sum(counts), patch_dim(config)))
    start = 0
    for img, n in zip(images, counts):
        patchify_into(config, _normalise_chw(img, table), out[start:start + n])
        start += n
    return {"pixel_values": out, "image_grid_thw": grids}


# ------------------------------------------------------------------------------------------------
# loading a processor (launch time, uses transformers)


def _token_id(tokenizer, token: str, what: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise VisionConfigError(
            f"the tokenizer does not have {token!r} ({what}) as a single token (it encodes to {ids[:8]}); "
            "use the processor's own tokenizer (omit --tokenizer) or a tokenizer that defines it"
        )
    return int(ids[0])


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


def vision_config_from_processor(image_processor, tokenizer, *, processor=None, processor_kwargs: Mapping[str, Any] | None = None,
                                 name: str = "", min_pixels: int | None = None, max_pixels: int | None = None) -> VisionConfig:
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
        resample=int(getattr(image_processor, "resample", _BICUBIC) if getattr(image_processor, "resample", None) is not None else _BICUBIC),
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
    if _is_dynamic(image_processor):
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
            raise VisionConfigError(f"{ip_class} with do_resize=False is not supported (sizes must be multiples of patch*merge)")
        image_token = settings.get("image_token") or QWEN_IMAGE_PAD
        start = settings.get("vision_start_token") or QWEN_VISION_START
        end = settings.get("vision_end_token") or QWEN_VISION_END
        return VisionConfig(
            family=DYNAMIC, image_token=image_token, image_token_id=_token_id(tokenizer, image_token, "image token"),
            vision_start_token=start, vision_start_id=_token_id(tokenizer, start, "vision start"),
            vision_end_token=end, vision_end_id=_token_id(tokenizer, end, "vision end"),
            patch_size=int(image_processor.patch_size), merge_size=int(image_processor.merge_size),
            temporal_patch_size=int(image_processor.temporal_patch_size), min_pixels=int(lo), max_pixels=int(hi),
            **common,
        )
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
        raise VisionConfigError(f"{ip_class}: images of a fixed-count family must end at one size (crop or fixed resize)")
    image_token = settings.get("image_token") or IMAGE_TAG
    return VisionConfig(
        family=FIXED, image_token=image_token, image_token_id=_token_id(tokenizer, image_token, "image token"),
        resize_shortest_edge=resize_short, resize_hw=resize_hw, crop_hw=crop_hw, pad_to_square=pad_square,
        patch_size=int(patch), num_additional_image_tokens=int(settings.get("num_additional_image_tokens") or 0),
        vision_feature_select_strategy=settings.get("vision_feature_select_strategy"),
        **common,
    )


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


def _is_dynamic(image_processor) -> bool:
    return all(getattr(image_processor, attr, None) is not None for attr in ("merge_size", "temporal_patch_size", "patch_size"))


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


def with_token_ids(config: VisionConfig, tokenizer) -> VisionConfig:
    """Re-check (and refresh) the image token ids against ``tokenizer`` (workers call this)."""
    updates = {"image_token_id": _token_id(tokenizer, config.image_token, "image token")}
    if config.family == DYNAMIC:
        updates["vision_start_id"] = _token_id(tokenizer, config.vision_start_token, "vision start")
        updates["vision_end_id"] = _token_id(tokenizer, config.vision_end_token, "vision end")
    changed = {k: v for k, v in updates.items() if getattr(config, k) != v}
    if changed:
        raise VisionConfigError(f"image token ids differ between the processor config and the tokenizer: {changed}")
    return replace(config, **updates)


__all__ = [
    "FIXED", "DYNAMIC", "FAMILIES", "IMAGE_TAG", "VisionConfig", "VisionConfigError", "smart_resize",
    "resized_hw", "prepare_pixels", "grid_thw", "num_image_tokens", "placeholder_text", "normalisation_table",
    "pixel_values", "patches_per_image", "patch_dim", "load_processor", "load_vision_config",
    "vision_config_from_processor", "with_token_ids",
]
