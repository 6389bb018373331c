"""The registry of record formats: one module per format, looked up by name, detected in order.

A new format is a module with a ``FORMAT = RecordFormat(...)`` (see :mod:`transforms.formats.record_format`)
added to :data:`REGISTRY` (its place sets the ``--format`` choices' order) and to :data:`DETECTION_ORDER`
(where ``auto`` tries it).
"""
from __future__ import annotations

from transforms.formats import alpaca, openai, prompt_completion, sharegpt, vqa
from transforms.formats.record_format import RecordFormat

REGISTRY: dict[str, RecordFormat] = {
    module.FORMAT.name: module.FORMAT for module in (openai, sharegpt, alpaca, prompt_completion, vqa)
}
# ``auto`` on a JSON object: the first format whose rule matches (bare lists: openai or sharegpt)
DETECTION_ORDER = ("openai", "sharegpt", "prompt_completion", "alpaca", "vqa")

FORMATS = ("auto",) + tuple(name for name, f in REGISTRY.items() if not f.vision_only)
VISION_FORMATS = tuple(name for name, f in REGISTRY.items() if f.vision_only)  # image-QA triples (vision jobs)
ALL_FORMATS = FORMATS + VISION_FORMATS


def record_format(name: str) -> RecordFormat:
    """The registered format called ``name`` (``KeyError`` for an unknown one)."""
    return REGISTRY[name]
