"""Our losses against segmentation_models_pytorch.losses on random inputs, mode by mode.

Where the definitions agree the values match to 1e-5; where they differ on
purpose, a test below shows the difference and what it is.
"""

import pytest
import torch
from segmentation_models_pytorch import losses as sl

from lossbench.losses import build_loss

IGNORE = 255


def inputs(mode, seed, ignore=True, n=3, c=4, h=6, w=5):
    g = torch.Generator().manual_seed(seed)
    if mode == "multiclass":
        z, t = torch.randn(n, c, h, w, generator=g), torch.randint(0, c, (n, h, w), generator=g)
        if ignore:
            t[0, :2, :3] = IGNORE
            t[2, 4, 1] = IGNORE
        return z, t
    ch = 1 if mode == "binary" else c
    z, t = torch.randn(n, ch, h, w, generator=g), torch.randint(0, 2, (n, ch, h, w), generator=g).float()
    if ignore:
        t[1, :, :2] = IGNORE
        t[0, 0, 3, 3] = IGNORE
    return z, t


def ours(spec, z, ignore_index=IGNORE):
    return build_loss(spec, z.shape[1], "segmentation", ignore_index=ignore_index)


MODES = ["binary", "multiclass", "multilabel"]
SEEDS = [0, 1, 2]

