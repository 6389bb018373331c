"""The job graph: read -> parse/render/tokenize -> (dedup) -> shard -> write -> manifest.

``build_graph(p, ...)`` only wires PTransforms around the pure code in ``transforms``; everything it
needs is passed as keyword-only arguments.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton

from pipeline.build import REJECTED_TAG, BuilderSpec, BuildRowsFn, ParseRecordsFn
from pipeline.dedup import FindDuplicates, drop_duplicates
from pipeline.fragments import FRAGMENT_DIR, WriteFragmentsFn
from pipeline.rejected import REJECTED_FRAGMENT_DIR, WriteRejectedFn, WriteRejectedFragmentsFn
from pipeline.sink import TMP_DIR, CommitManifestFn, WriteShardFn, auto_num_shards, join
from pipeline.sources import ReadRawRecords
from pipeline.spill import SPILL_DIR, read_spilled
from transforms import shard_format as sf


def build_graph(
    p,
    *,
    patterns: Sequence[str],
    files: Sequence[str] | None,
    output: str,
    spec: BuilderSpec,
    manifest_base: Mapping[str, Any],
    num_shards: int | None,
    batch_size: int,
    dedup: bool,
    section_builders: Sequence = (),
):
    """Wire the whole job on pipeline ``p``; returns a dict of the main PCollections.

    Records and rows travel in batches (lists); ``section_builders`` are callables
    ``(p=, raws=, rows=, rejected=, output=) -> PCollection[dict]`` where ``raws`` holds lists of
    ``RawRecord``, ``rows`` single rows and ``rejected`` is a tuple of PCollections of single
    rejection dicts (one per producing stage; consume each where it is, never flatten the dicts:
    local runners would hold them all in memory); each dict is merged
    into the manifest, which is written only after they are all computed.
    """
    tmp_root = join(output, TMP_DIR)
    spilled = p | "Read" >> ReadRawRecords(patterns=patterns, files=files, batch_size=batch_size,
                                           spill_folder=join(tmp_root, SPILL_DIR))
    raw_batches = spilled | "ReadSpilled" >> beam.Map(read_spilled)
    read_count = spilled | "CountRead" >> beam.Map(lambda ref: ref.records) | "TotalRead" >> beam.CombineGlobally(sum)
    rejected_parts = []
    if dedup:  # decided on keys; the records stay spilled (pipeline.dedup)
        duplicates = spilled | "Dedup" >> FindDuplicates(format_options=spec.format_options)
        raw_batches = raw_batches | "DropDuplicates" >> beam.Map(drop_duplicates,
                                                                  AsSingleton(duplicates["dropped"]))
        rejected_parts.append(duplicates["rejected"])
    parsed = raw_batches | "ParseRecords" >> beam.ParDo(ParseRecordsFn(spec)).with_outputs(REJECTED_TAG, main="parsed")
    rejected_parts.append(parsed[REJECTED_TAG])
    built = parsed.parsed | "BuildRows" >> beam.ParDo(BuildRowsFn(spec)).with_outputs(REJECTED_TAG, main="rows")
    row_batches = built.rows
    rejected_parts.append(built[REJECTED_TAG])

    padded = spec.tokenize_options.pad_to == "max_length"
    extra_fields = spec.extra_fields()
    fragments = row_batches | "WriteFragments" >> beam.ParDo(
        WriteFragmentsFn(folder=join(tmp_root, FRAGMENT_DIR),
                         schema=sf.arrow_schema(padded=padded, extra_fields=extra_fields)))
    if num_shards is not None:
        shard_count = p | "ShardCount" >> beam.Create([num_shards])
    else:
        shard_count = (
            fragments
            | "FragmentBytes" >> beam.Map(lambda ref: ref.nbytes)
            | "TotalBytes" >> beam.CombineGlobally(sum)
            | "AutoShardCount" >> beam.Map(auto_num_shards)
        )
    shards = (
        fragments
        | "ShardBatches" >> beam.FlatMap(lambda ref, n: ref.shard_batches(n), n=AsSingleton(shard_count))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShardFn(output=output, padded=padded, extra_fields=extra_fields),
                                      num_shards=AsSingleton(shard_count))
    )
    # Each part is written to fragments in the stage that produced it; only the refs are flattened (a
    # Flatten of parts from several stages is materialised by local runners, in the runner process).
    rejected_folder = join(tmp_root, REJECTED_FRAGMENT_DIR)
    rejected_files = (
        tuple(part | f"RejectedFragments{i}" >> beam.ParDo(WriteRejectedFragmentsFn(folder=rejected_folder))
              for i, part in enumerate(rejected_parts))
        | "AllRejected" >> beam.Flatten()
        | "RejectedChunks" >> beam.FlatMap(lambda ref, n: ref.file_chunks(n), n=AsSingleton(shard_count))
        | "GroupRejected" >> beam.GroupByKey()
        | "WriteRejected" >> beam.ParDo(WriteRejectedFn(output=output), num_files=AsSingleton(shard_count))
    )
    # Manifest sections computed by other branches (e.g. audit statistics): dicts merged into the manifest.
    rows = row_batches | "Rows" >> beam.FlatMap(lambda batch: batch) if section_builders else None
    raws = raw_batches
    extra_sections = (
        tuple(section_builder(p=p, raws=raws, rows=rows, rejected=tuple(rejected_parts), output=output)
              for section_builder in section_builders)
        | "ExtraSections" >> beam.Flatten()
    ) if section_builders else p | "NoExtraSections" >> beam.Create([])
    manifest = (
        p
        | "CommitTrigger" >> beam.Create([None])
        | "CommitManifest" >> beam.ParDo(
            CommitManifestFn(output=output, manifest_base=manifest_base, padded=padded, extra_fields=extra_fields),
            shards=AsList(shards),
            rejected_files=AsList(rejected_files),
            read_count=AsSingleton(read_count),
            num_shards=AsSingleton(shard_count),
            extra_sections=AsList(extra_sections),
        )
    )
    return {"raw_batches": raw_batches, "row_batches": row_batches, "rejected_parts": tuple(rejected_parts), "shards": shards,
            "manifest": manifest, "read_count": read_count}
