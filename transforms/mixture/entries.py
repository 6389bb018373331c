"""The datasets of a job and their shares: :class:`DatasetEntry` and :class:`Mixture` (frozen, validated).

A job config file (``python -m pipeline --config job.yaml``, ``docs/config.md``) lists datasets; each
entry names its input files, how its records read (its own ``TaskSpec``: record format, field and role
maps, system prompt), its own chat template variables, and its share of the mixture:

* ``weight``: the dataset's share of the output, relative to the other datasets' weights (all entries
  give one, or none does); the job makes ``target_d = round(p_d * T)`` examples of dataset ``d``
  (``p_d = weight_d / sum(weights)``) where ``T`` is ``total_records`` when given, else set by the
  stopping strategy: ``first_exhausted`` (``T = min_d read_d / p_d``: the dataset that runs out first
  is taken whole, the others subsampled, nothing repeated) or ``all_exhausted`` (``T = max_d read_d / p_d``:
  the largest dataset for its weight is taken whole, the others repeated);
* ``max_records``: at most this many of the dataset's records (a uniform, seeded subsample);
* ``epochs``: every record this many times (``1.5``: every record once, and half of them, seeded,
  a second time); with ``max_records`` too, the subsample is repeated.

How a target becomes per-record decisions (never dependent on arrival order): :mod:`.selection`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from transforms.mixture.quota import STOPPING_STRATEGIES, exact_fraction
from transforms.shard_format import canonical_json
from transforms.tasks.spec import TaskSpec

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# template variables the record formats reserve (a record's own chat_template_kwargs may not set them either)
RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def template_kwargs_text(kwargs: Mapping[str, Any] | None) -> str:
    """Canonical JSON text of a template-variables object (``""`` for none); ``ValueError`` when invalid."""
    if not kwargs:
        return ""
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) and k for k in kwargs):
        raise ValueError("chat_template_kwargs must be an object with non-empty string keys")
    reserved = sorted(RESERVED_TEMPLATE_KWARGS & set(kwargs))
    if reserved:
        raise ValueError(f"chat_template_kwargs may not set {', '.join(reserved)}")
    try:
        return canonical_json(dict(kwargs))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"chat_template_kwargs must hold JSON values: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    """One dataset of a job.

    Attributes:
        name: the entry's name (letters, digits, ``.``, ``_``, ``-``; at most 64 characters): the rows'
            ``dataset`` column.
        patterns: its input globs (local or any Beam filesystem).
        task: how its records parse (:class:`~transforms.tasks.spec.TaskSpec`: the job's task with this
            dataset's record format options).
        template_kwargs: canonical JSON of its chat template variables (``""``: none); a record's own
            ``chat_template_kwargs`` wins over them, they win over the job's ``--chat-template-kwargs``.
        weight, max_records, epochs: its share (module docstring); ``None`` when not given.
        files: the files its patterns matched at launch (sorted; empty until then).
    """

    name: str
    patterns: tuple[str, ...]
    task: TaskSpec = field(default_factory=TaskSpec)
    template_kwargs: str = ""
    weight: float | None = None
    max_records: int | None = None
    epochs: float | None = None
    files: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise ValueError(f"dataset name {self.name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                             "(starting with a letter or digit)")
        patterns = tuple(self.patterns) if isinstance(self.patterns, (list, tuple)) else None
        if not patterns or not all(isinstance(p, str) and p.strip() for p in patterns):
            raise ValueError(f"dataset {self.name}: files must be one or more non-empty globs")
        object.__setattr__(self, "patterns", patterns)
        object.__setattr__(self, "files", tuple(self.files))
        if self.weight is not None and (not _is_number(self.weight) or self.weight <= 0):
            raise ValueError(f"dataset {self.name}: weight must be a number > 0, got {self.weight!r}")
        if self.max_records is not None and (isinstance(self.max_records, bool) or not isinstance(
                self.max_records, int) or self.max_records < 1):
            raise ValueError(f"dataset {self.name}: max_records must be an integer >= 1, got {self.max_records!r}")
        if self.epochs is not None and (not _is_number(self.epochs) or self.epochs <= 0 or self.epochs > 1000):
            raise ValueError(f"dataset {self.name}: epochs must be a number in (0, 1000], got {self.epochs!r}")
        if self.weight is not None and (self.max_records is not None or self.epochs is not None):
            raise ValueError(f"dataset {self.name}: give weight, or max_records/epochs, not both (a weight sets "
                             "the dataset's share of the mixture; max_records/epochs set its count)")
        if self.template_kwargs:
            template_kwargs_text(json.loads(self.template_kwargs))
        object.__setattr__(self, "_kwargs", json.loads(self.template_kwargs) if self.template_kwargs else {})

    @property
    def kwargs(self) -> dict[str, Any]:
        """Its chat template variables (a dict; do not mutate)."""
        return self._kwargs

    def share_json(self) -> dict[str, Any]:
        """The share options given (``{}``: the whole dataset once)."""
        return {key: value for key, value in (("weight", self.weight), ("max_records", self.max_records),
                                              ("epochs", self.epochs)) if value is not None}

    def options_json(self) -> dict[str, Any]:
        """How its records read: the chat format options, or the task's options."""
        spec = self.task
        return spec.format_options.to_json() if spec.is_chat else spec.options.to_json()

    def to_json(self) -> dict[str, Any]:
        """What reaches its rows (the config fingerprint's part; paths are not in it)."""
        data = {"name": self.name, "options": self.options_json(), **self.share_json()}
        if self.template_kwargs:
            data["chat_template_kwargs"] = self._kwargs
        return data

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_kwargs"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        object.__setattr__(self, "_kwargs", json.loads(self.template_kwargs) if self.template_kwargs else {})


@dataclass(frozen=True, kw_only=True)
class Mixture:
    """The datasets of a job and how they mix (see the module docstring).

    Attributes:
        datasets: the entries, in the config file's order (at least one; names unique).
        seed: seeds every subsampling and repeat decision (``transforms.mixture.selection``).
        stopping_strategy: ``first_exhausted`` or ``all_exhausted`` (weights only).
        total_records: the mixture's size ``T`` (weights only; overrides the stopping strategy).
    """

    datasets: tuple[DatasetEntry, ...]
    seed: int = 0
    stopping_strategy: str = "first_exhausted"
    total_records: int | None = None

    def __post_init__(self):
        datasets = tuple(self.datasets)
        object.__setattr__(self, "datasets", datasets)
        if not datasets:
            raise ValueError("datasets: list at least one dataset")
        names = [d.name for d in datasets]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"datasets: the name {repeated[0]!r} is used twice; every dataset needs its own name")
        weighted = [d.weight is not None for d in datasets]
        if any(weighted) and not all(weighted):
            missing = [d.name for d in datasets if d.weight is None]
            raise ValueError(f"datasets: {', '.join(missing)} without a weight while others have one; give every "
                             "dataset a weight, or none (then use max_records/epochs)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.stopping_strategy not in STOPPING_STRATEGIES:
            raise ValueError(f"stopping_strategy must be one of {', '.join(STOPPING_STRATEGIES)}, "
                             f"got {self.stopping_strategy!r}")
        if self.total_records is not None:
            if isinstance(self.total_records, bool) or not isinstance(self.total_records, int) \
                    or self.total_records < 1:
                raise ValueError(f"total_records must be an integer >= 1, got {self.total_records!r}")
            if not self.weighted:
                raise ValueError("total_records sets the size of a weighted mixture: give the datasets weights")
        tasks = {d.task.name for d in datasets}
        if len(tasks) > 1:
            raise ValueError(f"datasets of different tasks ({', '.join(sorted(tasks))}) cannot share one output: "
                             "their rows have different columns; run one job per task")
        object.__setattr__(self, "_by_file", None)

    # -- what the mixture needs ------------------------------------------------------------------------
    @property
    def weighted(self) -> bool:
        return self.datasets[0].weight is not None

    @property
    def needs_counts(self) -> bool:
        """Whether the per-record decisions depend on how many records each dataset has (weights,
        ``max_records``, fractional ``epochs``): the job then counts every file's records first."""
        return self.weighted or any(d.max_records is not None or (d.epochs is not None and d.epochs != int(d.epochs))
                                    for d in self.datasets)

    @property
    def may_repeat(self) -> bool:
        """Whether some record may be written more than once (known at launch)."""
        if self.weighted:
            return self.stopping_strategy == "all_exhausted" or self.total_records is not None
        return any(d.epochs is not None and d.epochs > 1 for d in self.datasets)

    # -- files -----------------------------------------------------------------------------------------
    def with_files(self, files: Mapping[str, tuple[str, ...]]) -> "Mixture":
        """The mixture with each dataset's matched files (``{name: files}``)."""
        return replace(self, datasets=tuple(replace(d, files=tuple(sorted(files.get(d.name, ()))))
                                            for d in self.datasets))

    def index_of(self, source: str) -> int:
        """The position of the dataset whose files include ``source`` (``KeyError`` for another file)."""
        by_file = self._by_file
        if by_file is None:
            by_file = {path: i for i, d in enumerate(self.datasets) for path in d.files}
            object.__setattr__(self, "_by_file", by_file)
        return by_file[source]

    def entry_of(self, source: str) -> DatasetEntry:
        return self.datasets[self.index_of(source)]

    def task_of(self, source: str) -> TaskSpec:
        """How the records of file ``source`` parse (its dataset's ``TaskSpec``)."""
        return self.entry_of(source).task

    # -- reporting ---------------------------------------------------------------------------------------
    def asked_shares(self) -> dict[str, float] | None:
        """``{name: weight / sum(weights)}`` (``None`` without weights)."""
        if not self.weighted:
            return None
        total = sum(exact_fraction(d.weight) for d in self.datasets)
        return {d.name: float(exact_fraction(d.weight) / total) for d in self.datasets}

    def to_json(self) -> dict[str, Any]:
        """What reaches the rows (part of the config fingerprint): the datasets' options and shares, and the
        seed, stopping strategy and total only where they decide something."""
        data: dict[str, Any] = {"datasets": [d.to_json() for d in self.datasets]}
        if self.needs_counts:
            data["seed"] = self.seed
        if self.weighted:
            data["stopping_strategy"] = self.stopping_strategy if self.total_records is None else None
            data["total_records"] = self.total_records
        return data

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_by_file"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        object.__setattr__(self, "_by_file", None)
