"""``python -m pipeline --config job.yaml [flags]``: a job config file, read and checked before any work.

The file (YAML or JSON, local or ``gs://``; reference: ``docs/config.md``) holds:

* every flag of :mod:`pipeline.launch.cli` as a key, named without the dashes (``max_length`` and
  ``max-length`` alike), with the flag's type (switches are ``true``/``false``; ``field_map``/``role_map``
  a mapping or the flag's ``a=b,c=d`` text; ``chat_template_kwargs`` a mapping or JSON text);
* ``datasets``: a list of entries, each ``name`` and ``files`` (a glob or a list of globs) and, as needed,
  its own ``format``, ``field_map``, ``role_map``, ``system_prompt``, ``chat_template_kwargs``, ``task``
  (the job's: one output holds one task's columns) and its share (``weight``, or ``max_records`` /
  ``epochs``); with it the top-level ``seed``, ``stopping_strategy`` and ``total_records``.

Flags given beside ``--config`` override the file's keys (``--input`` replaces the file's ``input``; a job
with ``datasets`` takes its inputs from them only). The result is the same :class:`~pipeline.launch.cli.JobArgs`
the flags give, with the datasets as a :class:`~transforms.mixture.Mixture` and the resolved file (every key
after the overrides) for the manifest, so both engines and the Flex Template see only the plan.

Every mistake is a :class:`~pipeline.launch.cli.ConfigError` (one line on stderr, exit 2) naming the file, the
line, the key and what was expected: an unknown key with the closest known one, a value of the wrong type, a
key at the wrong level, two datasets with one name, a dataset without files.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import json
import math
import sys
from typing import Any, Mapping, Sequence

from pipeline.launch.cli import (
    CHAT_ONLY_FLAGS,
    ConfigError,
    JobArgs,
    build_parser,
    check_beam_args,
    config_path_of,
    job_args,
    parse_args,
    template_kwargs_of,
)
from transforms.formats import FormatOptions, parse_mapping_option
from transforms.mixture import STOPPING_STRATEGIES, DatasetEntry, Mixture, template_kwargs_text
from transforms.tasks import TASKS
from transforms.tasks.spec import TaskSpec

# Keys of a datasets entry, and of the mixture (top level).
DATASET_KEYS = ("name", "files", "format", "field_map", "role_map", "system_prompt", "chat_template_kwargs",
                "task", "weight", "max_records", "epochs")
SHARE_KEYS = ("weight", "max_records", "epochs")
MIXTURE_KEYS = ("datasets", "seed", "stopping_strategy", "total_records")
# Flags that make no sense inside the file.
NOT_IN_FILE = ("config", "help")
# Settings of the run, not of the dataset: not recorded in the manifest's resolved config (a rerun elsewhere, with
# other workers, writes the same manifest).
RUN_ONLY = ("output", "overwrite", "workers", "worker_timeout", "preview", "no_validate_inputs", "quiet", "verbose",
            "max_rejected")
# Dataset-entry keys that take the flag's value when the entry does not give its own.
INHERITED = ("format", "field_map", "role_map", "system_prompt")
CHAT_ONLY_DATASET_KEYS = ("role_map", "system_prompt", "chat_template_kwargs")
MAX_CONFIG_BYTES = 1 << 20
MAX_DATASETS = 1000


class _Problem(Exception):
    """A mistake at ``path`` (a tuple of keys and list positions); turned into one ConfigError line."""

    def __init__(self, path: tuple, message: str, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.line = line  # where known before the document's lines are (a key given twice)


# -- reading the document, with the line of every key ---------------------------------------------------------
def _yaml_lines(text: str) -> dict[tuple, int]:
    """``{path: line}`` of every mapping key and list item of a YAML (or JSON) document; raises
    ``_Problem`` on a key given twice in one mapping (YAML would keep the last one silently)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    seen: set[int] = set()

    def walk(node, path: tuple) -> None:
        if node is None or id(node) in seen or len(path) > 32:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            where: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                if key is None or key == "<<":
                    continue
                if key in where:
                    raise _Problem(path + (key,), f"{_where(path + (key,))} is given twice (lines {where[key]} and "
                                   f"{line}); keep one", line=line)
                where[key] = line
                lines[path + (key,)] = line
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):
                lines[path + (position,)] = item.start_mark.line + 1
                walk(item, path + (position,))

    walk(root, ())
    return lines


