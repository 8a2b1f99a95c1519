"""``fashion_mnist_scenes``: segmentation canvases composed of real Fashion-MNIST items.

Each ``data.image_size`` square canvas (black) holds a few Fashion-MNIST
pictures at random positions and sizes, painted back to front. A pixel's label
is the class of the front-most item whose own (resized) pixel there is above
``data.scenes.threshold`` (classes 1..10 = the ten garments), else background
(0); the canvas shows exactly those item pixels, so image and mask agree pixel
for pixel. A model must find the items and recognise them.

Training canvases take their items from the train IDX files, validation and
test canvases from two disjoint halves of the t10k files (split per class by
``data.scenes.eval_seed``), so no item seen in training is evaluated. How often
each garment appears in training follows the exponential long-tail profile of
:func:`~lossbench.data.imbalance.long_tail_counts` at ``data.imbalance_ratio``
(class 0, T-shirt/top, most often; class 9, Ankle boot, least), exactly;
validation and test hold every garment equally often, as in the long-tail
classification protocol. Item sizes follow the class in every split (see
:class:`~lossbench.config.ScenesOptions`), so rare classes can also be small.

Everything is drawn from NumPy generators seeded by the run's seed (training)
or ``eval_seed`` (validation, test): the same options and seed give identical
canvases and masks. With ``data.cache: true`` the canvases are stored in the
decode-once cache under a key of every option that changes a pixel and of the
IDX files' sizes and modification times.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.config import DataConfig, ScenesOptions
from lossbench.data import cache
from lossbench.data.formats.common import require_root, resize_images
from lossbench.data.formats.fashion_mnist import DEFAULT_ROOT, NAMES, find_idx_file, read_idx_split
from lossbench.data.imbalance import long_tail_counts
from lossbench.data.samples import TensorSamples
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError

GENERATOR_VERSION = 1  # bump when the same options and seed would draw different canvases
CLASS_NAMES = ["background", *NAMES]
_STREAMS = {"train": 0, "val": 1, "test": 2, "halves": 3}
_FILES = {"train": "train", "val": "t10k", "test": "t10k"}


class SceneSamples(TensorSamples):
    """Canvases (N x 1 x S x S uint8), index masks (N x S x S uint8) and every item's placement.

    ``objects[i]`` lists canvas i's items back to front as ``[label, index, x, y, side]``:
    mask label (1..10), the item's index in its IDX file, top-left corner and side in pixels.
    """

    def __init__(self, images: Any, masks: Any, names: list[str], objects: list[list[list[int]]]) -> None:
        super().__init__(images, masks, names)
        self.objects = objects

    @property
    def masks(self) -> Any:
        return self._targets

    def object_counts(self, num_classes: int) -> list[int]:
        """How many items of each class the canvases hold (background: 0)."""
        labels = [obj[0] for canvas in self.objects for obj in canvas]
        return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes].tolist()


def occurrence_counts(total: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Items per class on the long-tail profile, for the largest ``n_max`` whose total is at most ``total``.

    At least one item per class, so the total exceeds ``total`` only when ``total < num_classes``.
    """
    lo, hi = 1, max(1, total)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(long_tail_counts(mid, num_classes, imbalance_ratio)) <= total:
            lo = mid
        else:
            hi = mid - 1
    return long_tail_counts(lo, num_classes, imbalance_ratio)


