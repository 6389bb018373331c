"""Reading a finished local dataset back for the audit commands (shards, rejected files, tokenizer).

``compute_stats(root)`` feeds the *same* :class:`AuditAccumulator` the Beam job uses with the rows
of every shard and every rejected line, so its numbers agree with the job's own ``stats.json``.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa

from transforms import shard_format as sf
from transforms.audit.accumulator import AuditAccumulator
from transforms.audit.duplicates import HashGroups
from transforms.audit.probe import TemplateProbe, template_probe
from transforms.audit.stats import build_stats
from transforms.packing.rows import is_packed_schema
from transforms.packing.unpack import iter_sequences

# the scalar columns the audit reads (image payload columns are never converted to Python)
SCALAR_COLUMNS = ("length", "num_loss_tokens", "truncated", "source", "index", "record_id", "format",
                  "num_turns", "num_trained_turns", "prompt_tokens", "truncated_tokens", "conversation_hash",
                  "num_images", "num_image_tokens", "dataset")


def read_shard_table(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_stream(source).read_all()


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    column = table.column(name).combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=False)
    return offsets, values


def iter_table_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows of a shard table as dicts; ``input_ids``/``labels`` (for another task than chat: every numeric
    list column) are numpy views (no Python lists). A table of packed rows yields its sequences (the rows as
    built; each with ``pack`` and ``offset``, see :func:`transforms.packing.unpack.iter_sequences`)."""
    if table.num_rows == 0:
        return
    if is_packed_schema(table.schema):
        packed = [name for name in SCALAR_COLUMNS if name in table.column_names and name not in ("length",
                                                                                                "num_loss_tokens")]
        for row in iter_sequences(table, packed):
            row["num_loss_tokens"] = int(np.count_nonzero(row["labels"] != sf.IGNORE_INDEX))
            yield row
        return
    names = ("input_ids", "labels")
    scalar_names = SCALAR_COLUMNS
    if "content_hash" in table.column_names:  # another task's shard: every column (its figures read them)
        names = tuple(field.name for field in table.schema if pa.types.is_list(field.type)
                      and (pa.types.is_integer(field.type.value_type) or pa.types.is_floating(field.type.value_type)))
        scalar_names = tuple(field.name for field in table.schema if not pa.types.is_list(field.type))
    lists = {name: _list_column(table, name) for name in names if name in table.column_names}
    scalars = {name: table.column(name).to_pylist() for name in scalar_names if name in table.column_names}
    names = list(scalars)
    columns = [scalars[name] for name in names]
    for i in range(table.num_rows):
        row = {name: column[i] for name, column in zip(names, columns)}
        for name, (offsets, values) in lists.items():
            row[name] = values[offsets[i]:offsets[i + 1]]
        yield row


def shard_files(root: str, manifest: Mapping[str, Any]) -> list[str]:
    return [entry["path"] for entry in manifest["shards"]]


def rejected_files(root: str, manifest: Mapping[str, Any]) -> list[str]:
    """Relative paths of the rejected files (the manifest's list, else ``rejected/*.jsonl``)."""
    if "rejected_files" in manifest:
        return [entry["path"] for entry in manifest["rejected_files"]]
    return sorted(os.path.relpath(p, root).replace(os.sep, "/")
                  for p in glob.glob(os.path.join(root, sf.REJECTED_DIR, "*.jsonl")))


