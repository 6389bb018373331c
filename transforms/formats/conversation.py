"""The example every record format produces: :class:`Conversation`, and the image position tag."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IMAGE_TAG = "<image>"  # every image position in a Conversation's text (vision jobs)


@dataclass(frozen=True)
class Conversation:
    """A canonical chat: messages, optional tool schemas, the detected format, trainable flags.

    In a vision job every image position is the text :data:`IMAGE_TAG` and ``images`` lists the
    references in the same order (paths, data URIs, or ``{"bytes", "path"}`` objects;
    :mod:`transforms.images` resolves them).
    """

    messages: tuple[dict, ...]
    tools: tuple[dict, ...] | None
    format: str
    trainable: tuple[bool, ...]
    images: tuple = ()
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
