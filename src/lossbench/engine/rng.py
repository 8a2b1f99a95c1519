"""Seeding and capturing every random stream a run draws from, for repeatable runs and exact resume.

A resumed run must continue each stream where the killed one stopped:
Python's ``random``, NumPy's global generator, torch's CPU and CUDA
generators, and the ``torch.Generator`` objects a DataLoader shuffles and seeds
its workers with. States are stored as types ``torch.load(weights_only=True)``
accepts.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    """This process's RNG states, as types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)


def _tuples(x: Any) -> Any:
    """Lists back to the tuples ``random.setstate`` needs."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """The torch generators that decide a loader's order and worker seeds (shuffle, samplers)."""
    found: list[torch.Generator] = []
    for owner in (loader, loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found
