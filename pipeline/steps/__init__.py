"""The job's steps as plain functions, without Beam (datatrove's "blocks callable without an executor").

The Beam graph (:mod:`pipeline.engines.beam.graph`) wraps each in a thin DoFn or PTransform; the local engine
(:mod:`pipeline.engines.local.engine`) calls them directly, in one process or in worker processes. Both produce the
same bytes, because every output depends only on the set of rows and rejections, never on their order.

- :mod:`.reading`: one input file -> record batches;
- :mod:`.records`: ``BuilderSpec``; ``parse_batch`` and ``build_batch`` (raw records -> rows, rejections);
- :mod:`.dedup`: ``--dedup`` keys and the choice of the kept record;
- :mod:`.fragments`: rows -> sorted Arrow fragments (chunk files), read back per shard;
- :mod:`.shards`: ``write_shard`` (a shard from its fragment chunks), the shard count;
- :mod:`.rejected`: rejection lines, fragments and ``write_rejected_file``;
- :mod:`.audit`: ``write_audit`` (the audit files from merged accumulators);
- :mod:`.manifest`: ``commit_manifest`` (counts reconciled, the manifest written last).
"""
