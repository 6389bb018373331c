"""Job-side pixel geometry: the resize (and pad, crop) the processor applies, on ``uint8`` RGB arrays."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected
from transforms.vision.config import DYNAMIC, FIXED, VisionConfig


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
