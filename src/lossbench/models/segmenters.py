"""Segmenters: smp U-Net and U-Net++ with a ResNet encoder, and the original nested U-Net.

Each returns N x C x H x W logits. smp models keep the encoder as
``model.encoder`` (the backbone group) and the decoder plus segmentation head
as the head group, so an encoder can be frozen or given its own learning rate.
"""

from __future__ import annotations

import difflib

from torch import nn

from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.models.nested_unet import NestedUNet
from lossbench.models.registry import register_model
from lossbench.models.weights import smp_encoder_imagenet

#: smp's default decoder widths for a depth-5 encoder; a shallower encoder takes the first ``depth``.
DECODER_CHANNELS = (256, 128, 64, 32, 16)


def smp_model(arch: str, cfg: ModelConfig, classes: int, **kwargs) -> nn.Module:
    """smp ``arch`` (Unet, UnetPlusPlus) with ``cfg.encoder``; ImageNet encoder weights from the local HF cache.

    With ``pretrained: imagenet`` the model is built for 3 channels, the
    cached encoder weights are loaded, and smp's own first-conv patch then
    adapts them to ``in_channels`` (summed over RGB for one channel). smp
    (and the timm it brings) is imported here, when a model needs it.
    """
    import segmentation_models_pytorch as smp

    encoder = cfg.encoder
    known = smp.encoders.get_encoder_names()
    if encoder not in known and not encoder.startswith("tu-"):
        close = difflib.get_close_matches(encoder, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"model.encoder: smp has no encoder {encoder!r}{hint}; e.g. resnet18, resnet34, resnet50")
    depth = cfg.encoder_depth or 5
    imagenet = cfg.pretrained == "imagenet"
    model = getattr(smp, arch)(
        encoder_name=encoder, encoder_weights=None, encoder_depth=depth, in_channels=3 if imagenet else cfg.in_channels,
        decoder_channels=DECODER_CHANNELS[:depth], classes=classes, **kwargs,
    )
    if imagenet:
        model.encoder.load_state_dict(smp_encoder_imagenet(encoder))
        if cfg.in_channels != 3:
            model.encoder.set_in_channels(cfg.in_channels, pretrained=True)
    drop_unused_stages(model, depth)
    return model


#: the stages of a ResNet encoder, deepest last
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def drop_unused_stages(model: nn.Module, depth: int) -> None:
    """Replace the ResNet stages a depth-``depth`` smp encoder never runs by ``nn.Identity``.

    smp keeps them (a depth-3 ResNet encoder still holds layer3 and layer4);
    parameters that never get a gradient would make DDP fail and would be
    frozen / unfrozen / decayed for nothing. Files that still hold them load
    with those tensors skipped (:func:`dropped_encoder_stages`).
    """
    from segmentation_models_pytorch.encoders.resnet import ResNetEncoder

    if not isinstance(model.encoder, ResNetEncoder):
        return
    for name in RESNET_STAGES[max(depth, 1) - 1:]:
        setattr(model.encoder, name, nn.Identity())


def dropped_encoder_stages(model: nn.Module) -> tuple[str, ...]:
    """Prefixes of the encoder stages :func:`drop_unused_stages` replaced: a full-size file's tensors to skip."""
    return tuple(f"encoder.{name}." for name in RESNET_STAGES
                 if isinstance(getattr(model.encoder, name, None), nn.Identity))


@register_model("unet", "segmentation", head=("decoder.", "segmentation_head."), imagenet=True,
                unused=dropped_encoder_stages)
def unet(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """smp U-Net (Ronneberger et al. 2015) with a ResNet encoder (model.encoder)."""
    return smp_model("Unet", cfg, num_classes)


@register_model("unetplusplus", "segmentation", head=("decoder.", "segmentation_head."), imagenet=True,
                unused=dropped_encoder_stages)
def unetplusplus(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """smp U-Net++ (Zhou et al. 2018) with a ResNet encoder (model.encoder)."""
    return smp_model("UnetPlusPlus", cfg, num_classes)


@register_model("nested_unet", "segmentation", head=("decoder.", "heads."), deep_supervision=True)
def nested_unet(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Original nested U-Net (Zhou et al. 2018): VGG blocks, optional deep supervision; no pretrained encoder."""
    return NestedUNet(num_classes, cfg.in_channels, cfg.base_channels, cfg.encoder_depth or 4, cfg.deep_supervision)
