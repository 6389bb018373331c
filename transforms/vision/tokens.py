"""How many tokens an image becomes, and their text (the processor's own rules, per family)."""
from __future__ import annotations

from dataclasses import replace

from transforms.vision.config import DYNAMIC, VisionConfig, VisionConfigError


def token_id(tokenizer, token: str, what: str) -> int:
    """The id of ``token``, which must be a single token of ``tokenizer`` (``VisionConfigError`` otherwise)."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise VisionConfigError(
            f"the tokenizer does not have {token!r} ({what}) as a single token (it encodes to {ids[:8]}); "
            "use the processor's own tokenizer (omit --tokenizer) or a tokenizer that defines it"
        )
    return int(ids[0])


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



def with_token_ids(config: VisionConfig, tokenizer) -> VisionConfig:
    """Re-check (and refresh) the image token ids against ``tokenizer`` (workers call this)."""
    updates = {"image_token_id": token_id(tokenizer, config.image_token, "image token")}
    if config.family == DYNAMIC:
        updates["vision_start_id"] = token_id(tokenizer, config.vision_start_token, "vision start")
        updates["vision_end_id"] = token_id(tokenizer, config.vision_end_token, "vision end")
    changed = {k: v for k, v in updates.items() if getattr(config, k) != v}
    if changed:
        raise VisionConfigError(f"image token ids differ between the processor config and the tokenizer: {changed}")
    return replace(config, **updates)
