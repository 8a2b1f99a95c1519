"""The registry the data formats fill: source name -> :class:`SourceEntry`.

A source is a function ``load(cfg, task, seed) -> Splits`` registered with
:func:`register_source`; every module of :mod:`lossbench.data.formats` is
imported (and so registered) by :func:`lossbench.data.formats.discover`.
Images are uint8 C x H x W tensors; targets follow the sample contract of
ARCHITECTURE.md. A source without a validation split returns ``val=None`` and
:func:`lossbench.data.build_data` makes a stratified one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lossbench.config import DataConfig
from lossbench.contract import TASKS
from lossbench.data.samples import SampleSet
from lossbench.errors import UserError
from lossbench.registry import Registry

#: what a segmentation target holds: one index mask, or C binary channels (sigmoid outputs)
SegTarget = Literal["index", "multilabel"]


@dataclass
class Splits:
    """What a source returns: the splits, the names of the classes, and what the generic steps must know.

    ``long_tail_applied``: the source already drew the long-tail profile
    (``data.imbalance_ratio``), so it is not subsampled again;
    ``frequency_ranks``: then each class's rank in that profile (0: the most
    frequent) when the source follows ``data.imbalance_order``, None when it
    always makes class 0 the most frequent and cannot permute. ``target``:
    for segmentation, whether masks are index masks or C binary channels.
    ``named_classes``: the class names say what a class is (folder names, a
    declared list, a dataset's own names), so two datasets' classes can be
    matched by name; False for names made up from indices (``"0"``,
    ``"class1"``), whose classes match by index only.
    """

    train: SampleSet
    val: SampleSet | None
    class_names: list[str]
    test: SampleSet | None = None
    long_tail_applied: bool = False
    target: SegTarget = "index"
    named_classes: bool = True
    frequency_ranks: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class SourceEntry:
    """A registered source: its loader and what it declares about itself.

    ``tasks``: the tasks it gives data for (:func:`lossbench.data.build_data`
    refuses the others before calling ``load``). ``shares_cache``: its images
    are worth keeping in the cache (``data.cache``) that cells and later runs
    share: it decodes image files one by one, or
    composes them by a costly generator (fashion_mnist_scenes); a sweep turns
    the cache on for such sources. Sources that read whole arrays quickly
    (synthetic, CIFAR-10, Fashion-MNIST) do not.
    """

    load: Callable[[DataConfig, str, int], Splits]
    tasks: tuple[str, ...]
    description: str = ""
    shares_cache: bool = False


SOURCES: Registry[SourceEntry] = Registry("source")


def register_source(name: str, *, tasks: tuple[str, ...], shares_cache: bool = False):
    """Decorator: file ``load(cfg, task, seed) -> Splits`` as data source ``name`` giving data for ``tasks``."""
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise ValueError(f"source {name!r}: tasks must be some of {TASKS}, not {tasks!r}")

    def add(load: Callable[[DataConfig, str, int], Splits]) -> Callable[[DataConfig, str, int], Splits]:
        SOURCES.register(name, load.__module__)(SourceEntry(load, tuple(tasks), (load.__doc__ or "").strip(),
                                                            shares_cache))
        return load

    return add


def source_for_task(name: str, task: str, where: str | None = None) -> SourceEntry:
    """The entry of source ``name`` (an unknown name is a UserError naming ``where``, the config file and key);
    a UserError naming the key to change unless it gives data for ``task``."""
    entry = SOURCES.get(name, where)
    if task not in entry.tasks:
        raise UserError(f"data.source {name!r} gives {' or '.join(entry.tasks)} data, but task is {task!r}; "
                        f"change task or data.source")
    return entry
