"""The original nested U-Net ("UNet++", Zhou et al. 2018, DLMIA) with VGG-style blocks and deep supervision.

Node X(i, j) sits at depth i (i max-pools below the input) and column j. The
encoder column is X(i, 0) = block(pool(X(i-1, 0))); every decoder node
concatenates all earlier nodes of its row with the upsampled node below-left:

    X(i, j) = block([X(i, 0), ..., X(i, j-1), up(X(i+1, j-1))])

so the skip pathways are dense and nested. With deep supervision a 1x1
convolution on each top-row node X(0, 1..L) gives a full-resolution output:
the model returns the list of them in training (the loss averages them,
``lossbench.losses.combine.DeepSupervision``) and the last one in evaluation.
Blocks are (3x3 conv, batch norm, ReLU) x 2; upsampling is bilinear to the
size of the row above, so any input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VGGBlock(nn.Sequential):
    """(3x3 conv -> batch norm -> ReLU) twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class NestedUNet(nn.Module):
    """Nested U-Net of ``depth`` poolings; level i has ``base * 2**i`` channels (the paper: base 32, depth 4).

    Parameter groups: ``encoder`` (the backbone column X(i, 0)); ``decoder``
    and ``heads`` (the nested nodes and the 1x1 output convolutions).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, base: int = 32, depth: int = 4,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        width = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList(
            VGGBlock(in_channels if i == 0 else width[i - 1], width[i]) for i in range(depth + 1)
        )
        self.decoder = nn.ModuleDict({
            f"x{i}_{j}": VGGBlock(width[i] * j + width[i + 1], width[i])
            for j in range(1, depth + 1) for i in range(depth + 1 - j)
        })
        self.heads = nn.ModuleList(nn.Conv2d(width[0], num_classes, 1) for _ in range(depth if deep_supervision else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        rows: list[list[torch.Tensor]] = []
        for i, block in enumerate(self.encoder):
            rows.append([block(x if i == 0 else F.max_pool2d(rows[i - 1][0], 2))])
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                up = F.interpolate(rows[i + 1][j - 1], size=rows[i][0].shape[-2:], mode="bilinear",
                                   align_corners=False)
                rows[i].append(self.decoder[f"x{i}_{j}"](torch.cat([*rows[i][:j], up], 1)))
        top = rows[0]
        if self.deep_supervision and self.training:
            return [head(top[j + 1]) for j, head in enumerate(self.heads)]
        return self.heads[-1](top[-1])
