"""The two engines that run a :class:`~pipeline.launch.plan.JobPlan` by calling the step functions of
:mod:`pipeline.steps`: :mod:`.local` (this process or forked workers, no Beam) and :mod:`.beam` (the Beam
graph: the local FnApiRunner or Dataflow). Both write the same bytes."""
