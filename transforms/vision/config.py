"""The processor configuration: :class:`VisionConfig` (family, image tokens, geometry, normalisation)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

FIXED = "fixed"
DYNAMIC = "dynamic"
FAMILIES = (FIXED, DYNAMIC)

QWEN_VISION_START = "<|vision_start|>"
QWEN_VISION_END = "<|vision_end|>"
QWEN_IMAGE_PAD = "<|image_pad|>"
BICUBIC = 3  # PIL's resampling filter number


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
    resample: int = BICUBIC
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
