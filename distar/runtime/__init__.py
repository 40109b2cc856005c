"""The runtime layer: where and how a run executes -- devices, process groups (``distributed``),
FSDP2 (``sharding``), checkpoints, the loop's callbacks (``callbacks``: progress, JSONL, EMA,
warm-up), a run's records on disk (``records``), the optimiser step parts (``step_parts``),
timing, and the one way to start Ray (``local_ray``)."""
