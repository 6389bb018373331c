"""The packing options of a job (``--pack-length``, ``--pack-strategy``) and which tasks can be packed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transforms.packing.bins import STRATEGIES

DEFAULT_STRATEGY = "bfd"


@dataclass(frozen=True, kw_only=True)
class PackingOptions:
    """How the job packs rows.

    Attributes:
        length: the capacity of a packed row in tokens (``--pack-length``); every packed row holds at
            most this many tokens, and the runtime pads packed rows to exactly this width.
        strategy: ``bfd`` (best-fit decreasing, default), ``ffd`` (first-fit decreasing) or
            ``sequential`` (see :mod:`transforms.packing.bins`).
    """

    length: int
    strategy: str = DEFAULT_STRATEGY

    def __post_init__(self):
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 2:
            raise ValueError(f"--pack-length must be an integer >= 2, got {self.length!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--pack-strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")

    def to_json(self) -> dict[str, Any]:
        """What enters the config fingerprint (``JobConfig.extra["packing"]``)."""
        return {"length": self.length, "strategy": self.strategy}

    @classmethod
    def from_json(cls, data) -> "PackingOptions":
        return cls(length=int(data["length"]), strategy=str(data.get("strategy", DEFAULT_STRATEGY)))


def packable_tasks() -> list[str]:
    """The names of the registered tasks whose rows can be packed."""
    from transforms.tasks import TASKS

    return sorted(name for name, cls in TASKS.items() if getattr(cls, "packable", False))


def check_task_packable(name: str) -> None:
    """Raise ``ValueError`` unless rows of the task registered as ``name`` can be packed.

    A task opts in with a class attribute ``packable = True``: its rows are causal-LM rows (``input_ids``
    and unshifted ``labels`` of one sequence, where a token attends to the tokens before it) that can be
    concatenated under a block-diagonal attention mask. A task that does not say so (pairs of sequences,
    encoder-decoder rows, one label per row, bidirectional attention) is refused.
    """
    from transforms.tasks import task_class

    if not getattr(task_class(name), "packable", False):
        raise ValueError(f"--pack-length does not apply to --task {name}: packing concatenates rows that are single "
                         f"causal sequences with their own labels (tasks that pack: {', '.join(packable_tasks())}); "
                         "see docs/packing.md")