def iter_rejections(root: str, manifest: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for relative in rejected_files(root, manifest):
        with open(os.path.join(root, *relative.split("/")), encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def load_dataset_tokenizer(manifest: Mapping[str, Any], override: str | None = None,
                           chat_template_file: str | None = None, *, loader=None):
    """The tokenizer a dataset was made with: ``override`` or the manifest's tokenizer name (the bundled
    tokenizer for its name). Returns ``(tokenizer, warnings)``; warns when the vocabulary hash differs."""
    from transforms.tokenizer_loading import BUNDLED_TOKENIZER_ID, load_tokenizer, template_hash, vocab_hash

    info = manifest.get("tokenizer") or {}
    name = override or info.get("name")
    spec = None if name in (None, "", BUNDLED_TOKENIZER_ID, "bundled") else name
    if manifest.get("task"):  # tasks other than chat take tokenizers without a chat template
        tokenizer = (loader or load_tokenizer)(spec, chat_template_file=chat_template_file,
                                               require_chat_template=False)
    else:
        tokenizer = (loader or load_tokenizer)(spec, chat_template_file=chat_template_file)
    warnings = []
    if info.get("vocab_hash") and vocab_hash(tokenizer) != info["vocab_hash"]:
        warnings.append(f"tokenizer {name!r} has a different vocabulary than the one that made this dataset "
                        f"({info.get('name')!r}): decoded text may be wrong")
    if info.get("chat_template_hash") and template_hash(tokenizer.chat_template) != info["chat_template_hash"]:
        warnings.append("the tokenizer's chat template differs from the one that made this dataset")
    return tokenizer, warnings


def probe_for(manifest: Mapping[str, Any], tokenizer=None, template_matches: bool = True) -> TemplateProbe:
    """The template probe the job used (stored in the manifest's ``audit`` section); for datasets made
    without it, derived from ``tokenizer`` (the default-system check only when the template matches)."""
    stored = (manifest.get("audit") or {}).get("template_probe")
    if stored is not None:
        return TemplateProbe.from_json(stored)
    if tokenizer is None:
        return TemplateProbe()
    probe = template_probe(tokenizer, manifest.get("template_check") or {})
    if not template_matches:
        probe = TemplateProbe(bos_token_id=probe.bos_token_id, stop_token_ids=probe.stop_token_ids)
    return probe


def format_options_for(manifest: Mapping[str, Any]):
    """The chat ``FormatOptions`` of a dataset, or its :class:`~transforms.tasks.spec.TaskSpec` (another task)."""
    from transforms.formats import FormatOptions
    from transforms.tasks.spec import task_spec_from_manifest

    task = task_spec_from_manifest(manifest)
    if task is not None:
        return task
    fmt = (manifest.get("config") or {}).get("format")
    try:
        return FormatOptions(**fmt) if fmt else FormatOptions()
    except (TypeError, ValueError):
        return FormatOptions()


def compute_stats(root: str, manifest: Mapping[str, Any], *, probe: TemplateProbe,
                  computed_by: str = "pipeline.audit") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Recompute ``stats.json`` (and the sample rows for the report) from a dataset folder."""
    acc = AuditAccumulator(probe, format_options_for(manifest))
    groups = HashGroups()
    for relative in shard_files(root, manifest):
        table = read_shard_table(os.path.join(root, *relative.split("/")))
        for row in iter_table_rows(table):
            acc.add_row(row)
            groups.add_row(row)
    for item in iter_rejections(root, manifest):
        acc.add_rejection(item)
    stats = build_stats(acc, groups.summary(), manifest=manifest, computed_by=computed_by)
    recorded = (manifest.get("audit") or {}).get("prompt_mismatch")
    if recorded and not stats["prompt_mismatch"]["records"]:  # the job's figures: the shards do not hold them
        stats["prompt_mismatch"] = dict(recorded)
    if manifest.get("packing"):  # the job's packing figures (the shards no longer hold the unpacked row order)
        stats["packing"] = dict(manifest["packing"])
    return stats, acc.samples()


def check_against_manifest(stats: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    """Differences between recomputed statistics and the manifest's own counts (empty: consistent)."""
    problems = []
    counts = dict(manifest.get("counts", {}))
    if "mixture_skipped" in counts and isinstance(counts.get("read"), int):  # what the mixture took of the records read
        counts["read"] = counts["read"] - counts["mixture_skipped"] + counts.get("mixture_repeats", 0)
    for key in ("read", "written", "rejected"):
        if key in counts and counts[key] != stats["counts"][key]:
            problems.append(f"counts.{key}: manifest says {counts[key]}, the files hold {stats['counts'][key]}")
    if "rejected_by_reason" in manifest and dict(manifest["rejected_by_reason"]) != stats["rejections"]["by_reason"]:
        problems.append(f"rejected_by_reason: manifest says {manifest['rejected_by_reason']}, "
                        f"the files hold {stats['rejections']['by_reason']}")
    totals = manifest.get("totals", {})
    for key, ours in (("tokens", "tokens"), ("loss_tokens", "trained_tokens")):
        if key in totals and totals[key] != stats["totals"][ours]:
            problems.append(f"totals.{key}: manifest says {totals[key]}, the shards hold {stats['totals'][ours]}")
    return problems
