"""The CIFAR ResNets of He et al. 2016 (sec. 4.2), as used by the long-tail papers (Cao et al. 2019, LDAM).

A 3x3 stem of 16 channels, three stages of ``n`` basic blocks with 16, 32 and
64 channels (the 2nd and 3rd start with stride 2), global average pooling
and a linear head: 6n + 2 layers, so n = 3 is ResNet-20 (0.27M parameters)
and n = 5 ResNet-32 (0.46M). Shortcuts that change shape are the paper's
parameter-free option A: stride-2 subsampling plus zero-padded channels.
``model.head: cosine`` gives the cosine head LDAM-DRW trains this network
with (models/heads.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.config import ModelConfig
from lossbench.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (option A) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; ``fc`` is the head, everything else the backbone."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1)
                      for j in range(blocks_per_stage)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("resnet20", "classification", head=("fc.",), stems=("small",))
def resnet20(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016): 3x3 stem, 3 stages of 3 blocks, 16/32/64 channels; no ImageNet weights."""
    return CifarResNet(3, num_classes, cfg.in_channels)


@register_model("resnet32", "classification", head=("fc.",), stems=("small",))
def resnet32(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """CIFAR ResNet-32 (He et al. 2016; the long-tail papers' backbone): 3 stages of 5 blocks, 16/32/64 channels."""
    return CifarResNet(5, num_classes, cfg.in_channels)
