"""Committing the dataset: empty shards filled in, counts reconciled, the dataset card and then the manifest
written last (Beam-free: the job's :class:`pipeline.engines.beam.commit.CommitManifestFn` and the local engine
call :func:`commit_manifest`).

The dataset card (``README.md``, :mod:`transforms.dataset_card`) is a pure function of the manifest, written
just before it. The manifest is written to a temporary name, then renamed: it is the commit point. A run
that dies before that leaves no manifest, and readers refuse the folder.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from pipeline.io.files import delete_tree, join, list_tree, tmp_root, write_atomically
from pipeline.steps.shards import shard_entry
from transforms import shard_format as sf
from transforms.dataset_card import CARD_NAME, card_bytes
from transforms.packing.rows import ShardPacking
from transforms.packing.stats import report_of_shards


def commit_manifest(*, output: str, manifest_base: Mapping[str, Any], padded: bool = False, extra_fields=(),
                    shards: Iterable[Mapping], rejected_files: Iterable[Mapping], read_count: int, num_shards: int,
                    extra_sections: Iterable[Mapping] = (), schema=None,
                    packing: ShardPacking | None = None, mixture_counts: tuple[int, int] | None = None) -> dict:
    """Fill empty shards, check counts, write the dataset card ``README.md`` and ``manifest.json`` (last), delete
    ``<output>/.tmp``; return the manifest.

    ``shards``: the shard entries written (:func:`pipeline.steps.shards.write_shard`); ``rejected_files``: the
    rejected files' entries (:func:`pipeline.steps.rejected.write_rejected_file`); ``extra_sections``: dicts merged
    into the manifest (the audit section); ``schema``: the shards' schema (the job plan's), else the chat schema
    of ``padded`` / ``extra_fields``; ``mixture_counts``: ``(skipped, repeats)`` of a job with a datasets list
    (records its mixture did not take, extra copies it made; recorded as ``counts.mixture_skipped`` and
    ``counts.mixture_repeats``). Raises (so no manifest is written) when ``read - skipped + repeats != written +
    rejected``, or when ``data/`` or ``rejected/`` hold other files than this run's (another writer in the same
    folder).

    ``packing`` (``--pack-length``): the shards hold packed rows (``schema`` stays the rows'); the manifest gets
    ``counts.sequences`` and the ``packing`` section (:func:`transforms.packing.stats.report_of_shards`, from the
    figures each shard entry carries; they are not kept in the entries).
    """
    manifest_base = dict(manifest_base)
    extra_fields = tuple(extra_fields)
    shards = {entry["path"]: dict(entry) for entry in shards}
    if schema is None:
        schema = sf.arrow_schema(padded=padded, extra_fields=extra_fields)
    if packing is not None:  # ``schema`` is the rows'; the shards hold packed rows
        schema = packing.schema(schema)
    scratch = tmp_root(output)
    for index in range(num_shards):
        relative = sf.shard_relative_path(index, num_shards)
        if relative not in shards:  # no row hashed here: write an empty shard so names are complete
            data = sf.ipc_stream_bytes(schema.empty_table())
            write_atomically(join(output, *relative.split("/")), data, tmp_root=scratch)
            shards[relative] = shard_entry(index, num_shards, 0, 0, 0, data,
                                           sequences=None if packing is None else 0)
    shard_list = [shards[key] for key in sorted(shards)]
    packing_section = None
    if packing is not None:
        packing_section = report_of_shards(shard_list, length=packing.options.length,
                                           strategy=packing.options.strategy)
        for entry in shard_list:
            entry.pop("packing", None)
    rows = sum(entry["rows"] for entry in shard_list)
    written = sum(entry.get("records", entry["rows"]) for entry in shard_list)
    rejected_list = sorted(rejected_files, key=lambda entry: entry["path"])
    rejected = sum(entry["rows"] for entry in rejected_list)
    by_reason: dict[str, int] = {}
    for entry in rejected_list:
        for reason, count in entry["by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    skipped, repeats = mixture_counts if mixture_counts is not None else (0, 0)
    if read_count - skipped + repeats != written + rejected:
        taken = f" (the mixture took {read_count - skipped + repeats})" if mixture_counts is not None else ""
        raise RuntimeError(
            f"count mismatch: read {read_count} records{taken} but wrote {written} records and {rejected} "
            "rejections; refusing to commit the dataset"
        )
    # never commit over a folder mixed with another run's files (refuses with a RuntimeError)
    check_folder_holds_exactly(output, [entry["path"] for entry in shard_list],
                               [entry["path"] for entry in rejected_list])
    manifest = dict(manifest_base)
    counts = {"read": read_count, "written": written, "rejected": rejected, "rows": rows}
    if mixture_counts is not None:
        counts.update(mixture_skipped=skipped, mixture_repeats=repeats)
    if packing_section is not None:
        counts["sequences"] = sum(entry["sequences"] for entry in shard_list)
    manifest.update({
        "schema_version": sf.SCHEMA_VERSION,
        "format": sf.FORMAT_NAME,
        "counts": counts,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "num_shards": num_shards,
        "shards": shard_list,
        "rejected_files": [{k: v for k, v in entry.items() if k != "by_reason"} for entry in rejected_list],
        "totals": {
            "rows": rows,
            "tokens": sum(entry["tokens"] for entry in shard_list),
            "loss_tokens": sum(entry["loss_tokens"] for entry in shard_list),
        },
        "columns": [field.name for field in schema],
        "dataset_card": CARD_NAME,
    })
    if packing_section is not None:
        manifest["packing"] = packing_section
    for section in extra_sections:
        manifest.update(section)
    write_atomically(join(output, CARD_NAME), card_bytes(manifest), tmp_root=scratch)
    write_atomically(join(output, sf.MANIFEST_NAME), sf.manifest_bytes(manifest), tmp_root=scratch)
    try:
        delete_tree(scratch)  # temporaries of failed attempts too (object stores keep them otherwise)
    except Exception:  # a temp folder left behind is harmless (the next --overwrite clears it)
        pass
    return manifest


def _relative(path: str, root: str) -> str:
    return path[len(root):].lstrip("/\\")


def check_folder_holds_exactly(output: str, shard_paths: Iterable[str], rejected_paths: Iterable[str]) -> None:
    """Raise ``RuntimeError`` unless ``output/data`` and ``output/rejected`` hold exactly the given files
    (paths relative to ``output``): a job never commits a manifest over a folder mixed with another
    run's files (a second writer, e.g. on ``gs://`` where no lock is taken)."""
    for folder, expected in ((sf.DATA_DIR, set(shard_paths)), (sf.REJECTED_DIR, set(rejected_paths))):
        root = join(output, folder)
        found = {f"{folder}/{_relative(path, root)}" for path in list_tree(root)}
        extra, missing = sorted(found - expected), sorted(expected - found)
        if extra or missing:
            raise RuntimeError(
                f"refusing to commit the dataset in {output}: {folder}/ holds "
                + (f"{len(extra)} file(s) this run did not write (e.g. {extra[0]}; another job writing into the same "
                   "--output?)" if extra else "")
                + (" and " if extra and missing else "")
                + (f"lacks {len(missing)} file(s) this run wrote (e.g. {missing[0]})" if missing else "")
            )