def _reject_duplicate_json_keys(pairs):
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _Problem((key,), f"the key {key!r} is given twice in one object; keep one")
    return dict(pairs)


def parse_document(text: str, *, json_file: bool) -> tuple[Any, dict[tuple, int]]:
    """``(data, lines)`` of a config document: JSON (``json_file``, or text starting with ``{``) or YAML.
    Raises ``ConfigError``-ready ``_Problem``s (empty path) for text that does not parse."""
    import yaml

    if json_file or text.lstrip().startswith("{"):
        try:
            data = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
        except json.JSONDecodeError as exc:
            raise _Problem((), f"line {exc.lineno}: not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise _Problem((), "nests too deep") from None
        try:
            lines = _yaml_lines(text)  # JSON is (nearly always) YAML: its lines come from the YAML reader
        except Exception:  # noqa: BLE001 - JSON YAML cannot read: the errors just carry no line
            lines = {}
        return data, lines
    try:
        lines = _yaml_lines(text)
        data = yaml.safe_load(text)
    except _Problem:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "").split())
        raise _Problem((), f"{where}not valid YAML: {problem}") from None
    except RecursionError:
        raise _Problem((), "nests too deep") from None
    except Exception as exc:  # noqa: BLE001 - yaml's constructors raise ValueError & co on odd scalars
        raise _Problem((), f"not valid YAML: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    return data, lines


def read_config_text(path: str) -> str:
    """The config file's text (local or any Beam filesystem, e.g. ``gs://``); ``ConfigError`` when it cannot be
    read, is larger than ``MAX_CONFIG_BYTES`` or is not UTF-8."""
    from pipeline.io.files import is_local, open_binary, storage_errors

    if not path:
        raise ConfigError("--config needs a file (a YAML or JSON job config)")
    try:
        if is_local(path):
            with open(path, "rb") as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)
        else:
            with open_binary(path) as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a folder, not a job config file") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read: {exc.strerror or exc}") from None
    except storage_errors() as exc:
        raise ConfigError(f"--config {path}: cannot be read: {' '.join(str(exc).split())[:300]}") from None
    except ValueError as exc:  # no filesystem for the scheme
        raise ConfigError(f"--config {path}: cannot be read: {exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a job config is a few lines")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.start})") from None


# -- values --------------------------------------------------------------------------------------------------
def _where(path: tuple) -> str:
    """``max_length``, ``datasets[1].weight``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the file"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()} (quote it to make it text)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _number_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads this as text: write it as a plain number, e.g. 0.001 or 1.0e-3, unquoted)"
    return ""


def expect_int(path: tuple, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(path, f"{_where(path)} must be an integer, got {_type_name(value)}{_number_hint(value)}")
    if minimum is not None and value < minimum:
        raise _Problem(path, f"{_where(path)} must be an integer >= {minimum}, got {value}")
    return value


def expect_number(path: tuple, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(path, f"{_where(path)} must be a number, got {_type_name(value)}{_number_hint(value)}")
    if not math.isfinite(value):
        raise _Problem(path, f"{_where(path)} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise _Problem(path, f"{_where(path)} must be a number > 0, got {value!r}")
    return value


def expect_str(path: tuple, value: Any) -> str:
    if not isinstance(value, str):
        raise _Problem(path, f"{_where(path)} must be a string, got {_type_name(value)}")
    return value


def expect_bool(path: tuple, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Problem(path, f"{_where(path)} is a switch: true or false, got {_type_name(value)}")
    return value


def expect_choice(path: tuple, value: Any, choices: Sequence) -> str:
    if value not in choices or not isinstance(value, str):
        guess = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise _Problem(path, f"{_where(path)} must be one of {', '.join(map(str, choices))}, got "
                       f"{_type_name(value)}{hint}")
    return value


def expect_globs(path: tuple, value: Any) -> list[str]:
    """A glob or a list of globs (non-empty strings)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _Problem(path, f"{_where(path)} must be a glob or a list of globs, got {_type_name(value)}")
    if not value:
        raise _Problem(path, f"{_where(path)} is an empty list: give at least one glob")
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _Problem(path + (position,), f"{_where(path + (position,))} must be a non-empty glob (text), got "
                           f"{_type_name(item)}")
    return list(value)


