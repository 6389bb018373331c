"""The job graph: read -> (dedup) -> parse -> build rows -> fragments -> shards, rejected files, (audit) -> manifest.

``build_graph(p, plan)`` only wires PTransforms around the pure code in ``transforms``; what to build is
decided at launch, in the :class:`pipeline.launch.plan.JobPlan` it is given. With ``--dedup``, duplicates are
found on the spilled records before parsing (:mod:`pipeline.engines.beam.dedup`), so a duplicate is never parsed or
tokenized; the audit's duplicate statistics (:mod:`pipeline.engines.beam.stats`) are computed on the written rows.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton

from pipeline.engines.beam.build import REJECTED_TAG, BuildRowsFn, ParseRecordsFn
from pipeline.engines.beam.commit import CommitManifestFn
from pipeline.engines.beam.dedup import FindDuplicates
from pipeline.engines.beam.fragments import WriteFragmentsFn
from pipeline.engines.beam.rejected import WriteRejectedFn, WriteRejectedFragmentsFn
from pipeline.engines.beam.sink import WriteShardFn
from pipeline.engines.beam.sources import ReadRawRecords
from pipeline.engines.beam.stats import AuditStats
from pipeline.io.chunks import FRAGMENTS, REJECTED, SPILL, chunks_by_shard, store_folder
from pipeline.io.spill import read_spilled
from pipeline.launch.plan import JobPlan
from pipeline.steps.dedup import drop_duplicates
from pipeline.steps.mixture import add_pairs, batch_file_counts, mixture_section, selection_of, skipped_and_repeats
from pipeline.steps.shards import auto_num_shards
from transforms.mixture.selection import tag_rejection


def build_graph(p, plan: JobPlan) -> dict:
    """Wire the whole job of ``plan`` on pipeline ``p``; returns a dict of the main PCollections.

    Records and rows travel in batches (lists); rejections one dict per element, in one PCollection per
    producing stage (each is consumed where it is, never flattened: local runners would hold them all in
    memory). The manifest is written last, after the shards, the rejected files and the audit files.
    """
    output, spec = plan.output, plan.spec
    task = plan.task_spec  # the audit follows the task
    records = plan.record_spec()  # parsing, dedup keys, non-JSON inputs: the task (a datasets list: each file's)
    mixture = plan.mixture
    spilled = p | "Read" >> ReadRawRecords(patterns=plan.patterns, files=plan.files, batch_size=plan.batch_size,
                                           spill_folder=store_folder(output, SPILL), task=records)
    raw_batches = spilled | "ReadSpilled" >> beam.Map(read_spilled)
    read_count = spilled | "CountRead" >> beam.Map(lambda chunk: chunk.count) | "TotalRead" >> beam.CombineGlobally(sum)
    if mixture is not None:  # every file's record count: the mixture's decisions (when they need it), the manifest
        file_counts = (raw_batches | "FileCounts" >> beam.FlatMap(batch_file_counts)
                       | "CountByFile" >> beam.CombinePerKey(sum) | "CountsByFile" >> beam.combiners.ToDict())
    rejected_parts = []
    if plan.dedup:  # decided on keys; the records stay spilled (pipeline.engines.beam.dedup)
        duplicates = spilled | "Dedup" >> FindDuplicates(format_options=records)
        raw_batches = raw_batches | "DropDuplicates" >> beam.Map(drop_duplicates,
                                                                  AsSingleton(duplicates["dropped"]))
        duplicate_rejections = duplicates["rejected"]
        if mixture is not None:
            duplicate_rejections = duplicate_rejections | "TagDuplicates" >> beam.Map(tag_rejection, mixture)
        rejected_parts.append(duplicate_rejections)
    selection = None
    if mixture is not None:
        selection = selection_of(mixture, None) if not mixture.needs_counts else AsSingleton(
            file_counts | "Selection" >> beam.Map(lambda counts: selection_of(mixture, counts)))
        mixture_counts = (raw_batches | "MixtureCounts" >> beam.Map(skipped_and_repeats, selection)
                          | "TotalMixtureCounts" >> beam.CombineGlobally(add_pairs))
    parsed = raw_batches | "ParseRecords" >> beam.ParDo(ParseRecordsFn(spec), selection=selection).with_outputs(
        REJECTED_TAG, main="parsed")
    rejected_parts.append(parsed[REJECTED_TAG])
    built = parsed.parsed | "BuildRows" >> beam.ParDo(BuildRowsFn(spec), selection=selection).with_outputs(
        REJECTED_TAG, main="rows")
    row_batches = built.rows
    rejected_parts.append(built[REJECTED_TAG])

    schema = plan.shard_schema()
    fragments = row_batches | "WriteFragments" >> beam.ParDo(
        WriteFragmentsFn(folder=store_folder(output, FRAGMENTS), schema=plan.shard_schema()))
    if plan.num_shards is not None:
        shard_count = p | "ShardCount" >> beam.Create([plan.num_shards])
    else:
        shard_count = (
            fragments
            | "FragmentBytes" >> beam.Map(lambda ref: ref.nbytes)
            | "TotalBytes" >> beam.CombineGlobally(sum)
            | "AutoShardCount" >> beam.Map(auto_num_shards)
        )
    shards = (
        fragments
        | "ShardBatches" >> beam.FlatMap(lambda ref, n: chunks_by_shard(ref.chunks, n), n=AsSingleton(shard_count))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShardFn(output=output, schema=schema, packing=plan.packing),
                                      num_shards=AsSingleton(shard_count))
    )
    # Each part is written to fragments in the stage that produced it; only the refs are flattened (a
    # Flatten of parts from several stages is materialised by local runners, in the runner process).
    rejected_folder = store_folder(output, REJECTED)
    rejected_files = (
        tuple(part | f"RejectedFragments{i}" >> beam.ParDo(WriteRejectedFragmentsFn(folder=rejected_folder))
              for i, part in enumerate(rejected_parts))
        | "AllRejected" >> beam.Flatten()
        | "RejectedChunks" >> beam.FlatMap(lambda ref, n: chunks_by_shard(ref.chunks, n), n=AsSingleton(shard_count))
        | "GroupRejected" >> beam.GroupByKey()
        | "WriteRejected" >> beam.ParDo(WriteRejectedFn(output=output), num_files=AsSingleton(shard_count))
    )
    if plan.audit:
        rows = row_batches | "Rows" >> beam.FlatMap(lambda batch: batch)
        sections = (rows, *rejected_parts) | "Audit" >> AuditStats(
            output=output, manifest_base=plan.manifest_base, probe=plan.audit_probe,
            format_options=task, tokenizer=spec.tokenizer, trust_remote_code=spec.trust_remote_code,
            packing=plan.packing, shards=shards)
    else:
        sections = p | "NoAudit" >> beam.Create([])
    commit_inputs = {}
    if mixture is not None:
        section = file_counts | "MixtureSection" >> beam.Map(
            lambda counts, pair: mixture_section(mixture, counts, *pair), AsSingleton(mixture_counts))
        sections = (sections, section) | "Sections" >> beam.Flatten()
        commit_inputs["mixture_counts"] = AsSingleton(mixture_counts)
    manifest = (
        p
        | "CommitTrigger" >> beam.Create([None])
        | "CommitManifest" >> beam.ParDo(
            CommitManifestFn(output=output, manifest_base=plan.manifest_base, schema=schema, packing=plan.packing),
            shards=AsList(shards),
            rejected_files=AsList(rejected_files),
            read_count=AsSingleton(read_count),
            num_shards=AsSingleton(shard_count),
            extra_sections=AsList(sections),
            **commit_inputs,
        )
    )
    return {"raw_batches": raw_batches, "row_batches": row_batches, "rejected_parts": tuple(rejected_parts),
            "shards": shards, "manifest": manifest, "read_count": read_count}
