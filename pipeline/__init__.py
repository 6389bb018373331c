"""chatshards Beam job: options, sources, DoFns/PTransforms wrapping ``transforms``, shard sink, stats.

Entry point: ``python -m pipeline --input ... --output ...`` (see ``pipeline.main``).
"""
