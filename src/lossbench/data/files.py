"""Image files as a sample set: the first scan, bad-file reporting and the decode-once cache.

:func:`open_files` is what every file-based source ends with. It decodes every
item once when the dataset is opened (in threads: PIL releases the GIL), so a
truncated JPEG, an empty file, a non-image with an image extension, a missing
or wrongly sized mask or a mask value outside the classes is found before
training starts, never in epoch 3; so is a value in a binary mask that is
neither 0 nor one of its folder's foreground values (``stray_mask_values``).
Bad items stop the run with one line naming the first of them and the fix,
or, with ``data.skip_bad: true``, are dropped and listed in one warning line.

With ``data.cache: true`` the same pass stores the decoded, resized uint8
images (and masks) in memory-mapped ``.npy`` files; later epochs and later
runs read those instead of decoding. Without the cache the scan's findings
(bad files, original sizes, class pixel counts) are still remembered in a
small JSON file, so the next run does not decode everything twice.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lossbench.config import DataConfig
from lossbench.data import cache
from lossbench.data.decode import BadFile, MaskSpec, read_image, read_target_mask, stray_mask_values
from lossbench.data.samples import SampleSet, TensorSamples, View
from lossbench.errors import UserError

SCAN_VERSION = 3  # 2: images with an absurd aspect ratio are bad files; 3: stray values in binary masks


@dataclass(frozen=True)
class FileItem:
    """One sample on disk: its image, a label (classification) or mask files (segmentation), and a name."""

    image: Path
    name: str
    label: int | None = None
    masks: tuple[Path | None, ...] = ()


@dataclass(frozen=True)
class Decoder:
    """Turns a :class:`FileItem` into ``(uint8 C x S x S image, target)`` arrays."""

    size: int
    channels: int
    mask: MaskSpec | None = None

    def key(self) -> list:
        return [self.size, self.channels, self.mask.key() if self.mask else None]

    def decode(self, item: FileItem) -> Decoded:
        """The item's arrays; raises :class:`BadFile`."""
        image, original = read_image(item.image, self.channels, self.size)
        mask, foreground = None, ()
        if self.mask is not None:
            mask, foreground = read_target_mask(item.masks, self.mask, item.image, original, self.size)
        return Decoded(image, mask, original, foreground)


class Decoded(NamedTuple):
    """One decoded item: image, target mask (None for a label), original (w, h), binary masks' non-zero values."""

    image: np.ndarray
    mask: np.ndarray | None
    original: tuple[int, int]
    foreground: tuple[tuple[int, ...], ...] = ()


class FileSamples(SampleSet):
    """Items decoded from disk on every access (the uncached path)."""

    def __init__(self, items: Sequence[FileItem], decoder: Decoder, sizes: Sequence[tuple[int, int]],
                 pixel_counts: np.ndarray | None = None) -> None:
        self.items = list(items)
        self.decoder = decoder
        self.names = [it.name for it in self.items]
        self.sizes = list(sizes)
        self._pixel_counts = pixel_counts

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        item = self.items[i]
        try:
            image, mask, *_ = self.decoder.decode(item)
        except BadFile as exc:
            raise UserError(f"{exc} (the file changed after the dataset was opened)") from None
        target = item.label if mask is None else torch.from_numpy(mask)
        return torch.from_numpy(image), target

    @property
    def targets(self) -> torch.Tensor | None:
        if self.decoder.mask is not None:
            return None
        return torch.tensor([it.label for it in self.items], dtype=torch.long)

    def pixel_counts(self, num_classes: int) -> np.ndarray | None:
        if self._pixel_counts is None:
            return None
        return self._pixel_counts[:, :num_classes]


def _fingerprint(items: Sequence[FileItem]) -> str:
    rows = []
    for it in items:
        row = [it.name]
        for p in (it.image, *it.masks):
            try:
                st = os.stat(p) if p is not None else None
                row.append([str(p), st.st_size, st.st_mtime_ns] if st else None)
            except OSError:
                row.append([str(p), "missing"])
        rows.append(row)
    return cache.digest(rows)


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _hist(mask: np.ndarray | None) -> list[int] | None:
    if mask is None:
        return None
    if mask.ndim == 3:
        return (mask.reshape(mask.shape[0], -1) > 0).sum(1).tolist()
    return np.bincount(mask.reshape(-1), minlength=256).tolist()