# (our spec, smp loss for a mode). Our Dice smoothing s equals smp's 2 s: smp computes Dice as the
# Tversky index with alpha = beta = 1/2, (TP + s) / (TP + (FP + FN) / 2 + s) = (2 TP + 2 s) / (|P| + |Y| + 2 s).
AGREE = [
    ("dice(smooth=0, skip_empty=true)", lambda m: sl.DiceLoss(m, ignore_index=IGNORE)),
    ("dice(smooth=1, skip_empty=true)", lambda m: sl.DiceLoss(m, smooth=0.5, ignore_index=IGNORE)),
    ("dice(smooth=0, skip_empty=true, log_loss=true)", lambda m: sl.DiceLoss(m, log_loss=True, ignore_index=IGNORE)),
    ("dice(smooth=1, skip_empty=true, log_loss=true)",
     lambda m: sl.DiceLoss(m, smooth=0.5, log_loss=True, ignore_index=IGNORE)),
    ("jaccard(smooth=0, skip_empty=true)", lambda m: sl.JaccardLoss(m, ignore_index=IGNORE)),
    ("jaccard(smooth=1, skip_empty=true)", lambda m: sl.JaccardLoss(m, smooth=1.0, ignore_index=IGNORE)),
    ("tversky(alpha=0.3, beta=0.7, smooth=0.5, skip_empty=true)",
     lambda m: sl.TverskyLoss(m, alpha=0.3, beta=0.7, smooth=0.5, ignore_index=IGNORE)),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec, ref", AGREE, ids=[a for a, _ in AGREE])
def test_overlap_losses_match_smp(spec, ref, mode, seed):
    z, t = inputs(mode, seed)
    assert ours(spec, z)(z, t).item() == pytest.approx(ref(mode)(z, t).item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_smp(mode, per_image, seed):
    z, t = inputs(mode, seed)
    name = "lovasz_softmax" if mode == "multiclass" else "lovasz_hinge"
    mine = ours(f"{name}(per_image={per_image})", z)(z, t)
    ref = sl.LovaszLoss(mode, per_image=per_image, ignore_index=IGNORE)(z, t)
    assert mine.item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_lovasz_gradients_match_smp(seed):
    z, t = inputs("multiclass", seed)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours("lovasz_softmax", z)(a, t).backward()
    sl.LovaszLoss("multiclass", ignore_index=IGNORE)(b, t).backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_binary_focal_matches_smp(alpha, seed):
    z, t = inputs("binary", seed)
    spec = "focal(gamma=2)" if alpha is None else f"focal(gamma=2, alpha={alpha})"
    ref = sl.FocalLoss("binary", gamma=2.0, alpha=alpha, ignore_index=IGNORE)(z, t)
    assert ours(spec, z)(z, t).item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_multilabel_focal_matches_smp_without_ignored_entries(seed):
    # smp's multilabel FocalLoss fails on ignore_index (it indexes a C-channel target with an N x H x W mask).
    z, t = inputs("multilabel", seed, ignore=False)
    ref = sl.FocalLoss("multilabel", gamma=1.5)(z, t)
    assert ours("focal(gamma=1.5)", z)(z, t).item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_focal_differs_from_smp_on_purpose(seed):
    """smp's multiclass FocalLoss is one-vs-rest *sigmoid* focal per class; ours is softmax focal (Lin et al.
    for C classes). ``focal(sigmoid=true)`` is smp's definition, and matches it."""
    z, t = inputs("multiclass", seed)
    ref = sl.FocalLoss("multiclass", gamma=2.0, ignore_index=IGNORE)(z, t).item()
    assert ours("focal(gamma=2, sigmoid=true)", z)(z, t).item() == pytest.approx(ref, abs=1e-5)
    assert abs(ours("focal(gamma=2)", z)(z, t).item() - ref) > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_soft_ce_matches_smp_and_smp_averages_over_ignored_pixels_too(seed):
    z, t = inputs("multiclass", seed, ignore=False)
    ref = sl.SoftCrossEntropyLoss(smooth_factor=0.1, ignore_index=IGNORE)
    assert ours("ce(label_smoothing=0.1)", z)(z, t).item() == pytest.approx(ref(z, t).item(), abs=1e-5)
    z, t = inputs("multiclass", seed)
    valid = (t != IGNORE).float().mean().item()
    # Deliberate: ignored pixels count nowhere in ours; smp divides by all pixels, ignored ones included.
    assert ours("ce(label_smoothing=0.1)", z)(z, t).item() * valid == pytest.approx(ref(z, t).item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_soft_bce_matches_smp(mode, seed):
    """smp's smooth_factor s moves targets to y (1 - 2s) + s, ours label_smoothing e to y (1 - e) + e / 2: e = 2 s.
    With ignored entries smp divides by all entries (deliberate difference, as for CE)."""
    z, t = inputs(mode, seed, ignore=False)
    ref = sl.SoftBCEWithLogitsLoss(smooth_factor=0.05, ignore_index=IGNORE)
    assert ours("bce(label_smoothing=0.1)", z)(z, t).item() == pytest.approx(ref(z, t).item(), abs=1e-5)
    z, t = inputs(mode, seed)
    plain = sl.SoftBCEWithLogitsLoss(ignore_index=IGNORE)(z, t).item()
    valid = (t != IGNORE).float().mean().item()
    assert ours("bce", z)(z, t).item() * valid == pytest.approx(plain, abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_focal_tversky_matches_smp_for_one_class_and_differs_for_several(seed):
    """smp raises the class-mean Tversky loss to gamma; ours (Abraham & Khan) raises each class's loss, then
    averages. With one channel the two agree."""
    z, t = inputs("binary", seed)
    ref = sl.TverskyLoss("binary", alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0, ignore_index=IGNORE)(z, t)
    spec = "focal_tversky(alpha=0.3, beta=0.7, gamma=0.75, smooth=1, skip_empty=true)"
    assert ours(spec, z)(z, t).item() == pytest.approx(ref.item(), abs=1e-5)
    z, t = inputs("multiclass", seed)
    z[:, 0] += 3
    per_class = [sl.TverskyLoss("multiclass", classes=[c], alpha=0.3, beta=0.7, smooth=1.0, ignore_index=IGNORE)(z, t)
                 for c in range(z.shape[1])]
    per_class = torch.stack(per_class)
    ref = sl.TverskyLoss("multiclass", alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0, ignore_index=IGNORE)(z, t)
    assert ref.item() == pytest.approx(per_class.mean().pow(0.75).item(), abs=1e-5)
    assert ours(spec, z)(z, t).item() == pytest.approx(per_class.pow(0.75).mean().item(), abs=1e-5)
    assert abs(ours(spec, z)(z, t).item() - ref.item()) > 1e-3


def test_dice_default_keeps_absent_classes_where_smp_zeroes_them():
    """By default our Dice penalises predicting a class absent from the target ((0 + s) / (|P| + s) < 1);
    smp counts such a class as 0 loss, which ``skip_empty=true`` reproduces."""
    z, t = inputs("multiclass", 0, ignore=False)
    t = t.clamp(max=2)
    ref = sl.DiceLoss("multiclass", smooth=0.5)(z, t).item()
    assert ours("dice(smooth=1, skip_empty=true)", z)(z, t).item() == pytest.approx(ref, abs=1e-5)
    assert ours("dice(smooth=1)", z)(z, t).item() > ref + 1e-2


def test_lovasz_hinge_per_image_skips_fully_ignored_images_where_smp_counts_zero():
    z, t = inputs("binary", 0, ignore=False)
    t[1] = IGNORE
    mine = ours("lovasz_hinge", z)(z, t).item()
    ref = sl.LovaszLoss("binary", per_image=True, ignore_index=IGNORE)(z, t).item()
    assert mine == pytest.approx(ref * 3 / 2, abs=1e-5)
