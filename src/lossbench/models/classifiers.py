"""Image classifiers: torchvision ResNets with the head sized to the classes."""

from __future__ import annotations

import torchvision
from torch import nn

from lossbench.config import ModelConfig
from lossbench.models.registry import register_model


def _resnet(arch: str, cfg: ModelConfig, num_classes: int) -> nn.Module:
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if cfg.in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(cfg.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    return model


@register_model("resnet18", "classification", head=("fc.",))
def resnet18(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """torchvision ResNet-18 (He et al. 2016), head replaced for the classes."""
    return _resnet("resnet18", cfg, num_classes)
