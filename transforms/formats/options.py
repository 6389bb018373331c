"""Format options (``--format``, ``--field-map``, ``--role-map``, ``--system-prompt``), validated."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from transforms.formats.fields import (
    FUNCTION_CALL,
    MESSAGE_FIELDS,
    ROLES,
    TOP_LEVEL_FIELDS,
    VISION_FIELDS,
)
from transforms.formats.registry import ALL_FORMATS


class FrozenMap(Mapping):
    """A small immutable, hashable and picklable str -> str mapping (sorted by key)."""

    __slots__ = ("_items", "_dict")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = tuple(sorted((k, v) for k, v in pairs))
        self._dict = dict(self._items)

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def get(self, key: str, default=None):
        # the dict's own lookup (Mapping.get goes through __getitem__ and a KeyError per miss: a record's
        # conversion looks up about 18 field names, most of them not remapped)
        return self._dict.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._dict!r})"

    def __reduce__(self):
        return (FrozenMap, (self._items,))


def _as_frozen_map(value: Any, option: str) -> FrozenMap:
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, str):
        raise ValueError(f"{option} must be a mapping; parse CLI text with parse_mapping_option()")
    try:
        pairs = list(value.items()) if isinstance(value, Mapping) else [tuple(p) for p in value]
    except TypeError:
        raise ValueError(f"{option} must be a mapping of str to str, got {type(value).__name__}") from None
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(x, str) and x for x in pair):
            raise ValueError(f"{option}: every key and value must be a non-empty string, got {pair!r}")
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{option}: duplicate keys in {pairs!r}")
    return FrozenMap(pairs)


@dataclass(frozen=True, kw_only=True)
class FormatOptions:
    """How to read records; validated on construction (``ValueError`` on bad configuration).

    ``field_map``: canonical field name -> the name used in the dataset (top-level fields
    ``messages, conversations, instruction, input, output, system, history, prompt, completion,
    tools`` and message fields ``role, content, from, value``).
    ``role_map``: source role -> canonical role (extends/overrides :data:`DEFAULT_ROLE_MAP`).
    ``system_prompt``: system message for records that have none.
    ``images``: accept images (a vision job); ``field_map`` may then also rename ``images, image,
    question, answer``.
    """

    format: str = "auto"
    field_map: Mapping[str, str] = field(default_factory=FrozenMap)
    role_map: Mapping[str, str] = field(default_factory=FrozenMap)
    system_prompt: str | None = None
    images: bool = False

    def __post_init__(self) -> None:
        if self.format not in ALL_FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose one of {', '.join(ALL_FORMATS)}")
        fmap = _as_frozen_map(self.field_map, "field_map")
        for key in fmap:
            if key not in TOP_LEVEL_FIELDS and key not in MESSAGE_FIELDS and key not in VISION_FIELDS:
                raise ValueError(
                    f"field_map: unknown field {key!r}; known fields: "
                    f"{', '.join(TOP_LEVEL_FIELDS + MESSAGE_FIELDS + VISION_FIELDS)}")
        for group in (TOP_LEVEL_FIELDS, MESSAGE_FIELDS, VISION_FIELDS):
            used: dict[str, str] = {}
            for canon in group:
                src = fmap.get(canon, canon)
                if src in used:
                    raise ValueError(f"field_map: {used[src]!r} and {canon!r} would both read "
                                     f"the dataset field {src!r}")
                used[src] = canon
        rmap = _as_frozen_map(self.role_map, "role_map")
        for src, dst in rmap.items():
            if dst not in ROLES and dst != FUNCTION_CALL:
                raise ValueError(f"role_map: {src!r} -> {dst!r}: target must be one of "
                                 f"{', '.join(ROLES + (FUNCTION_CALL,))}")
        if self.system_prompt is not None and (
                not isinstance(self.system_prompt, str) or not self.system_prompt.strip()):
            raise ValueError("system_prompt must be a non-empty string or None")
        object.__setattr__(self, "field_map", fmap)
        object.__setattr__(self, "role_map", rmap)

    def key(self, canonical: str) -> str:
        """The dataset's name for a canonical field."""
        # the FrozenMap's dict directly (one call less; a record's conversion looks up about 18 names)
        return self.field_map._dict.get(canonical, canonical)

    def to_json(self) -> dict:
        data = {
            "format": self.format,
            "field_map": dict(self.field_map),
            "role_map": dict(self.role_map),
            "system_prompt": self.system_prompt,
        }
        if self.images:  # only vision jobs carry the key (text-only fingerprints are unchanged)
            data["images"] = True
        return data
