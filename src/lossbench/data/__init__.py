"""The data layer: a source's splits, made usable for training.

:func:`build_data` opens the configured source (which scans its files once),
makes a stratified validation split when the source has none, applies the
class subset and the long-tail subsample, counts classes, resolves
normalization and wraps the splits in joint image / mask transforms. Sources
are the registered formats of :mod:`lossbench.data.formats` (see
:mod:`lossbench.data.registry`).

With ``eval_split: test`` the source's test split is evaluated every epoch;
``holdout: true`` then also keeps a validation split out of training (the
source's, or a stratified share of train taken before the long-tail
subsample), for whatever must be chosen without seeing the test set.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lossbench.config import DataConfig, Experiment
from lossbench.contract import IGNORE_INDEX
from lossbench.data import cache, formats  # noqa: F401  (formats: registers every source)
from lossbench.data.files import SCAN_VERSION
from lossbench.data.imbalance import (
    channel_mean_std,
    class_counts,
    class_subset_map,
    frequency_ranks,
    long_tail_indices,
    stratified_split,
)
from lossbench.data.registry import SOURCES, Splits, source_for_task
from lossbench.data.samples import SampleSet, View
from lossbench.data.transforms import SampleTransform, Transformed, normalization
from lossbench.errors import UserError

__all__ = ["DataBundle", "PreparedSplits", "SOURCES", "Splits", "TargetKind", "build_data", "prepare_splits",
           "resolve_config"]

#: what a sample's target is: a class label, an index mask, or C binary mask channels (sigmoid outputs)
TargetKind = Literal["label", "index", "multilabel"]


@dataclass
class DataBundle:
    """What the engine receives: ready datasets, class names and training class counts.

    ``run_files`` maps file names to text the engine writes into the run folder
    (``split.json``: the items of each split, so a split can be reproduced;
    ``class_counts.json``; ``normalization.json``; ``skipped_files.json`` when
    bad files were skipped). ``sample_weights`` is set for class-balanced
    sampling and used by :func:`lossbench.data.loaders.build_loaders`.
    ``target`` says what the targets are; the run folder records it so that
    predictions read the network's outputs the way training did.
    ``named_classes``: whether the class names say what the classes are
    (:class:`Splits`), so that other data can be matched to them by name;
    ``split.json`` records it with the names.

    ``val`` is the split evaluated every epoch (the source's test split under
    ``eval_split: test``). ``holdout`` is the held-out validation split of
    ``eval_split: test`` with ``data.holdout: true``, never trained on nor
    evaluated per epoch: the split to choose on (post-hoc logit-adjustment
    tau, hyper-parameters, an epoch) without seeing the test set; else None.
    """

    train: Dataset
    val: Dataset
    class_names: list[str]
    class_counts: list[int]
    test: Dataset | None = None
    holdout: Dataset | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    sample_weights: list[float] | None = None
    run_files: dict[str, str] = field(default_factory=dict)
    target: TargetKind = "label"
    named_classes: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class PreparedSplits:
    """Untransformed splits after the generic steps; what ``data stats`` and :func:`build_data` share."""

    train: SampleSet
    val: SampleSet
    test: SampleSet | None
    class_names: list[str]
    class_counts: list[int]
    channels: int
    target: TargetKind
    generated_val: bool
    skipped: list[str]
    holdout: SampleSet | None = None
    generated_holdout: bool = False
    named_classes: bool = True
    frequency_ranks: list[int] | None = None


def resolve_config(exp: Experiment) -> DataConfig:
    """The data config with ``channels: auto`` replaced by the model's input channels (1 or 3)."""
    cfg = exp.data
    if cfg.channels == "auto":
        cfg = cfg.model_copy(update={"channels": exp.model.in_channels if exp.model.in_channels in (1, 3) else 3})
    return cfg


def _labels(samples: Dataset) -> torch.Tensor | None:
    targets = getattr(samples, "targets", None)
    return None if targets is None else torch.as_tensor(targets)


def _keep(samples: SampleSet, indices: list[int], label_map: dict[int, int] | None = None) -> SampleSet:
    if label_map is None and len(indices) == len(samples):
        return samples
    return View(samples, indices, label_map)


def count_classes(samples: SampleSet, num_classes: int) -> list[int]:
    """Images per class (labels), else pixels per class (masks), without decoding where the set knows them."""
    labels = _labels(samples)
    if labels is not None:
        return class_counts(labels, num_classes, IGNORE_INDEX)
    pixels = samples.pixel_counts(num_classes)
    if pixels is None:
        return class_counts(torch.stack([torch.as_tensor(samples[i][1]) for i in range(len(samples))]),
                            num_classes, IGNORE_INDEX)
    return np.asarray(pixels).sum(0).astype(np.int64).tolist()


