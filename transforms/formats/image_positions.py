"""Image positions in vision records: typed image parts, ``images``/``image`` lists, ``<image>`` tags.

Only vision jobs (``FormatOptions(images=True)``) read images; text jobs reject image parts and
fields. Every image position ends up as the text :data:`~transforms.formats.conversation.IMAGE_TAG`
and the references are listed in text order (:func:`place_images`).
"""
from __future__ import annotations

import re
from typing import Any

from transforms.errors import IMAGE_COUNT_MISMATCH, INVALID_CONTENT, RecordRejected
from transforms.formats.conversation import IMAGE_TAG

NON_TEXT_PARTS = frozenset({"image", "image_url", "input_image", "video", "video_url",
                            "audio", "audio_url", "input_audio", "file", "input_file"})
MEDIA_FIELDS = ("images", "image", "videos", "video", "audios", "audio")
IMAGE_PARTS = frozenset({"image", "image_url", "input_image"})
TYPED_IMAGE = "\x00chatshards-image\x00"  # marker of a typed image part while a record is read
_IMAGE_MARKERS = re.compile(re.escape(IMAGE_TAG) + "|" + re.escape(TYPED_IMAGE))


def image_part_ref(part: dict) -> Any:
    """The image reference of a typed image part, or ``None`` when it has none."""
    for key in ("image", "image_url", "url", "path", "value"):
        ref = part.get(key)
        if isinstance(ref, dict) and not ("bytes" in ref or "path" in ref):
            ref = ref.get("url")
        if ref not in (None, "", {}):
            return ref
    return None


def record_images(record: Any, options) -> list:
    """The references of the record's ``images``/``image`` field (vision jobs)."""
    if not isinstance(record, dict):
        return []
    found = []
    for name in ("images", "image"):
        value = record.get(options.key(name))
        if value in (None, "", [], {}):
            continue
        found.append((options.key(name), value if isinstance(value, list) else [value]))
    if len(found) > 1:
        raise RecordRejected(INVALID_CONTENT, f"record has both {found[0][0]!r} and {found[1][0]!r}; "
                                              f"keep one image list")
    return list(found[0][1]) if found else []


def place_images(msgs: list, listed: list, typed: list) -> tuple:
    """Resolve image positions: tags consume ``listed`` in order, typed parts carry their own refs.

    Every position becomes the text ``<image>``; returns the references in text order.
    """
    tags = sum(m.message["content"].count(IMAGE_TAG) for m in msgs)
    if tags == 0 and listed:
        first_user = next((m for m in msgs if m.message["role"] == "user"), None)
        if first_user is None:
            raise RecordRejected(IMAGE_COUNT_MISMATCH, f"{len(listed)} image(s) but no user message to put "
                                                       f"them in")
        first_user.message["content"] = IMAGE_TAG * len(listed) + "\n" + first_user.message["content"]
        tags = len(listed)
    if tags != len(listed):
        raise RecordRejected(IMAGE_COUNT_MISMATCH, f"{tags} {IMAGE_TAG} tag(s) in the text but {len(listed)} "
                                                   f"image(s) in the record's image list")
    pending_listed = iter(listed)
    pending_typed = iter(typed)
    ordered: list = []

    def take(match: re.Match) -> str:
        ordered.append(next(pending_listed) if match.group(0) == IMAGE_TAG else next(pending_typed))
        return IMAGE_TAG

    for m in msgs:
        content = m.message["content"]
        if IMAGE_TAG in content or TYPED_IMAGE in content:
            m.message["content"] = _IMAGE_MARKERS.sub(take, content)
    return tuple(ordered)
