"""The engine: what a run does between "config loaded" and "run folder written"."""

from lossbench.engine.fit import resume, train

__all__ = ["resume", "train"]
