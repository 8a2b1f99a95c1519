import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, jaccard_score, recall_score
from torchmetrics.classification import MulticlassCalibrationError

from lossbench.metrics import TaskMetrics, normalized_confusion


def test_classification_metrics_accumulate_over_the_set_and_match_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=g)
    target = torch.randint(0, 5, (300,), generator=g)
    logits[torch.arange(150), target[:150]] += 2.0  # half the set is mostly right
    m = TaskMetrics("classification", 5)
    for chunk in range(0, 300, 64):  # batches of unequal size: per-batch averaging would differ
        m.update(logits[chunk:chunk + 64], target[chunk:chunk + 64])
    out = m.compute()
    y, p = target.numpy(), logits.argmax(1).numpy()
    assert out["accuracy"] == pytest.approx((y == p).mean())
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert out["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert out["recall"] == pytest.approx(list(recall_score(y, p, average=None)))
    assert out["quadratic_kappa"] == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))
    ece = MulticlassCalibrationError(5, n_bins=15, norm="l1")(torch.softmax(logits, 1), target)
    assert out["ece"] == pytest.approx(float(ece), abs=1e-6)
    cm = torch.tensor(out["confusion_matrix"])
    assert cm.sum() == 300 and torch.allclose(normalized_confusion(cm).sum(1), torch.ones(5, dtype=torch.float64))


def test_segmentation_iou_dice_pixel_accuracy_with_ignore_index():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (4, 8, 8), generator=g)
    target[:, :2] = 255
    m = TaskMetrics("segmentation", 3)
    m.update(logits[:2], target[:2])
    m.update(logits[2:], target[2:])
    out = m.compute()
    keep = target.flatten() != 255
    y, p = target.flatten()[keep].numpy(), logits.argmax(1).flatten()[keep].numpy()
    iou = jaccard_score(y, p, average=None)
    assert out["iou"] == pytest.approx(list(iou))
    assert out["miou"] == pytest.approx(iou.mean())
    assert out["per_class_dice"] == pytest.approx(list(2 * iou / (1 + iou)))
    assert out["pixel_accuracy"] == pytest.approx((y == p).mean())


def test_absent_class_is_left_out_of_means():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    out = TaskMetrics("segmentation", 3)
    out.update(logits.view(1, 2, 3).permute(0, 2, 1).reshape(1, 3, 2, 1), torch.tensor([[[0], [1]]]))
    res = out.compute()
    assert np.isnan(res["iou"][2]) and res["miou"] == 1.0


def test_binary_and_multilabel_sigmoid_targets():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 2, 6, 6, generator=g)
    target = (torch.rand(3, 2, 6, 6, generator=g) > 0.6).float()
    m = TaskMetrics("segmentation", 2)
    m.update(logits, target)
    out = m.compute()
    for c in range(2):
        y = target[:, c].flatten().numpy()
        p = (logits[:, c] > 0).flatten().numpy()
        assert out["iou"][c] == pytest.approx(jaccard_score(y, p))
    binary = TaskMetrics("segmentation", 1)
    binary.update(logits[:, :1], target[:, :1])
    assert binary.compute()["iou"][0] == pytest.approx(out["iou"][0])


def test_shot_accuracies_group_classes_by_training_count():
    from lossbench.metrics import shot_accuracies

    recall = [0.9, 0.8, 0.5, 0.4, 0.1, float("nan")]
    counts = [5000, 101, 100, 20, 19, 3]  # > 100 many; 20-100 medium; < 20 few
    out = shot_accuracies(recall, counts)
    assert out["many_shot_accuracy"] == pytest.approx(0.85)
    assert out["medium_shot_accuracy"] == pytest.approx(0.45)
    assert out["few_shot_accuracy"] == pytest.approx(0.1)  # an absent class (NaN recall) is left out
    assert math.isnan(shot_accuracies([0.5, 0.7], [500, 300])["few_shot_accuracy"])
    with pytest.raises(ValueError):
        shot_accuracies([0.5], [1, 2])


