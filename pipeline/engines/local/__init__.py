"""The local engine (the default command on local files; no Beam import): :mod:`.engine` runs the job's
phases in order (read, dedup, build, write, audit, commit), :mod:`.parts` is what one process builds and
writes, :mod:`.workers` the forked worker processes and their fault handling."""
