"""Imbalance tools: long-tail profiles, stratified splits, class subsets, class counts, mean / std."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from lossbench.contract import IGNORE_INDEX


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class sizes of the exponential long-tail profile of Cui et al. 2019.

    Class k keeps ``n_max * ratio ** (-k / (K - 1))`` samples, so class 0 has
    ``n_max`` and the last class ``n_max / ratio`` (at least one).
    """
    if num_classes == 1:
        return [n_max]
    return [max(1, int(n_max * imbalance_ratio ** (-k / (num_classes - 1)))) for k in range(num_classes)]


def frequency_ranks(num_classes: int, order: str, seed: int) -> list[int]:
    """Each class's rank in the long-tail profile (0: the most frequent): ``fixed`` gives class k rank k,
    ``permuted`` a permutation drawn by ``seed``, so every seed has its own rare classes (the same for every
    configuration of a sweep that shares the seed, so comparisons stay paired)."""
    if order == "fixed":
        return list(range(num_classes))
    return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()


def class_counts(targets: Sequence[int] | torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """How many samples (classification) or pixels (index masks) each class has."""
    t = torch.as_tensor(targets).reshape(-1).long()
    t = t[(t != ignore_index) & (t >= 0) & (t < num_classes)]
    return torch.bincount(t, minlength=num_classes).tolist()


def stratified_split(labels: Sequence[int] | torch.Tensor | None, n: int, val_fraction: float, seed: int
                     ) -> tuple[list[int], list[int]]:
    """``(train indices, val indices)``: ``val_fraction`` of each class to validation, chosen by seed.

    Each class with at least two items gives at least one to validation and
    keeps at least one; without labels (segmentation) the split is plain random.
    Indices come back sorted, so the split depends only on the seed and the items.
    """
    g = torch.Generator().manual_seed(seed)
    groups = [list(range(n))] if labels is None else _by_class(labels)
    train: list[int] = []
    val: list[int] = []
    for members in groups:
        order = torch.randperm(len(members), generator=g).tolist()
        k = len(members)
        n_val = min(k - 1, max(1, round(k * val_fraction))) if k >= 2 else 0
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    return sorted(train), sorted(val)


def _by_class(labels: Sequence[int] | torch.Tensor) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for i, y in enumerate(torch.as_tensor(labels).tolist()):
        groups.setdefault(int(y), []).append(i)
    return [groups[k] for k in sorted(groups)]


def long_tail_indices(labels: Sequence[int] | torch.Tensor, num_classes: int, imbalance_ratio: float, seed: int,
                      ranks: Sequence[int] | None = None) -> list[int]:
    """Indices of a long-tailed subsample: class k keeps ``n_max * ratio ** (-r_k / (K - 1))`` items.

    ``r_k`` is class k's rank (``ranks``, default k: class 0 the most frequent;
    :func:`frequency_ranks`). ``n_max`` is the largest value for which every
    class has enough items, so the profile is exact (on a balanced set,
    ``n_max`` is the class size, as in CIFAR-10-LT). Which items are kept is
    drawn by seed.
    """
    labels = torch.as_tensor(labels).long()
    available = torch.bincount(labels, minlength=num_classes).tolist()
    if num_classes == 1 or imbalance_ratio == 1.0:
        return list(range(len(labels)))
    ranks = list(ranks) if ranks is not None else list(range(num_classes))
    factors = [imbalance_ratio ** (-ranks[k] / (num_classes - 1)) for k in range(num_classes)]
    n_max = min(int(a / f + 1e-9) for a, f in zip(available, factors))
    profile = long_tail_counts(max(n_max, 1), num_classes, imbalance_ratio)
    target = [profile[r] for r in ranks]
    g = torch.Generator().manual_seed(seed)
    keep: list[int] = []
    for k in range(num_classes):
        members = (labels == k).nonzero().flatten()
        order = torch.randperm(len(members), generator=g)
        keep += members[order[: min(target[k], len(members))]].tolist()
    return sorted(keep)


def class_subset_map(classes: Sequence[int | str], class_names: Sequence[str]) -> dict[int, int]:
    """Old class index -> new index 0..K-1 for a subset given by indices or names; ValueError names a bad entry."""
    mapping: dict[int, int] = {}
    for entry in classes:
        if isinstance(entry, str) and entry not in class_names and entry.lstrip("-").isdigit():
            entry = int(entry)
        if isinstance(entry, str):
            if entry not in class_names:
                raise ValueError(f"unknown class {entry!r}; classes are {', '.join(class_names)}")
            idx = list(class_names).index(entry)
        else:
            if not 0 <= entry < len(class_names):
                raise ValueError(f"class index {entry} is not in 0..{len(class_names) - 1}")
            idx = entry
        if idx in mapping:
            raise ValueError(f"class {entry!r} is listed twice")
        mapping[idx] = len(mapping)
    return mapping


def channel_mean_std(samples: Dataset, channels: int, batch_size: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images scaled to [0, 1], over every pixel of every sample (no augmentation)."""
    from lossbench.data.transforms import adapt_channels

    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, len(samples), batch_size):
        batch = torch.stack([adapt_channels(samples[i][0], channels)
                             for i in range(start, min(start + batch_size, len(samples)))])
        x = batch.to(torch.float64).div_(255).transpose(0, 1).reshape(channels, -1)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
        count += x.shape[1]
    mean = total / max(count, 1)
    std = (total_sq / max(count, 1) - mean * mean).clamp(min=0).sqrt().clamp(min=1e-6)
    return mean.tolist(), std.tolist()