def _split_off(train: SampleSet, fraction: float, seed: int) -> tuple[SampleSet, SampleSet]:
    """``(rest, held out)``: a stratified ``fraction`` of ``train`` held out, drawn by ``seed``."""
    tr, va = stratified_split(_labels(train), len(train), fraction, seed)
    if not va:
        raise UserError(f"data.val_fraction: {len(train)} training images leave none for validation; "
                        f"add images or a validation split")
    return View(train, tr), View(train, va)


def prepare_splits(exp: Experiment) -> PreparedSplits:
    """Open the source and apply validation split, class subset and long tail; no transforms."""
    cfg = resolve_config(exp)
    if exp.task == "segmentation" and cfg.classes:
        raise UserError("data.classes: class subsets are for classification; remove it for segmentation")
    if cfg.sampler == "balanced" and exp.task != "classification":
        raise UserError("data.sampler: balanced sampling is for classification; use shuffle for segmentation")
    splits: Splits = source_for_task(cfg.source, exp.task, exp.where("data.source")).load(cfg, exp.task, exp.seed)
    _check_declared_count(cfg, splits)
    train, val, holdout = splits.train, splits.val, None
    generated_holdout = False
    if cfg.eval_split == "test":
        if splits.test is None:
            raise UserError(f"data.eval_split: test, but source {cfg.source!r} found no test split; "
                            f"use eval_split: val")
        if cfg.holdout:
            holdout, generated_holdout = val, val is None
            if holdout is None:
                train, holdout = _split_off(train, cfg.val_fraction, exp.seed)
        val = splits.test
    generated_val = val is None
    if val is None:
        train, val = _split_off(train, cfg.val_fraction, exp.seed)
    test = splits.test if cfg.eval_split == "val" else None
    names = list(splits.class_names)
    if cfg.classes:
        try:
            mapping = class_subset_map(cfg.classes, names)
        except ValueError as exc:
            raise UserError(f"data.classes: {exc}") from None

        def subset(s: SampleSet) -> SampleSet:
            labels = _labels(s).tolist()
            return _keep(s, [i for i, y in enumerate(labels) if y in mapping], mapping)

        train, val = subset(train), subset(val)
        test = subset(test) if test is not None else None
        holdout = subset(holdout) if holdout is not None else None
        names = [names[k] for k in mapping]
    ranks = _frequency_ranks(exp, splits, len(names), list(mapping) if cfg.classes else None)
    if cfg.imbalance_ratio > 1 and not splits.long_tail_applied:
        if exp.task != "classification":
            raise UserError("data.imbalance_ratio: long-tail subsampling is for classification; "
                            "remove it for segmentation")
        train = _keep(train, long_tail_indices(_labels(train), len(names), cfg.imbalance_ratio, exp.seed, ranks))
    skipped = [m for s in (splits.train, splits.val, splits.test) if s is not None for m in s.skipped]
    target = splits.target if exp.task == "segmentation" else "label"
    if exp.task == "classification" and len(names) < 2:
        where = f" at {cfg.root}" if cfg.root else ""
        raise UserError(f"the {cfg.source} data{where} has {len(names)} class ({', '.join(names) or 'none'}); "
                        "a classifier tells at least two apart, add the other classes' images")
    counts = count_classes(train, len(names))
    _warn_empty_classes(cfg, names, counts, "pixels" if exp.task == "segmentation" else "images")
    return PreparedSplits(train, val, test, names, counts, int(cfg.channels), target,
                          generated_val, skipped, holdout, generated_holdout, splits.named_classes, ranks)


def _frequency_ranks(exp: Experiment, splits: Splits, num_classes: int, kept: list[int] | None) -> list[int] | None:
    """Each class's rank in the long-tail profile (0: the most frequent), None without a long tail.

    Drawn here for the long tail :func:`prepare_splits` subsamples, the source's own when it drew the long tail
    (its classes ``kept`` by a class subset, ranked among themselves); ``imbalance_order: permuted`` is refused
    for data whose long tail cannot be permuted.
    """
    cfg = exp.data
    if cfg.imbalance_ratio == 1 or exp.task != "classification":
        if cfg.imbalance_order == "permuted" and exp.task != "classification":
            raise UserError("data.imbalance_order: permuted is for classification long tails; remove it")
        return None
    if not splits.long_tail_applied:
        return frequency_ranks(num_classes, cfg.imbalance_order, exp.seed)
    if splits.frequency_ranks is None:
        if cfg.imbalance_order == "permuted":
            raise UserError(f"data.imbalance_order: permuted, but source {cfg.source!r} draws its own long tail "
                            "with class 0 the most frequent; use imbalance_order: fixed")
        return list(range(num_classes))
    source_ranks = [splits.frequency_ranks[k] for k in kept] if kept is not None else splits.frequency_ranks
    return [sorted(source_ranks).index(r) for r in source_ranks]


