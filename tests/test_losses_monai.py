"""generalized_dice against MONAI's GeneralizedDiceLoss (pip install 'lossbench[test]'), mode by mode.

MONAI has no ignore_index, so the inputs here have no ignored pixels; every
other convention (smooth terms, empty classes taking the largest weight,
per-image vs batch, weight types) must agree to 1e-5.
"""

import pytest
import torch

from lossbench.losses import build_loss

# importing MONAI takes ~6 s of CPU (it loads all its subpackages): these tests run on one xdist worker
# (conftest.WORKER_GROUPS), which imports it when the first of them runs, not at collection in every worker


@pytest.fixture(scope="module")
def monai_losses():
    return pytest.importorskip("monai.losses")


def inputs(mode, seed, n=3, c=4, h=6, w=5):
    g = torch.Generator().manual_seed(seed)
    if mode == "multiclass":
        z, t = torch.randn(n, c, h, w, generator=g), torch.randint(0, c - 1, (n, h, w), generator=g)
        t[1, 0, 0] = c - 1  # the last class is present in image 1 only: empty (infinite weight) elsewhere
        return z, t
    ch = 1 if mode == "binary" else c
    z, t = torch.randn(n, ch, h, w, generator=g), (torch.rand(n, ch, h, w, generator=g) < 0.3).float()
    t[0, -1] = 0  # an empty channel
    return z, t


@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("mode", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("seed", [0, 1])
def test_generalized_dice_matches_monai(mode, per_image, weight_type, seed, monai_losses):
    z, t = inputs(mode, seed)
    if mode == "multiclass":
        ref = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=not per_image, w_type=weight_type)
        expected = ref(z, t.unsqueeze(1))
    else:
        ref = monai_losses.GeneralizedDiceLoss(sigmoid=True, batch=not per_image, w_type=weight_type)
        expected = ref(z, t)
    spec = f"generalized_dice(per_image={str(per_image).lower()}, weight_type={weight_type})"
    got = build_loss(spec, z.shape[1], "segmentation")(z, t)
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_generalized_dice_gradients_match_monai(monai_losses):
    z, t = inputs("multiclass", 2)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    build_loss("generalized_dice", 4, "segmentation")(a, t).backward()
    monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)(b, t.unsqueeze(1)).backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4)
