"""The Beam engine: :mod:`.run` (Beam options, claim, run), :mod:`.graph` (``build_graph(p, plan)``: the map
of the job) and the thin DoFns and PTransforms around the step functions: :mod:`.sources` (read and spill),
:mod:`.dedup`, :mod:`.build` (parse and build rows), :mod:`.fragments` (rows to chunks), :mod:`.sink`
(shards), :mod:`.rejected` (rejected files), :mod:`.stats` (the audit branch), :mod:`.commit` (the
manifest, last), :mod:`.bundles` (``BundleBufferFn``). The only package that imports ``apache_beam`` at
module level."""
