"""Writing shards and the manifest, deterministically (rejected records: :mod:`pipeline.rejected`).

Beam's file sinks place rows in shards at random, so shards are written here:

1. every row carries a ``sort_key`` (a hash of its provenance); its shard is ``shard_of(sort_key, N)``;
2. rows reach their shard through fragment files (:mod:`pipeline.fragments`), are sorted by
   ``sort_key``, serialised as an Arrow IPC stream, written to a temporary name under ``<out>/.tmp/``
   and renamed into ``<out>/data/`` (a retried bundle rewrites identical bytes under the same final
   name);
3. the manifest is written last (to a temporary name, then renamed): it is the commit point. A run
   that dies before that leaves no manifest, and readers refuse the folder.

All file access goes through ``FileSystems`` (local paths and ``gs://`` alike).
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Mapping

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.fragments import SORT_KEY, DigestingSink, payload_schema, read_shard_batches
from transforms import shard_format as sf

# A worker holds one shard's rows (sorted) plus its Arrow table while writing it, so the shard size
# bounds worker memory: 64 MiB shards keep that to a few hundred MiB whatever the dataset size
# (benchmarks/bench_memory.py), and are a common size for streamed training shards.
TARGET_SHARD_BYTES = 64 * 1024 * 1024
MAX_AUTO_SHARDS = 4096
TMP_DIR = ".tmp"


def join(root: str, *parts: str) -> str:
    return FileSystems.join(root, *parts)


def auto_num_shards(total_bytes: int) -> int:
    """Shards of about ``TARGET_SHARD_BYTES`` (at least 1, at most ``MAX_AUTO_SHARDS``)."""
    return max(1, min(MAX_AUTO_SHARDS, math.ceil(total_bytes / TARGET_SHARD_BYTES)))


def write_atomically(path: str, data: bytes, *, tmp_root: str) -> None:
    """Write ``data`` under a unique temporary name in ``tmp_root`` and rename it to ``path``."""
    tmp = tmp_name(path, tmp_root)
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    publish_tmp(tmp, path)


def write_table_atomically(path: str, table, *, tmp_root: str) -> tuple[int, str]:
    """Stream ``table`` as the Arrow IPC stream :func:`transforms.shard_format.ipc_stream_bytes` would
    return (same bytes) to a temporary file, rename it to ``path``; return ``(bytes, sha256)``.

    The serialised shard is never held in memory (a shard's rows and table already are).
    """
    tmp = tmp_name(path, tmp_root)
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        sink = DigestingSink(handle)
        sf.write_ipc_stream(sink, table)  # an empty shard too holds one (empty) record batch
    publish_tmp(tmp, path)
    return sink.size, sink.digest.hexdigest()


def tmp_name(path: str, tmp_root: str) -> str:
    return join(tmp_root, f"{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}")


def publish_tmp(tmp: str, path: str) -> None:
    """Rename a finished temporary file to its final name (replacing an earlier attempt's copy)."""
    _ensure_dir(path.rsplit("/", 1)[0])
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def list_tree(folder: str) -> list[str]:
    """Every file under ``folder``, recursively, on any Beam filesystem.

    Object stores (``gs://``) have no folders: ``FileSystems.exists(folder)`` is false there even when
    objects live under ``folder/``, so folders are always inspected by listing ``folder/**``.
    """
    from apache_beam.io.filesystem import BeamIOError

    try:
        result = FileSystems.match([folder.rstrip("/") + "/**"])[0]
    except BeamIOError:
        return []
    return sorted(metadata.path for metadata in result.metadata_list)


def path_present(path: str) -> bool:
    """A file (or object) at ``path``, or anything under ``path/``."""
    return FileSystems.exists(path) or bool(list_tree(path))


def delete_tree(path: str) -> None:
    """Delete the file ``path`` or everything under ``path/`` (local folders and object prefixes alike)."""
    if FileSystems.exists(path):
        FileSystems.delete([path])  # a file, an object, or a local folder (removed recursively)
    leftovers = list_tree(path)  # object stores: the objects under the prefix
    if leftovers:
        FileSystems.delete(leftovers)


def _ensure_dir(folder: str) -> None:
    """Create a folder (local filesystems need it; object stores have no folders)."""
    if not FileSystems.exists(folder):
        try:
            FileSystems.mkdirs(folder)
        except Exception:  # noqa: BLE001 - created concurrently by another worker
            if not FileSystems.exists(folder):
                raise


def shard_entry(index: int, num_shards: int, rows: int, tokens: int, loss_tokens: int, data: bytes | None = None,
                *, size: int | None = None, sha256: str | None = None, records: int | None = None) -> dict:
    """The manifest entry of a shard, from its bytes or from their ``size`` and ``sha256``.

    ``records``: how many input records its rows come from (a record split into one row per supervised
    turn counts once; the rows of a record are always in one shard)."""
    return {
        "path": sf.shard_relative_path(index, num_shards),
        "rows": rows,
        "records": rows if records is None else records,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "bytes": len(data) if data is not None else size,
        "sha256": sf.sha256_hex(data) if data is not None else sha256,
    }


def merge_fragments(batches, schema: pa.Schema, *, shard: int, num_shards: int) -> pa.Table:
    """Shard ``shard``'s rows from its fragment record batches (``(path, batch)`` pairs, see
    :mod:`pipeline.fragments`): merged, sorted by ``sort_key``, ``sort_key`` dropped; one chunk,
    shard schema."""
    by_path: dict[str, list[int]] = {}
    for path, batch in sorted(batches):
        by_path.setdefault(path, []).append(batch)
    tables = [table for path, numbers in by_path.items()
              for table in read_shard_batches(path, numbers, shard=shard, num_shards=num_shards)]
    table = pa.concat_tables(tables) if tables else payload_schema(schema).empty_table()
    if table.num_rows == 0:  # same bytes as the empty shards the manifest step writes
        return schema.empty_table()
    table = table.take(pc.sort_indices(table, sort_keys=[(SORT_KEY, "ascending")]))
    return table.drop_columns([SORT_KEY]).combine_chunks().cast(schema)


class WriteShardFn(beam.DoFn):
    """``(shard_index, [(fragment path, batch)]) -> shard entry`` for the manifest; writes ``data/shard-*.arrow``."""

    def __init__(self, *, output: str, padded: bool = False, extra_fields=()):
        self.output = output
        self.padded = padded
        self.extra_fields = tuple(extra_fields)

    def process(self, element, num_shards):
        index, batches = element
        table = merge_fragments(list(batches), sf.arrow_schema(padded=self.padded, extra_fields=self.extra_fields),
                                shard=index, num_shards=num_shards)
        path = join(self.output, *sf.shard_relative_path(index, num_shards).split("/"))
        # streamed to the file: the serialised shard (same bytes as ipc_stream_bytes) is never in memory
        size, sha256 = write_table_atomically(path, table, tmp_root=join(self.output, TMP_DIR))
        yield shard_entry(
            index, num_shards, table.num_rows, int(pc.sum(table["length"]).as_py() or 0),
            int(pc.sum(table["num_loss_tokens"]).as_py() or 0), size=size, sha256=sha256,
            records=records_in(table),
        )


def records_in(table: pa.Table) -> int:
    """Distinct records among a shard's rows (sorted, so the rows of one record are adjacent)."""
    if table.num_rows == 0:
        return 0
    source, index = table["source"].to_pylist(), table["index"].to_pylist()
    return 1 + sum(1 for k in range(1, len(source)) if source[k] != source[k - 1] or index[k] != index[k - 1])


class CommitManifestFn(beam.DoFn):
    """Runs once after every shard is written: fills empty shards, checks counts, writes the manifest.

    Raises (failing the job, so no manifest is written) when ``read != written + rejected``, or when
    ``data/`` or ``rejected/`` hold other files than this run's (another writer in the same folder).
    """

    def __init__(self, *, output: str, manifest_base: Mapping[str, Any], padded: bool, extra_fields=()):
        self.output = output
        self.manifest_base = dict(manifest_base)
        self.padded = padded
        self.extra_fields = tuple(extra_fields)

    def process(self, _, shards, rejected_files, read_count, num_shards, extra_sections):
        shards = {entry["path"]: entry for entry in shards}
        schema = sf.arrow_schema(padded=self.padded, extra_fields=self.extra_fields)
        tmp_root = join(self.output, TMP_DIR)
        for index in range(num_shards):
            relative = sf.shard_relative_path(index, num_shards)
            if relative not in shards:  # no row hashed here: write an empty shard so names are complete
                data = sf.ipc_stream_bytes(schema.empty_table())
                write_atomically(join(self.output, *relative.split("/")), data, tmp_root=tmp_root)
                shards[relative] = shard_entry(index, num_shards, 0, 0, 0, data)
        shard_list = [shards[key] for key in sorted(shards)]
        rows = sum(entry["rows"] for entry in shard_list)
        written = sum(entry.get("records", entry["rows"]) for entry in shard_list)
        rejected_list = sorted(rejected_files, key=lambda entry: entry["path"])
        rejected = sum(entry["rows"] for entry in rejected_list)
        by_reason: dict[str, int] = {}
        for entry in rejected_list:
            for reason, count in entry["by_reason"].items():
                by_reason[reason] = by_reason.get(reason, 0) + count
        if read_count != written + rejected:
            raise RuntimeError(
                f"count mismatch: read {read_count} records but wrote {written} records and {rejected} rejections; "
                "refusing to commit the dataset"
            )
        from pipeline.output_folder import check_folder_holds_exactly

        # never commit over a folder mixed with another run's files (refuses with a RuntimeError)
        check_folder_holds_exactly(self.output, [entry["path"] for entry in shard_list],
                                   [entry["path"] for entry in rejected_list])
        manifest = dict(self.manifest_base)
        manifest.update({
            "schema_version": sf.SCHEMA_VERSION,
            "format": sf.FORMAT_NAME,
            "counts": {"read": read_count, "written": written, "rejected": rejected, "rows": rows},
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
        })
        for section in extra_sections:
            manifest.update(section)
        write_atomically(join(self.output, sf.MANIFEST_NAME), sf.manifest_bytes(manifest), tmp_root=tmp_root)
        try:
            delete_tree(tmp_root)  # temporaries of failed attempts too (object stores keep them otherwise)
        except Exception:  # noqa: BLE001 - a temp folder left behind is harmless (the next --overwrite clears it)
            pass
        yield manifest

