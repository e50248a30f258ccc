"""Observability: rank-0 TensorBoard scalars, the profiler context, timing statistics."""