def _scan(items: Sequence[FileItem], decoder: Decoder, writer: cache.ArrayCacheWriter | None) -> dict[str, Any]:
    """Decode every item once; return sizes, per-item pixel histograms and bad items (index, message)."""
    sizes: list[list[int] | None] = [None] * len(items)
    hists: list[list[int] | None] = [None] * len(items)
    foreground: list[Any] = [None] * len(items)
    bad: list[list[Any]] = []

    def work(i: int) -> None:
        try:
            image, mask, original, foreground[i] = decoder.decode(items[i])
        except BadFile as exc:
            bad.append([i, str(exc)])
            return
        sizes[i] = list(original)
        hists[i] = _hist(mask)
        if writer is not None:
            writer.arrays["images"][i] = image
            if mask is not None:
                writer.arrays["masks"][i] = mask

    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(work, range(len(items))))
    if decoder.mask is not None and decoder.mask.kind != "index":
        for i, message in stray_mask_values(foreground, [it.masks for it in items]):
            bad.append([i, message])
            sizes[i] = hists[i] = None
    bad.sort()
    return {"version": SCAN_VERSION, "sizes": sizes, "hists": hists, "bad": bad}


def report_bad(bad: Sequence[tuple[int, str]] | Sequence[list], skip_bad: bool, what: str) -> list[str]:
    """Raise one UserError line for bad items, or (``skip_bad``) warn in one line and return their messages."""
    messages = [msg for _, msg in bad]
    if not messages:
        return []
    if not skip_bad:
        more = f" (and {len(messages) - 1} more bad files in {what})" if len(messages) > 1 else ""
        raise UserError(f"{messages[0]}{more}; or set data.skip_bad: true to skip bad files")
    shown = "; ".join(messages[:5]) + (f"; ... {len(messages) - 5} more" if len(messages) > 5 else "")
    print(f"lossbench: warning: skipped {len(messages)} bad file(s) in {what}: {shown}", file=sys.stderr)
    return messages


def open_files(items: Sequence[FileItem], decoder: Decoder, cfg: DataConfig, what: str, tag: str,
               skipped: Sequence[str] = ()) -> SampleSet:
    """Scan (or reuse an earlier scan / cache of) ``items`` and return the usable ones as a sample set.

    ``what`` names the split in messages (e.g. the folder), ``tag`` names cache
    entries (e.g. ``"folder-train"``). The returned set's ``skipped`` lists
    ``skipped`` (what the source already left out, e.g. bad CSV rows) and the
    messages of the items skipped here.
    """
    if not items:
        raise UserError(f"{what}: no images found; check data.root and the layout on the source's page "
                        "of the documentation")
    key = cache.digest([SCAN_VERSION, tag, decoder.key(), _fingerprint(items)])[:20]
    root = cache.cache_root(cfg)
    slug = "".join(c if c.isalnum() else "-" for c in tag)
    shapes = {"images": (len(items), decoder.channels, decoder.size, decoder.size)}
    if decoder.mask is not None:
        n_layers = len(items[0].masks) if decoder.mask.kind == "multilabel" else 0
        shapes["masks"] = (len(items),) + ((n_layers,) if n_layers else ()) + (decoder.size, decoder.size)

    arrays = None
    if cfg.cache:
        entry = root / f"{slug}-{decoder.size}px-{key}"
        opened = cache.open_cached_arrays(entry, list(shapes))
        if opened is None:
            writer = cache.ArrayCacheWriter(entry, shapes)
            scan = _scan(items, decoder, writer)
            writer.publish(scan)
            opened = cache.open_cached_arrays(entry, list(shapes))
            if opened is None:
                raise UserError(f"{entry}: the data cache could not be reopened; delete it or set data.cache: false")
        scan, arrays = opened
    else:
        memo = root / f"scan-{slug}-{decoder.size}px-{key}.json"
        scan = cache.read_json(memo)
        if not scan or scan.get("version") != SCAN_VERSION:
            scan = _scan(items, decoder, None)
            cache.write_json_atomic(memo, scan)

    skipped = [*skipped, *report_bad(scan["bad"], cfg.skip_bad, what)]
    good = [i for i, s in enumerate(scan["sizes"]) if s is not None]
    if not good:
        raise UserError(f"{what}: every image is bad; check data.root")
    sizes = [tuple(s) if s is not None else (0, 0) for s in scan["sizes"]]
    counts = None
    if decoder.mask is not None:
        width = max(len(h) for h in scan["hists"] if h is not None)
        counts = np.array([h if h is not None else [0] * width for h in scan["hists"]], dtype=np.int64)

    if arrays is not None:
        targets = arrays.get("masks")
        if targets is None:
            targets = np.array([it.label for it in items], dtype=np.int64)
        full: SampleSet = CachedSamples(arrays["images"], targets, [it.name for it in items], sizes, counts)
    else:
        full = FileSamples(items, decoder, sizes, counts)
    out = full if len(good) == len(items) else View(full, good)
    out.skipped = skipped
    return out


class CachedSamples(TensorSamples):
    """Samples read from the decode-once cache, with the scan's per-item pixel counts."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, names: list[str], sizes: list[tuple[int, int]],
                 counts: np.ndarray | None) -> None:
        super().__init__(images, targets, names, sizes)
        self._counts = counts

    def pixel_counts(self, num_classes: int) -> np.ndarray | None:
        return None if self._counts is None else self._counts[:, :num_classes]
