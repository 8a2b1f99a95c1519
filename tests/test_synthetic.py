import torch

from lossbench.data.imbalance import class_counts, long_tail_counts
from lossbench.data.formats.synthetic import make_classification, make_segmentation, make_splits


def test_same_seed_same_tensors_other_seed_differs():
    a = make_splits("classification", 5, 24, 20, 4, 5.0, seed=3)
    b = make_splits("classification", 5, 24, 20, 4, 5.0, seed=3)
    c = make_splits("classification", 5, 24, 20, 4, 5.0, seed=4)
    assert torch.equal(a["train"][0], b["train"][0]) and torch.equal(a["train"][1], b["train"][1])
    assert not torch.equal(a["train"][0], c["train"][0])
    assert not torch.equal(a["train"][0][: len(a["val"][0])], a["val"][0])


def test_long_tail_profile_and_counts():
    counts = long_tail_counts(100, 5, 10.0)
    assert counts[0] == 100 and counts[-1] == 10
    assert all(x > y for x, y in zip(counts, counts[1:]))
    # exponential profile: n_k = n_max * ratio^(-k/(K-1))
    assert counts[2] == int(100 * 10 ** (-0.5))
    images, labels = make_classification(counts, 16, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (sum(counts), 3, 16, 16)
    assert class_counts(labels, 5) == counts


def test_any_size_and_count():
    images, labels = make_classification([3, 2], 57, seed=1)
    assert images.shape == (5, 3, 57, 57)
    images, masks = make_segmentation(7, 4, 40, seed=1)
    assert images.shape == (7, 3, 40, 40) and masks.shape == (7, 40, 40) and masks.dtype == torch.int64


def test_segmentation_pixel_classes_are_imbalanced():
    _, masks = make_segmentation(40, 4, 48, seed=0)
    pixels = class_counts(masks, 4)
    assert all(p > 0 for p in pixels)
    assert pixels[0] > pixels[1] > pixels[2] > pixels[3]
    assert pixels[1] > 4 * pixels[3]
