"""chatshards job: the job's steps around the pure code in ``transforms`` (``pipeline`` imports
``transforms``, never the reverse), run by the local engine or as a Beam graph.

Entry points: ``python -m pipeline`` (:mod:`pipeline.launch.main`; the ``chatshards`` console script),
``python -m pipeline.audit``, ``python -m pipeline.inspect``; the Flex Template launcher
(``deploy/launcher.py``) calls :func:`pipeline.launch.main.main`.

Packages (which one a change belongs in: ``docs/design.md``):

- :mod:`.launch` -- from flags to a running job: :mod:`.launch.main` (the sequence), :mod:`.launch.cli` (flags ->
  ``JobArgs``, ``ConfigError``), :mod:`.launch.checks` (launch-time checks -> the plan), :mod:`.launch.plan`
  (the frozen ``JobPlan`` both engines run), :mod:`.launch.engine_choice` (which engine, how many processes),
  :mod:`.launch.output_folder` (claiming ``--output``), :mod:`.launch.time_limit`, :mod:`.launch.config_file`
  (``--config job.yaml``: the file, its datasets -> ``JobArgs``), :mod:`.launch.preview` (``--preview``);
- :mod:`.steps` -- the Beam-free step functions both engines call: :mod:`.steps.reading` (a file -> record
  batches), :mod:`.steps.records` (parse and build a batch; ``BuilderSpec``), :mod:`.steps.dedup`,
  :mod:`.steps.fragments` (rows -> chunk files), :mod:`.steps.shards`, :mod:`.steps.rejected`,
  :mod:`.steps.audit`, :mod:`.steps.manifest` (the commit check and the manifest, last), :mod:`.steps.mixture`
  (a datasets list: file counts, the per-record selection, the manifest's mixture section);
- :mod:`.engines` -- :mod:`.engines.local` (:mod:`~.engines.local.engine`: the phases in order;
  :mod:`~.engines.local.parts`: what one process builds and writes; :mod:`~.engines.local.workers`: forked
  workers and their fault handling; :mod:`~.engines.local.progress`: the progress line) and :mod:`.engines.beam`
  (:mod:`~.engines.beam.run`, :mod:`~.engines.beam.graph` and the thin DoFns/PTransforms; the only package importing
  Beam at module level);
- :mod:`.io` -- files on any filesystem: :mod:`.io.files`, :mod:`.io.globs`, :mod:`.io.input_files` (checked
  decompression), :mod:`.io.chunks` (the keyed-chunk store under ``<out>/.tmp/``), :mod:`.io.spill`,
  :mod:`.io.remote` (tokenizers and templates), :mod:`.io.trace`;
- tools on a finished dataset: :mod:`.audit` (``python -m pipeline.audit``), :mod:`.inspect`;
  :mod:`.version`.
"""
