"""The runtime side of tasks: which collator serves a dataset, by the manifest's ``task`` section.

A chat dataset (no ``task`` section) is served by :class:`~transforms.runtime.collate.Collator`. A dataset
of another task (``python -m pipeline --task NAME``) names its collator in ``manifest["task"]["collator"]``;
:meth:`Collator.from_manifest <transforms.runtime.collate.Collator.from_manifest>` looks the name up here.
A task's runtime module registers its factory with :func:`register_collator`; ``transforms.runtime``
imports every such module, so the registry is complete once the package is imported.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

#: collator name -> ``factory(manifest, options) -> collator`` (options: the keyword arguments given to
#: ``Collator.from_manifest``)
COLLATORS: dict[str, Callable[[Mapping[str, Any], dict], Any]] = {}


def register_collator(name: str):
    """Decorator registering ``factory(manifest, options)`` as the collator of task collator ``name``."""
    def decorate(factory):
        COLLATORS[name] = factory
        return factory
    return decorate


def task_section(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The manifest's ``task`` section, or ``None`` for a chat dataset."""
    section = manifest.get("task")
    return section if isinstance(section, Mapping) and section.get("name") not in (None, "chat") else None


def collator_for(manifest: Mapping[str, Any], options: dict):
    """The collator of a dataset of a task other than chat (``ValueError`` for a collator this runtime lacks)."""
    section = task_section(manifest)
    name = section.get("collator", section["name"])
    try:
        factory = COLLATORS[name]
    except KeyError:
        raise ValueError(f"the dataset's task {section['name']!r} needs collator {name!r}, which this chatshards "
                         f"runtime does not have (known: {', '.join(sorted(COLLATORS))})") from None
    return factory(manifest, dict(options))


def default_columns(manifest: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The columns :class:`~transforms.runtime.dataset.ShardDataset` serves by default for a task's dataset
    (``manifest["task"]["columns"]``), or ``None`` for a chat dataset."""
    section = task_section(manifest)
    if section is None:
        return None
    return tuple(section.get("columns") or ("input_ids",))
