"""What a record format is: a name, a converter, and the ``auto`` detection rule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class RecordFormat:
    """A record format of the registry (:mod:`transforms.formats.registry`).

    Attributes:
        name: the ``--format`` value.
        convert: ``(record, MessageReader) -> list[MessageDraft]``: the record's messages, before the
            checks every format shares (:func:`transforms.formats.convert.to_conversation`).
        matches: ``(record dict, FormatOptions) -> bool``: whether ``auto`` picks this format.
        vision_only: the format carries images and needs a vision job (``--processor``).
        accepts_list: a record may be a bare list of messages.
    """

    name: str
    convert: Callable[[Any, Any], list]
    matches: Callable[[dict, Any], bool]
    vision_only: bool = False
    accepts_list: bool = False
