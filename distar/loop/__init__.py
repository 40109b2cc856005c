"""The loop layer: the world- and method-agnostic training loop (``trainer``): schedules,
evaluation, checkpoints, callbacks."""