def items_per_canvas(n_canvases: int, total: int, bounds: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Items on each canvas, drawn in ``bounds`` and then moved one at a time until they add up to ``total``.

    Moves stay inside ``bounds`` while they can; past that a canvas takes one
    more (or one fewer, down to none) than ``bounds`` allow.
    """
    lo, hi = bounds
    counts = rng.integers(lo, hi + 1, n_canvases)
    while counts.sum() != total:
        step = 1 if counts.sum() < total else -1
        room = counts < hi if step > 0 else counts > lo
        if not room.any():
            room = np.ones(n_canvases, bool) if step > 0 else counts > 0
        counts[rng.choice(np.flatnonzero(room))] += step
    return counts


def scale_range(opts: ScenesOptions, label: int, num_garments: int) -> tuple[float, float]:
    """Item side / canvas side range of garment ``label`` (1-based): frequent -> rare, linear in its rank."""
    t = (label - 1) / max(num_garments - 1, 1)
    (f0, f1), (r0, r1) = opts.scale_frequent, opts.scale_rare
    return f0 + t * (r0 - f0), f1 + t * (r1 - f1)


def compose(
    items: torch.Tensor, pools: list[np.ndarray], plan: dict[str, Any], rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[list[list[int]]]]:
    """``(canvases N x 1 x S x S, masks N x S x S, objects)`` of a split's plan (see :func:`split_plan`).

    ``items`` holds the 1 x 28 x 28 pictures, ``pools[k]`` the indices of garment k
    that may be used (cycled through in a seeded order when more are needed).
    """
    counts = occurrence_counts(round(plan["canvases"] * sum(plan["objects"]) / 2), len(pools), plan["ratio"])
    drawn = []
    for k, (pool, n) in enumerate(zip(pools, counts)):
        if n and not len(pool):
            raise UserError(f"data.root: no {NAMES[k]!r} item for the {plan['split']} canvases; the IDX files hold "
                            f"too few items of that class")
        order = rng.permutation(pool)
        drawn += [(k + 1, int(order[j % len(order)])) for j in range(n)]
    drawn = [drawn[j] for j in rng.permutation(len(drawn))]
    n_canvases, size = plan["canvases"], plan["size"]
    per_canvas = items_per_canvas(n_canvases, len(drawn), tuple(plan["objects"]), rng)
    canvases = np.zeros((n_canvases, 1, size, size), np.uint8)
    masks = np.zeros((n_canvases, size, size), np.uint8)
    objects: list[list[list[int]]] = []
    start = 0
    for i, n in enumerate(per_canvas):
        placed = []
        for label, index in drawn[start:start + n]:
            lo, hi = plan["scales"][label - 1]
            side = min(size, max(2, round(rng.uniform(lo, hi) * size)))
            x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
            patch = resize_images(items[index:index + 1], side)[0, 0].numpy()
            inside = patch > plan["threshold"]
            canvases[i, 0, y:y + side, x:x + side][inside] = patch[inside]
            masks[i, y:y + side, x:x + side][inside] = label
            placed.append([label, index, x, y, side])
        objects.append(placed)
        start += n
    return canvases, masks, objects


def split_plan(cfg: DataConfig, split: str, seed: int) -> dict[str, Any]:
    """Everything that decides a split's pixels, and nothing else: the generator's only input and the cache key.

    ``seed`` is the run's seed for training; validation and test use ``eval_seed``,
    which also splits t10k into their two halves.
    """
    opts = cfg.scenes
    return {
        "version": GENERATOR_VERSION, "split": split, "size": cfg.image_size,
        "canvases": getattr(opts, f"{split}_canvases"),
        "ratio": cfg.imbalance_ratio if split == "train" else 1.0,
        "seed": seed if split == "train" else opts.eval_seed,
        "objects": list(opts.objects), "threshold": opts.threshold,
        "scales": [list(scale_range(opts, label, len(NAMES))) for label in range(1, len(NAMES) + 1)],
    }


class _Items:
    """The train and t10k pictures and labels, read from the IDX files on first use."""

    def __init__(self, root: Path, paths: dict[str, list[Path]]) -> None:
        self.root, self.paths, self._read = root, paths, {}

    def get(self, prefix: str) -> tuple[torch.Tensor, np.ndarray]:
        if prefix not in self._read:
            samples = read_idx_split(self.root, prefix, 28)
            self._read[prefix] = (samples.images, samples.targets.numpy())
        return self._read[prefix]

    def fingerprint(self) -> list[Any]:
        return [[str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for ps in self.paths.values() for p in ps]


def _pools(labels: np.ndarray, split: str, seed: int) -> list[np.ndarray]:
    """Indices each garment's items may come from: all of train, or the val / test half of t10k (split by seed)."""
    by_class = [np.flatnonzero(labels == k) for k in range(len(NAMES))]
    if split == "train":
        return by_class
    rng = np.random.default_rng([seed, _STREAMS["halves"]])
    halves = []
    for members in by_class:
        order = rng.permutation(members)
        cut = (len(order) + 1) // 2
        halves.append(np.sort(order[:cut] if split == "val" else order[cut:]))
    return halves


def _generate(items: _Items, plan: dict[str, Any]) -> SceneSamples:
    split, prefix = plan["split"], _FILES[plan["split"]]
    images, labels = items.get(prefix)
    rng = np.random.default_rng([plan["seed"], _STREAMS[split]])
    canvases, masks, objects = compose(images, _pools(labels, split, plan["seed"]), plan, rng)
    names = [f"{split}/{i}=" + "+".join(f"{prefix}:{obj[1]}" for obj in placed) for i, placed in enumerate(objects)]
    return SceneSamples(canvases, masks, names, objects)


def _cached(cfg: DataConfig, items: _Items, plan: dict[str, Any]) -> SceneSamples:
    """The split from the decode-once cache, generating and storing it on a miss."""
    key = cache.digest([plan, items.fingerprint()])[:20]
    entry = cache.cache_root(cfg) / f"scenes-{plan['split']}-{key}"
    opened = cache.open_cached_arrays(entry, ["images", "masks"])
    if opened is None:
        made = _generate(items, plan)
        writer = cache.ArrayCacheWriter(entry, {"images": made.images.shape, "masks": made.masks.shape})
        writer.arrays["images"][:] = made.images
        writer.arrays["masks"][:] = made.masks
        writer.publish({"names": made.names, "objects": made.objects})
        opened = cache.open_cached_arrays(entry, ["images", "masks"])
        if opened is None:
            return made
    meta, arrays = opened
    return SceneSamples(arrays["images"], arrays["masks"], meta["names"], meta["objects"])


@register_source("fashion_mnist_scenes", tasks=("segmentation",), shares_cache=True)
def fashion_mnist_scenes_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """Canvases of real Fashion-MNIST items, masks of their garment classes; long-tailed training occurrence."""
    if cfg.num_classes not in (None, len(CLASS_NAMES)):
        raise UserError(f"data.num_classes: fashion_mnist_scenes has {len(CLASS_NAMES)} classes (background and "
                        f"10 garments), got {cfg.num_classes}; remove data.num_classes")
    root = require_root(cfg, DEFAULT_ROOT)
    paths = {}
    for prefix in ("train", "t10k"):
        found = [find_idx_file(root, f"{prefix}-{kind}-idx{dim}-ubyte") for kind, dim in (("images", 3), ("labels", 1))]
        if None in found:
            raise UserError(f"{root}: no {prefix}-images-idx3-ubyte.gz / {prefix}-labels-idx1-ubyte.gz (scenes need "
                            f"both train and t10k files); set data.root, or install Debian's dataset-fashion-mnist")
        paths[prefix] = found
    items = _Items(root, paths)
    sets = {}
    for split in ("train", "val", "test"):
        plan = split_plan(cfg, split, seed)
        sets[split] = _cached(cfg, items, plan) if cfg.cache else _generate(items, plan)
    return Splits(sets["train"], sets["val"], list(CLASS_NAMES), test=sets["test"],
                  long_tail_applied=True)
