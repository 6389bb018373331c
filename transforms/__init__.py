"""chatshards: Beam-free record transforms, shard format and runtime collator."""
