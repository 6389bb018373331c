"""chatshards job: the job's steps around the pure code in ``transforms`` (``pipeline`` imports
``transforms``, never the reverse), run by the local engine or as a Beam graph.

Entry point: ``python -m pipeline --input ... --output ...`` (:mod:`pipeline.launch.main`).

Modules:

- launch: :mod:`.main` (checks, then runs), :mod:`.cli` (flags -> ``JobArgs``), :mod:`.plan` (the frozen
  ``JobPlan`` built once at launch), :mod:`.output_folder` (claiming ``--output``), :mod:`.input_files`
  (checked decompression, launch checks of inputs), :mod:`.remote` (tokenizers and templates on any
  filesystem), :mod:`.version`, :mod:`.trace`;
- the steps, Beam-free: :mod:`.steps` (reading, parse/build a batch, dedup keys, fragments, shards, rejected
  files, audit files, the manifest), called by both engines;
- the local engine: :mod:`.local_engine` (the default command on local files: this process or forked
  workers, no Beam import);
- the graph: :mod:`.graph` (``build_graph(p, plan)``: the map of the job), :mod:`.sources` (``ReadRawRecords``),
  :mod:`.dedup` (``FindDuplicates``), :mod:`.build` (parse and row-building DoFns), :mod:`.sink` (shards),
  :mod:`.rejected` (rejected files), :mod:`.stats` (``AuditStats``, the audit branch), :mod:`.commit`
  (``CommitManifestFn``: the manifest, last);
- moving data without shuffling it: :mod:`.chunks` (the keyed-chunk store under ``<out>/.tmp/``) and its
  users :mod:`.spill` (record batches), :mod:`.fragments` (rows), :mod:`.rejected` (rejections);
  :mod:`.bundles` (``BundleBufferFn``);
- file helpers (Beam-free on local paths; Beam's ``FileSystems``, imported when needed, for remote ones):
  :mod:`.files` (atomic writes, digests, listing and deleting), :mod:`.globs` (matching ``--input``
  patterns as ``FileSystems.match`` does); :mod:`.input_files` also lists the inputs at launch;
- tools on a finished dataset: :mod:`.audit` (``python -m pipeline.audit``), :mod:`.inspect`.
"""
