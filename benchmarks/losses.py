"""Forward + backward time of each lossbench loss beside smp's equivalent, on the same tensors.

    PYTHONPATH=src python benchmarks/losses.py                     # N=8, C=5, 128x128, CPU
    PYTHONPATH=src python benchmarks/losses.py --device cuda --size 512

Prints one line per loss: our median ms, smp's median ms and the ratio
ours / smp (<= 1 means ours is at least as fast), plus the ratio of the
fastest runs, which is steadier when other work shares the CPU. The two are timed in
alternation in one process, after warm-up, and the median of the repeats is
reported. Where smp has no such loss the smp column is empty; where smp's
definition differs the note says so.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import segmentation_models_pytorch as smp
import segmentation_models_pytorch.losses as sl
import torch

from lossbench.losses import build_loss

IGNORE = 255


def cases(c: int) -> list[tuple[str, str, Callable | None, str]]:
    """(our spec, target kind, smp loss or None, note)."""
    dice = sl.DiceLoss("multiclass", ignore_index=IGNORE)
    focal_mc = sl.FocalLoss("multiclass", gamma=2.0, ignore_index=IGNORE)
    return [
        ("ce(label_smoothing=0.1)", "index", sl.SoftCrossEntropyLoss(smooth_factor=0.1, ignore_index=IGNORE), ""),
        ("bce", "float", sl.SoftBCEWithLogitsLoss(ignore_index=IGNORE), ""),
        ("focal(gamma=2)", "index", focal_mc, "smp: one-vs-rest sigmoid focal"),
        ("focal(gamma=2, sigmoid=true)", "index", focal_mc, ""),
        ("focal(gamma=2)", "float", sl.FocalLoss("multilabel", gamma=2.0), ""),
        ("dice(smooth=0, skip_empty=true)", "index", dice, ""),
        ("dice(smooth=0, skip_empty=true)", "float", sl.DiceLoss("multilabel", ignore_index=IGNORE), ""),
        ("jaccard(smooth=0, skip_empty=true)", "index", sl.JaccardLoss("multiclass", ignore_index=IGNORE), ""),
        ("tversky(alpha=0.3, beta=0.7, smooth=0, skip_empty=true)", "index",
         sl.TverskyLoss("multiclass", alpha=0.3, beta=0.7, ignore_index=IGNORE), ""),
        ("focal_tversky(smooth=0, skip_empty=true)", "index",
         sl.TverskyLoss("multiclass", alpha=0.3, beta=0.7, gamma=0.75, ignore_index=IGNORE),
         "smp: gamma on the class mean"),
        ("lovasz_softmax", "index", sl.LovaszLoss("multiclass", ignore_index=IGNORE), ""),
        ("lovasz_softmax(per_image=true)", "index",
         sl.LovaszLoss("multiclass", per_image=True, ignore_index=IGNORE), ""),
        ("lovasz_hinge", "binary", sl.LovaszLoss("binary", per_image=True, ignore_index=IGNORE), ""),
        ("lovasz_hinge(per_image=false)", "binary", sl.LovaszLoss("binary", ignore_index=IGNORE), ""),
        ("bce_dice", "float",
         lambda z, y, b=sl.SoftBCEWithLogitsLoss(ignore_index=IGNORE), d=sl.DiceLoss("multilabel", smooth=0.5):
         0.5 * b(z, y) + d(z, y), "smp: SoftBCE + DiceLoss"),
        ("focal_dice", "index", lambda z, y, f=focal_mc, d=sl.DiceLoss("multiclass", smooth=0.5, ignore_index=IGNORE):
         f(z, y) + d(z, y), "smp: FocalLoss + DiceLoss"),
        ("dsc", "index", None, ""),
        ("cb(base='focal')", "index", None, ""),
        ("cb(base='sigmoid_focal')", "index", None, ""),
        ("ldam(s=1)", "index", None, ""),
        ("logit_adjusted", "index", None, ""),
        ("balanced_softmax", "index", None, ""),
    ]


def timed(fn: Callable, logits: torch.Tensor, target: torch.Tensor, device: torch.device) -> float:
    logits.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(logits, target).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps timings steady on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, c, s = args.n, args.classes, args.size
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, s, s, generator=g).to(device).requires_grad_()
    logits1 = torch.randn(n, 1, s, s, generator=g).to(device).requires_grad_()
    index = torch.randint(0, c, (n, s, s), generator=g)
    index[:, :4] = IGNORE
    targets = {
        "index": index.to(device),
        "float": torch.randint(0, 2, (n, c, s, s), generator=g).float().to(device),
        "binary": torch.randint(0, 2, (n, 1, s, s), generator=g).float().to(device),
    }
    counts = [1000 // (k + 1) for k in range(c)]
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s)")
    print(f"# forward+backward, N={n} C={c} {s}x{s}, {where}; torch {torch.__version__}, smp {smp.__version__}; "
          f"median of {args.repeats}")
    print(f"{'loss':<58} {'target':<7} {'ours ms':>8} {'smp ms':>8} {'ratio':>6} {'min ratio':>9}  note")
    for spec, kind, ref, note in cases(c):
        z = logits1 if kind == "binary" else logits
        ours = build_loss(spec, z.shape[1], "segmentation", counts if z.shape[1] == c else None, IGNORE).to(device)
        y = targets[kind]
        fns = {"ours": ours} | ({"smp": ref} if ref is not None else {})
        for fn in fns.values():
            for _ in range(3):
                timed(fn, z, y, device)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, fn in fns.items():
                times[k].append(timed(fn, z, y, device))
        ms = {k: statistics.median(v) for k, v in times.items()}
        if "smp" in ms:
            fastest = min(times["ours"]) / min(times["smp"])
            print(f"{spec:<58} {kind:<7} {ms['ours']:8.2f} {ms['smp']:8.2f} {ms['ours'] / ms['smp']:6.2f} "
                  f"{fastest:9.2f}  {note}")
        else:
            print(f"{spec:<58} {kind:<7} {ms['ours']:8.2f} {'-':>8} {'-':>6} {'-':>9}  not in smp")


if __name__ == "__main__":
    main()