def test_foreground_miou_same_for_two_class_softmax_and_one_channel_sigmoid():
    # 8 pixels; target 0 0 0 0 0 1 1 1, prediction 0 0 0 1 1 1 1 0.
    # foreground: TP 2 (pixels 5, 6), FP 2 (3, 4), FN 1 (7) -> IoU 2/5;
    # background: TP 3 (0, 1, 2), FP 1 (7), FN 2 (3, 4) -> IoU 3/6.
    target = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1]).view(1, 8, 1)
    predicted = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0]).view(1, 1, 8, 1)
    score = predicted.float() * 2 - 1  # > 0 where foreground is predicted
    softmax = TaskMetrics("segmentation", 2)
    softmax.update(torch.cat([torch.zeros_like(score), score], 1), target)
    sigmoid = TaskMetrics("segmentation", 1)
    sigmoid.update(score, target)
    two, one = softmax.compute(), sigmoid.compute()
    assert two["iou"] == pytest.approx([3 / 6, 2 / 5]) and two["miou"] == pytest.approx((3 / 6 + 2 / 5) / 2)
    assert two["fg_miou"] == pytest.approx(2 / 5)
    assert one["fg_miou"] == pytest.approx(2 / 5) and one["miou"] == pytest.approx(2 / 5)


def test_foreground_miou_leaves_out_background_and_absent_classes():
    from lossbench.metrics import metrics_from_confusion

    cm = torch.tensor([[5, 1, 0, 0], [1, 3, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0]])  # class 3 absent
    out = metrics_from_confusion(cm, "segmentation")
    iou = [5 / 7, 3 / 7, 2 / 4]
    assert out["fg_miou"] == pytest.approx((iou[1] + iou[2]) / 2)
    assert out["miou"] == pytest.approx(sum(iou) / 3)


def test_own_counts_match_torchmetrics_with_ignored_targets_and_certain_predictions():
    """TaskMetrics counts without torchmetrics (whose import costs seconds per run); torchmetrics is the reference."""
    from torchmetrics.classification import BinaryStatScores, MulticlassConfusionMatrix, MultilabelStatScores

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(200, 4, generator=g) * 3
    logits[:5] = torch.tensor([60.0, 0, 0, 0])  # softmax confidence exactly 1: the extra bin of torchmetrics
    target = torch.randint(0, 4, (200,), generator=g)
    target[::7] = 255
    m = TaskMetrics("classification", 4)
    m.update(logits[:90], target[:90])
    m.update(logits[90:], target[90:])
    out = m.compute()
    probs = torch.softmax(logits, 1)
    assert (probs[:5].max(1).values == 1.0).all()
    ece = MulticlassCalibrationError(4, n_bins=15, norm="l1", ignore_index=255)(probs, target)
    assert out["ece"] == pytest.approx(float(ece), abs=1e-6)
    cm = MulticlassConfusionMatrix(4, ignore_index=255)(logits.argmax(1), target)
    assert out["confusion_matrix"] == cm.tolist()

    seg = torch.randn(3, 3, 5, 5, generator=g)
    mask = (torch.rand(3, 3, 5, 5, generator=g) > 0.5).float()
    mask[0, :, :2] = 255
    channels = TaskMetrics("segmentation", 3)
    channels.update(seg, mask)
    ref = MultilabelStatScores(3, average=None, multidim_average="global", ignore_index=255)(
        torch.sigmoid(seg).movedim(1, -1).reshape(-1, 3), mask.movedim(1, -1).reshape(-1, 3).long())
    assert torch.equal(channels.channels.compute(), ref)
    binary = TaskMetrics("segmentation", 1)
    binary.update(seg[:, :1], mask[:, :1])
    ref = BinaryStatScores(multidim_average="global", ignore_index=255)(torch.sigmoid(seg[:, :1]).reshape(-1),
                                                                         mask[:, :1].reshape(-1).long())
    assert torch.equal(binary.channels.compute().reshape(-1), ref)