def expect_mapping_text(path: tuple, value: Any) -> dict[str, str]:
    """``field_map``/``role_map``: a mapping of strings to strings, or the flag's ``a=b,c=d`` text."""
    if isinstance(value, str):
        try:
            return parse_mapping_option(value)
        except ValueError as exc:
            raise _Problem(path, f"{_where(path)}: {exc}") from None
    if not isinstance(value, dict):
        raise _Problem(path, f"{_where(path)} must be a mapping (canonical: dataset_field) or 'a=b,c=d' text, got "
                       f"{_type_name(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str) or not key or not item:
            raise _Problem(path + (key,) if isinstance(key, str) else path,
                           f"{_where(path)} must map names to names (non-empty strings), got {key!r}: {item!r}")
    return dict(value)


def expect_kwargs(path: tuple, value: Any) -> dict:
    """``chat_template_kwargs``: a mapping, or JSON object text."""
    if isinstance(value, str):
        try:
            return template_kwargs_of(value)
        except ConfigError as exc:
            raise _Problem(path, f"{_where(path)}: {str(exc).replace('--chat-template-kwargs ', '')}") from None
    if not isinstance(value, dict):
        raise _Problem(path, f"{_where(path)} must be a mapping of template variables, got {_type_name(value)}")
    try:
        template_kwargs_text(value)
    except ValueError as exc:
        raise _Problem(path, f"{_where(path)}: {exc}") from None
    return dict(value)


def normalised(key: Any) -> Any:
    return key.replace("-", "_") if isinstance(key, str) else key


# -- the flags' keys -----------------------------------------------------------------------------------------
def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{dest: action}`` of every flag a config file may set."""
    return {action.dest: action for action in parser._actions
            if action.option_strings and action.dest not in NOT_IN_FILE}


def flag_value(path: tuple, action: argparse.Action, value: Any) -> Any:
    """A top-level key's value checked against its flag, in the form the parsed flags take."""
    dest = action.dest
    if dest == "input":
        return expect_globs(path, value)
    if dest in ("field_map", "role_map"):
        return expect_mapping_text(path, value)
    if dest == "chat_template_kwargs":
        return expect_kwargs(path, value)
    if action.nargs == 0:  # a switch (store_true, or a task's store_const)
        on = expect_bool(path, value)
        if isinstance(action, argparse._StoreConstAction) and not isinstance(action, argparse._StoreTrueAction):
            return action.const if on else action.default
        return on
    if action.choices:
        return expect_choice(path, value, tuple(action.choices))
    if action.type is int:
        return expect_int(path, value)
    if action.type is float:
        return float(expect_number(path, value))
    if action.type in (None, str):
        return expect_str(path, value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, int)) for item in value):
        value = ",".join(str(item) for item in value)  # a list where the flag takes "a,b,c"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Problem(path, f"{_where(path)} must be text or a number, got {_type_name(value)}")
    try:
        return action.type(str(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise _Problem(path, f"{_where(path)}: {exc}") from None


def _unknown_key(path: tuple, key: Any, known: Sequence[str], *, level: str) -> _Problem:
    where = _where(path[:-1])
    prefix = f"{where}: " if path[:-1] else ""
    if not isinstance(key, str):
        return _Problem(path, f"{prefix}keys are names, got {_type_name(key)}")
    guess = difflib.get_close_matches(normalised(key), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {guess[0]!r}?" if guess else (
        " (Beam options such as --runner go on the command line)" if level == "top" else
        f" (a dataset entry takes: {', '.join(DATASET_KEYS)})")
    return _Problem(path, f"{prefix}unknown key {key!r}{hint}")


# -- the document -> JobArgs ---------------------------------------------------------------------------------
@dataclasses.dataclass
class _Dataset:
    """A checked ``datasets`` entry (values as given; inherited ones filled in later)."""

    position: int
    values: dict


def _check_top(data: Mapping, actions: Mapping[str, argparse.Action]) -> tuple[dict, dict]:
    """``(flag values by dest, mixture keys)`` of the document's top level."""
    flags: dict[str, Any] = {}
    mixture: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    for key, value in data.items():
        name = normalised(key)
        path = (key,)
        if isinstance(name, str) and name in seen:
            raise _Problem(path, f"{key!r} and {seen[name]!r} are the same key; keep one")
        if isinstance(name, str):
            seen[name] = key
        if name in actions:
            flags[name] = flag_value(path, actions[name], value)
        elif name in MIXTURE_KEYS:
            mixture[name] = (path, value)
        elif name in DATASET_KEYS:
            raise _Problem(path, f"{key!r} belongs in a datasets entry (- name: ..., files: ..., {name}: ...), "
                           "not at the top level")
        elif name in NOT_IN_FILE:
            raise _Problem(path, f"{key!r} cannot be set inside a config file")
        else:
            raise _unknown_key(path, key, [*actions, *MIXTURE_KEYS], level="top")
    return flags, mixture


def _check_dataset(position: int, entry: Any, actions: Mapping[str, argparse.Action], task_formats) -> _Dataset:
    path = ("datasets", position)
    if not isinstance(entry, dict):
        raise _Problem(path, f"{_where(path)} must be a mapping with a name and files (- name: ..., files: ...), "
                       f"got {_type_name(entry)}")
    values: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    for key, value in entry.items():
        name = normalised(key)
        here = path + (key,)
        if isinstance(name, str) and name in seen:
            raise _Problem(here, f"{_where(path)}: {key!r} and {seen[name]!r} are the same key; keep one")
        if isinstance(name, str):
            seen[name] = key
        if name not in DATASET_KEYS:
            if name in actions or name in MIXTURE_KEYS:
                raise _Problem(here, f"{_where(path)}: {key!r} is a job-wide setting; set it at the top level "
                               f"(a dataset entry takes: {', '.join(DATASET_KEYS)})")
            raise _unknown_key(here, key, DATASET_KEYS, level="dataset")
        if name == "name":
            values[name] = expect_str(here, value)
        elif name == "files":
            values[name] = expect_globs(here, value)
        elif name == "format":
            values[name] = expect_choice(here, value, task_formats)
        elif name in ("field_map", "role_map"):
            values[name] = expect_mapping_text(here, value)
        elif name == "system_prompt":
            values[name] = expect_str(here, value)
        elif name == "chat_template_kwargs":
            values[name] = expect_kwargs(here, value)
        elif name == "task":
            values[name] = expect_choice(here, value, tuple(actions["task"].choices))
        elif name == "weight":
            values[name] = expect_number(here, value, positive=True)
        elif name == "max_records":
            values[name] = expect_int(here, value, minimum=1)
        elif name == "epochs":
            values[name] = expect_number(here, value, positive=True)
    if "name" not in values:
        raise _Problem(path, f"{_where(path)} has no name: every dataset needs one (its rows' dataset column)")
    label = f"{_where(path)} ({values['name']})"
    if "files" not in values:
        raise _Problem(path, f"{label} has no files: give a glob or a list of globs")
    if "weight" in values and ("max_records" in values or "epochs" in values):
        raise _Problem(path + ("weight",), f"{label}: give weight, or max_records/epochs, not both (a weight "
                       "sets the dataset's share of the mixture; max_records/epochs set its count)")
    return _Dataset(position, values)


def _check_datasets(value: Any, actions, task_formats) -> list[_Dataset]:
    path = ("datasets",)
    if isinstance(value, dict):
        raise _Problem(path, "datasets must be a list of entries (each line starting with '- name: ...'), "
                       "got a mapping")
    if not isinstance(value, list):
        raise _Problem(path, f"datasets must be a list of entries (- name: ..., files: ...), got {_type_name(value)}")
    if not value:
        raise _Problem(path, "datasets is empty: list at least one dataset")
    if len(value) > MAX_DATASETS:
        raise _Problem(path, f"datasets lists {len(value)} entries, more than {MAX_DATASETS}")
    datasets = [_check_dataset(position, entry, actions, task_formats) for position, entry in enumerate(value)]
    names: dict[str, int] = {}
    for dataset in datasets:
        name = dataset.values["name"]
        if name in names:
            raise _Problem(("datasets", dataset.position, "name"),
                           f"datasets[{dataset.position}]: the name {name!r} is already used by "
                           f"datasets[{names[name]}]; every dataset needs its own name")
        names[name] = dataset.position
    return datasets


def _mixture_options(mixture_keys: Mapping[str, tuple]) -> dict[str, Any]:
    out = {}
    for name, (path, value) in mixture_keys.items():
        if name == "seed":
            out[name] = expect_int(path, value, minimum=0)
            if out[name] >= 2 ** 63:
                raise _Problem(path, f"seed must be below 2**63, got {value}")
        elif name == "stopping_strategy":
            out[name] = expect_choice(path, value, STOPPING_STRATEGIES)
        elif name == "total_records":
            out[name] = expect_int(path, value, minimum=1)
    return out


def _override_parser() -> argparse.ArgumentParser:
    """The job's parser with no defaults: parsing the command line gives only the flags actually given."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return parser


def _format_options_of(values: Mapping, job: JobArgs) -> FormatOptions:
    fmt = values.get("format", job.format_options.format)
    field_map = values.get("field_map", job.format_options.field_map)
    role_map = values.get("role_map", job.format_options.role_map)
    system_prompt = values.get("system_prompt", job.format_options.system_prompt)
    return FormatOptions(format=fmt, field_map=field_map, role_map=role_map, system_prompt=system_prompt,
                         images=job.processor is not None)


def _dataset_entry(dataset: _Dataset, job: JobArgs) -> DatasetEntry:
    values = dataset.values
    path = ("datasets", dataset.position)
    label = f"datasets[{dataset.position}] ({values['name']})"
    task = values.get("task", job.task)
    if task != job.task:
        raise _Problem(path + ("task",), f"{label}: task {task!r} differs from the job's task {job.task!r}: one output "
                       "holds one task's rows (their columns differ); run one job per task")
    try:
        if job.task_options is None:
            spec = TaskSpec(format_options=_format_options_of(values, job))
        else:
            chat_only = [key for key in CHAT_ONLY_DATASET_KEYS if key in values]
            if chat_only:
                raise _Problem(path + (chat_only[0],), f"{label}: {', '.join(chat_only)}: chat options; "
                               f"--task {job.task} does not read them")
            options = dataclasses.replace(job.task_options, format=values.get("format", job.task_options.format),
                                          field_map=values.get("field_map", job.task_options.field_map))
            spec = TaskSpec(name=job.task, options=options)
        return DatasetEntry(name=values["name"], patterns=tuple(values["files"]), task=spec,
                            template_kwargs=template_kwargs_text(values.get("chat_template_kwargs")),
                            weight=values.get("weight"), max_records=values.get("max_records"),
                            epochs=values.get("epochs"))
    except ValueError as exc:
        raise _Problem(path, f"{label}: {exc}") from None


def _plain(value: Any) -> Any:
    """A value as JSON-able data (mappings as dicts, tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def resolved_config(namespace: argparse.Namespace, actions: Mapping, mixture: Mixture | None,
                    job: JobArgs) -> dict[str, Any]:
    """Every setting of the dataset after the flags' overrides (the manifest's ``config_file.resolved``): the
    flags of the job's task (not the run's own settings, :data:`RUN_ONLY`, nor other tasks' flags), the mixture
    and every dataset entry with its inherited values filled in."""
    from transforms.tasks import task_flags

    own = {flag.name.replace("-", "_") for flag in TASKS[job.task].flags}
    foreign = {name.replace("-", "_") for name in task_flags()} - own
    chat_only = set(CHAT_ONLY_FLAGS) if job.task_options is not None else set()
    out = {dest: _plain(getattr(namespace, dest, None)) for dest in actions
           if dest not in RUN_ONLY and dest not in foreign and dest not in chat_only}
    if mixture is None:
        return out
    out.pop("input", None)
    out["seed"] = mixture.seed
    out["stopping_strategy"] = mixture.stopping_strategy
    out["total_records"] = mixture.total_records
    entries = []
    for entry in mixture.datasets:
        spec = entry.task
        options = spec.format_options if spec.is_chat else spec.options
        item = {"name": entry.name, "files": list(entry.patterns), "task": spec.name,
                "format": options.format, "field_map": dict(options.field_map)}
        if spec.is_chat:
            item.update({"role_map": dict(options.role_map), "system_prompt": options.system_prompt,
                         "chat_template_kwargs": entry.kwargs})
        item.update({key: getattr(entry, key) for key in SHARE_KEYS})
        entries.append(item)
    out["datasets"] = entries
    return out


def parse_command_line(argv: Sequence[str] | None) -> JobArgs:
    """The command line of ``python -m pipeline``: with ``--config FILE``, the file and the flags given beside it
    (:func:`parse_config_args`); without, the flags (:func:`pipeline.launch.cli.parse_args`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if config_path_of(argv) is not None:
        return parse_config_args(argv)
    return parse_args(argv)


def parse_config_args(argv: Sequence[str]) -> JobArgs:
    """:func:`pipeline.launch.cli.parse_args` with ``--config FILE`` in ``argv`` (module docstring)."""
    parser = build_parser()
    given, beam_args = _override_parser().parse_known_args(list(argv))
    check_beam_args(beam_args, parser)
    path = getattr(given, "config", "") or ""
    text = read_config_text(path)
    lines: dict[tuple, int] = {}
    try:
        data, lines = parse_document(text, json_file=path.lower().endswith(".json"))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _Problem((), f"must be a mapping of settings (key: value lines), got {_type_name(data)}")
        actions = flag_actions(parser)
        flags, mixture_keys = _check_top(data, actions)
        task_formats = tuple(actions["format"].choices)
        datasets = _check_datasets(mixture_keys.pop("datasets")[1], actions, task_formats) \
            if "datasets" in mixture_keys else None
        mixture_options = _mixture_options(mixture_keys)
        if datasets is None and mixture_options:
            key = next(iter(mixture_keys))
            raise _Problem(mixture_keys[key][0], f"{key!r} sets how datasets mix: it needs a datasets list")
        overrides = {dest: value for dest, value in vars(given).items() if dest not in NOT_IN_FILE}
        if datasets is not None:
            if "input" in flags:
                raise _Problem(("input",), "give the inputs as datasets entries (files: ...), not also as input")
            if "input" in overrides:
                raise ConfigError(f"{path}: the config lists its inputs as datasets; --input cannot be added to them "
                                  "(add a datasets entry instead)")
        namespace = build_parser().parse_known_args([])[0]
        for dest, value in {**flags, **overrides}.items():
            setattr(namespace, dest, value)
        if datasets is not None:
            namespace.input = [glob for dataset in datasets for glob in dataset.values["files"]]
            if namespace.no_validate_inputs:
                raise ConfigError(f"{path}: a datasets list needs its inputs matched at launch (each file's dataset "
                                  "is decided there): drop no_validate_inputs")
        missing = [flag for flag, value in (("input (or datasets)", namespace.input), ("output", namespace.output))
                   if not value]
        if missing:
            raise ConfigError(f"{path}: no {' and no '.join(missing)}: set it in the file or give --"
                              f"{missing[0].split()[0]}")
        try:
            job = job_args(namespace, beam_args)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        mixture = None
        if datasets is not None:
            entries = tuple(_dataset_entry(dataset, job) for dataset in datasets)
            try:
                mixture = Mixture(datasets=entries, **mixture_options)
            except ValueError as exc:
                raise _Problem(("datasets",), str(exc)) from None
            group = getattr(job.task_options, "group_texts", None)
            if group and mixture.may_repeat:
                raise _Problem(("datasets",), "repeats (epochs > 1, stopping_strategy all_exhausted, "
                               "total_records) cannot be combined with --group-texts: a block holds several "
                               "records; use max_records, epochs <= 1 or first_exhausted weights")
    except _Problem as problem:
        line = problem.line or _line_of(lines, problem.path)
        raise ConfigError(f"{path}:{line}: {problem.message}" if line else f"{path}: {problem.message}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests too deep") from None
    resolved = resolved_config(namespace, actions, mixture, job)
    return dataclasses.replace(job, mixture=mixture, config_file={"path": path, "resolved": resolved})


def _line_of(lines: Mapping[tuple, int], path: tuple) -> int | None:
    """The line of ``path``, else of its nearest parent that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
