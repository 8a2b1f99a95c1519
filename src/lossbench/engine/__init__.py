"""The engine: what a run does between "config loaded" and "run folder written"."""

from lossbench.engine.fit import train

__all__ = ["train"]
