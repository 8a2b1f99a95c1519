"""Data-loading benchmark: a typical per-item PIL pipeline vs lossbench's loader with the decode-once cache.

Builds (once, then reuses) a folder dataset of 512 x 512 JPEGs, then measures
images per second over one epoch of

(a) the plain pipeline a lab script uses: ``PIL.Image.open(...).convert("RGB")``
    then torchvision transforms (resize, random resized crop, horizontal flip,
    to tensor, normalize) on every item, every epoch;
(b) ``lossbench``'s loader (``source: folder``, ``cache: true``) at epoch 2,
    i.e. reading decoded, resized uint8 images from the memory-mapped cache,
    with the same augmentation (random resized crop, flip, normalize).

Both use the same DataLoader batch size and worker count; each is timed on its
second epoch so the OS file cache is warm for both.

    PYTHONPATH=src python benchmarks/data.py [--images 3000] [--size 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from lossbench.config import Experiment
from lossbench.data import build_data
from lossbench.data.loaders import build_loaders


def make_dataset(root: Path, n: int, classes: int = 10, side: int = 512) -> None:
    """Write ``n`` smooth, photo-like 512 x 512 JPEGs into ``root/<class>/`` (skipped when already there)."""
    marker = root / f".complete-{n}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for i in range(n):
        k = i % classes
        folder = root / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.5, 6, 3)
        base = np.stack([np.sin(a * xx * 6 + k), np.cos(b * yy * 6), np.sin(c * (xx + yy) * 4)], -1)
        noise = rng.normal(0, 0.08, (side // 8, side // 8, 3)).repeat(8, 0).repeat(8, 1)
        img = np.clip((base * 0.4 + 0.5 + noise) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    marker.touch()


class PlainFolder(Dataset):
    """The usual lab-script dataset: open, decode and transform each file on every access."""

    def __init__(self, root: Path, size: int) -> None:
        self.files = sorted(root.glob("*/*.jpg"))
        self.labels = [int(p.parent.name.removeprefix("class")) for p in self.files]
        self.tf = T.Compose([
            T.Resize((size, size)),
            T.RandomResizedCrop(size, scale=(0.5, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB")), self.labels[i]


def images_per_second(loader: DataLoader, epochs: int = 2) -> float:
    """Throughput of the last of ``epochs`` passes over ``loader``."""
    rate = 0.0
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for images, _ in loader:
            n += images.shape[0]
        rate = n / (time.perf_counter() - start)
    return rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128, help="side images are resized to")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "lossbench-bench-data"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    root = Path(args.dir) / "jpegs"
    t0 = time.perf_counter()
    make_dataset(root, args.images)
    print(f"dataset: {args.images} JPEGs of 512x512 in {root} ({time.perf_counter() - t0:.1f}s to make or find)")

    plain = DataLoader(PlainFolder(root, args.size), batch_size=args.batch, shuffle=True,
                       num_workers=args.workers, persistent_workers=args.workers > 0)
    plain_rate = images_per_second(plain)

    cache_dir = Path(args.dir) / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    exp = Experiment(data={
        "source": "folder", "root": str(root), "image_size": args.size, "cache": True, "cache_dir": str(cache_dir),
        "val_fraction": 0.01, "augment": {"random_resized_crop": [0.5, 1.0], "hflip": 0.5},
        "num_workers": args.workers,
    }, batch_size=args.batch)
    t0 = time.perf_counter()
    data = build_data(exp)
    first_open = time.perf_counter() - t0
    loader, _ = build_loaders(data, args.batch, args.workers, seed=0)
    lb_rate = images_per_second(loader)

    print(f"first open (scan + build cache): {first_open:.1f}s")
    print(f"{'pipeline':<48} {'images/s':>10}")
    print(f"{'(a) PIL open + torchvision transforms, per item':<48} {plain_rate:>10.0f}")
    print(f"{'(b) lossbench loader, cache, epoch 2':<48} {lb_rate:>10.0f}")
    print(f"ratio (b)/(a): {lb_rate / plain_rate:.1f}x  (size {args.size}, {args.workers} workers, "
          f"batch {args.batch}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
