"""Segmenters: segmentation_models_pytorch U-Net with a ResNet encoder."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from lossbench.config import ModelConfig
from lossbench.models.registry import register_model


@register_model("unet", "segmentation", head=("decoder.", "segmentation_head."))
def unet(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """smp U-Net (Ronneberger et al. 2015) with a ResNet encoder (model.encoder)."""
    return smp.Unet(encoder_name=cfg.encoder, encoder_weights=None, in_channels=cfg.in_channels, classes=num_classes)
