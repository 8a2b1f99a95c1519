"""The Python API's mistakes are lossbench.UserError with one line, never a raw torch or Python error; inputs that
can be converted are (issue 27, item 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import lossbench

from .helpers import TALLY


@pytest.fixture(scope="module")
def loaded(finished_run):
    return lossbench.load_run(finished_run)


PREDICT_CASES = {
    "none": (lambda: None, {}, "predict: got NoneType"),
    "batch-size-0": (lambda: torch.rand(2, 3, 8, 8), {"batch_size": 0}, "batch_size must be a whole number of 1"),
    "one-channel-float": (lambda: torch.rand(2, 1, 8, 8), {}, "the tensor has 1 channels (shape 2 x 1 x 8 x 8), "
                          "this run's model takes 3; give a model-ready float tensor N x 3 x H x W"),
    "two-d-float": (lambda: torch.rand(8, 8), {}, "float32 tensor of shape 8 x 8"),
    "five-d-float": (lambda: torch.rand(1, 1, 3, 8, 8), {}, "tensor of shape 1 x 1 x 3 x 8 x 8"),
    "int64": (lambda: torch.zeros(1, 3, 8, 8, dtype=torch.int64), {}, "got a int64 tensor"),
    "nan": (lambda: torch.full((1, 3, 8, 8), float("nan")), {}, "holds 192 NaN or infinite values"),
    "inf-in-numpy": (lambda: np.where(np.eye(8, dtype=bool), np.inf, 0.5).astype(np.float32)[None, None]
                     .repeat(3, 1), {}, "holds 24 NaN or infinite values"),
    "uint8-two-channels": (lambda: torch.zeros(2, 8, 8, dtype=torch.uint8), {}, "a uint8 image tensor is H x W"),
    "list-of-tensors": (lambda: [torch.rand(3, 8, 8)], {}, "item 0 is a Tensor"),
}


@pytest.mark.parametrize("name", list(PREDICT_CASES))
def test_predict_refuses_in_one_line(name, loaded):
    make, kwargs, fragment = PREDICT_CASES[name]
    with pytest.raises(lossbench.UserError) as info:
        loaded.predict(make(), **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)
    TALLY["API mistakes raised as UserError"] += 1


def test_predict_converts_pixels_and_arrays(loaded, tmp_path):
    """uint8 pixels (any of 2-D, C x H x W, N x C x H x W, one channel too) go through the decoder as an image
    file would; a float NumPy array is a model-ready tensor."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    gray = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    from_files = loaded.predict([tmp_path / "rgb.png", tmp_path / "gray.png"]).probabilities
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.allclose(loaded.predict(pixels[None]).probabilities[0], from_files[0])
    assert torch.allclose(loaded.predict(pixels).probabilities[0], from_files[0])
    assert torch.allclose(loaded.predict(torch.from_numpy(gray)).probabilities[0], from_files[1])
    assert torch.allclose(loaded.predict(torch.from_numpy(gray)[None, None]).probabilities[0], from_files[1])
    ready = torch.rand(2, 3, 8, 8)
    assert torch.equal(loaded.predict(ready.numpy()).labels, loaded.predict(ready).labels)
    TALLY["API inputs converted"] += 1


API_CASES = {
    "build_model-negative-classes": (lambda: lossbench.build_model("unet", -1), "num_classes: must be a whole number"),
    "build_model-zero-classes": (lambda: lossbench.build_model("resnet20", 0), "num_classes: must be a whole number"),
    "build_model-unknown": (lambda: lossbench.build_model("resnet19", 3), "unknown model 'resnet19'"),
    "train-an-int": (lambda: lossbench.train(42), "train: config must be a config file's path"),
    "build_loss-zero-classes": (lambda: lossbench.build_loss("ce", 0), "build_loss: num_classes must be a whole"),
    "build_loss-string-count": (lambda: lossbench.build_loss("ce", "3"), "got '3'"),
    "build_loss-unknown-task": (lambda: lossbench.build_loss("ce", 3, task="detection"),
                                "task must be one of classification, segmentation, got 'detection'"),
    "loss-target-out-of-range": (lambda: lossbench.build_loss("focal + dice", 3)(torch.rand(2, 3),
                                                                               torch.tensor([0, 7])),
                                 "the target holds class 7, outside 0..2 of num_classes=3"),
    "loss-negative-target": (lambda: lossbench.build_loss("ce", 3, task="segmentation")(
        torch.rand(1, 3, 4, 4), -torch.ones(1, 4, 4, dtype=torch.long)), "the target holds class -1"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_mistake_is_a_user_error(name):
    call, fragment = API_CASES[name]
    with pytest.raises(lossbench.UserError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)
    TALLY["API mistakes raised as UserError"] += 1


def test_in_range_and_ignored_targets_still_work():
    loss = lossbench.build_loss("ce", 3, task="segmentation")
    target = torch.tensor([[[0, 1], [2, 255]]])
    assert torch.isfinite(loss(torch.rand(1, 3, 2, 2), target))
    binary = lossbench.build_loss("dice", 1, task="segmentation")  # one sigmoid channel: targets 0 and 1
    assert torch.isfinite(binary(torch.rand(1, 1, 2, 2), torch.tensor([[[0, 1], [1, 0]]])))
