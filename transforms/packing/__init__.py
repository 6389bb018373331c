"""Packing: rows -> fixed-capacity packed rows (``--pack-length``), Beam-free and pure.

Package map (import from the modules):

- :mod:`~transforms.packing.options`  ``PackingOptions`` (length, strategy), which tasks can be packed;
- :mod:`~transforms.packing.bins`     ``plan_bins``: best-fit decreasing, first-fit decreasing, sequential;
- :mod:`~transforms.packing.rows`     ``pack_table``/``packed_schema``: the packed row contract;
- :mod:`~transforms.packing.mrope`    Qwen-VL 3-D M-RoPE positions per sequence (``get_rope_index``'s rule);
- :mod:`~transforms.packing.stats`    per-shard figures and the ``packing`` report (efficiency, fill, padding);
- :mod:`~transforms.packing.unpack`   packed rows back to sequences (reading tools).

The job packs each shard's rows when it writes the shard (``pipeline/steps/shards.py``); the runtime
serves packed rows with a block-diagonal attention mask or padding-free (``transforms/runtime/collate.py``).
Documentation: ``docs/packing.md``.
"""
