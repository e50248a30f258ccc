"""Training: the loop over a sharded task, per-split evaluators, checkpoint state and I/O."""
