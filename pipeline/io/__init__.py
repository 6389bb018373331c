"""File layer of the job (Beam-free on local paths; Beam's ``FileSystems``, imported when needed, for
``gs://`` and other remote paths): :mod:`.files` (atomic writes, digests, listing, deleting), :mod:`.globs`
(matching ``--input`` patterns as ``FileSystems.match`` does), :mod:`.input_files` (opening inputs with
checked decompression; listing them), :mod:`.chunks` (the keyed-chunk store under ``<out>/.tmp/``) and
:mod:`.spill` (record batches in it), :mod:`.remote` (tokenizers and templates on any filesystem),
:mod:`.trace` (start-up events for benchmarks)."""