def _check_declared_count(cfg: DataConfig, splits: Splits) -> None:
    """UserError when ``data.num_classes`` disagrees with the classes the source found."""
    if cfg.num_classes is not None and cfg.num_classes != splits.num_classes:
        where = f" at {cfg.root}" if cfg.root else ""
        raise UserError(f"data.num_classes is {cfg.num_classes} but the {cfg.source} data{where} has "
                        f"{splits.num_classes} classes ({', '.join(splits.class_names)}); set data.num_classes: "
                        f"{splits.num_classes} or remove it")


def _warn_empty_classes(cfg: DataConfig, names: list[str], counts: list[int], unit: str) -> None:
    """One warning line naming the declared classes that no training image (or pixel) belongs to.

    Sources refuse such classes where they inferred the class count from the
    data; a class declared but absent (a class list, a mask folder) may be
    legitimate, but the model cannot learn it, so the user hears of it.
    """
    empty = [name for name, n in zip(names, counts) if n == 0]
    if empty:
        where = f" at {cfg.root}" if cfg.root else ""
        shown = ", ".join(map(repr, empty[:10])) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        print(f"lossbench: warning: the {cfg.source} data{where} has no training {unit} of class"
              f"{'es' * (len(empty) > 1)} {shown}; the model cannot learn "
              f"{'them' if len(empty) > 1 else 'it'}", file=sys.stderr)


def resolve_normalization(exp: Experiment, prepared: PreparedSplits) -> tuple[list[float] | None, list[float] | None]:
    """``(mean, std)``; ``auto`` is computed over the training images once and cached."""
    if exp.data.normalize != "auto":
        return normalization(exp.data.normalize, prepared.channels)
    return auto_mean_std(exp, prepared)


def auto_mean_std(exp: Experiment, prepared: PreparedSplits) -> tuple[list[float], list[float]]:
    """Per-channel mean / std of the training images, read from the cache or computed and cached."""
    cfg = exp.data
    names = getattr(prepared.train, "names", None)
    key = cache.digest([SCAN_VERSION, cfg.source, str(cfg.root), cfg.image_size, prepared.channels, names])[:20]
    path = cache.cache_root(cfg) / f"stats-{cfg.source}-{key}.json"
    found = cache.read_json(path)
    if found and len(found.get("mean", [])) == prepared.channels:
        return found["mean"], found["std"]
    mean, std = channel_mean_std(prepared.train, prepared.channels)
    cache.write_json_atomic(path, {"mean": mean, "std": std})
    return mean, std


def _split_record(exp: Experiment, prepared: PreparedSplits) -> dict:
    """What split.json holds: how the splits were made and the items of each (``val``: the evaluated one)."""
    generated = prepared.generated_val or prepared.generated_holdout
    record = {"source": exp.data.source, "root": str(exp.data.root) if exp.data.root else None,
              "seed": exp.seed, "val_fraction": exp.data.val_fraction if generated else None,
              "generated_val": prepared.generated_val, "eval_split": exp.data.eval_split,
              "generated_holdout": prepared.generated_holdout, "class_names": prepared.class_names,
              "named_classes": prepared.named_classes, "imbalance_order": exp.data.imbalance_order,
              "frequency_ranks": prepared.frequency_ranks}
    for split in ("train", "val", "test", "holdout"):
        s = getattr(prepared, split)
        if s is not None:
            record[split] = list(getattr(s, "names", range(len(s))))
    return record


def build_data(exp: Experiment) -> DataBundle:
    """Open the configured source and return transformed train / val (/ test) sets with class counts."""
    prepared = prepare_splits(exp)
    mean, std = resolve_normalization(exp, prepared)
    size, channels = exp.data.image_size, prepared.channels
    train_tf = SampleTransform(size, channels, mean, std, exp.data.augment)
    eval_tf = SampleTransform(size, channels, mean, std, None)
    weights = None
    if exp.data.sampler == "balanced":
        labels = _labels(prepared.train).tolist()
        weights = [1.0 / max(prepared.class_counts[y], 1) for y in labels]
    run_files = {
        "split.json": json.dumps(_split_record(exp, prepared)),
        "class_counts.json": json.dumps(dict(zip(prepared.class_names, prepared.class_counts)), indent=1),
        "normalization.json": json.dumps({"mean": mean, "std": std}),
    }
    if prepared.skipped:
        run_files["skipped_files.json"] = json.dumps(prepared.skipped, indent=1)
    return DataBundle(
        train=Transformed(prepared.train, train_tf),
        val=Transformed(prepared.val, eval_tf),
        class_names=prepared.class_names,
        class_counts=prepared.class_counts,
        target=prepared.target,
        test=Transformed(prepared.test, eval_tf) if prepared.test is not None else None,
        holdout=Transformed(prepared.holdout, eval_tf) if prepared.holdout is not None else None,
        mean=mean,
        std=std,
        sample_weights=weights,
        run_files=run_files,
        named_classes=prepared.named_classes,
    )
