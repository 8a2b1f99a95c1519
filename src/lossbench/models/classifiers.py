"""Image classifiers: torchvision ResNets, any timm model, and a U-Net-encoder classifier.

Every classifier returns N x C logits. The head is replaced for the number of
classes; ``in_channels`` other than 3 adapts the first convolution (ImageNet
weights summed over RGB for one channel, as smp and timm do); ``stem: small``
swaps the 7x7 stride-2 convolution and max-pool of a torchvision ResNet for a
3x3 stride-1 convolution, the usual stem for 32x32 images. ``model.head`` and
``model.bias_prior`` apply to all of them (models/heads.py).
"""

from __future__ import annotations

import difflib

import torch
import torchvision
from torch import nn

from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.models.registry import register_model
from lossbench.models.segmenters import dropped_encoder_stages, smp_model
from lossbench.models.weights import timm_imagenet, torchvision_imagenet

TIMM_PREFIX = "timm:"


def adapted_conv(old: nn.Conv2d, in_channels: int, keep_weights: bool) -> nn.Conv2d:
    """``old`` with ``in_channels`` inputs; its weights summed over RGB (1 channel) or cycled and rescaled (more).

    Without weights worth keeping the new convolution is freshly initialised.
    """
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if keep_weights:
        with torch.no_grad():
            w = old.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(1, keepdim=True))
            else:
                idx = torch.arange(in_channels) % w.shape[1]
                new.weight.copy_(w[:, idx] * (w.shape[1] / in_channels))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    return new


def _torchvision_resnet(arch: str, cfg: ModelConfig, num_classes: int) -> nn.Module:
    model = getattr(torchvision.models, arch)(weights=None)
    imagenet = cfg.pretrained == "imagenet"
    if imagenet:
        try:
            model.load_state_dict(torchvision_imagenet(arch))
        except RuntimeError as exc:
            raise UserError(f"model.pretrained: the cached ImageNet file for {arch} does not fit it "
                            f"({str(exc).splitlines()[0][:120]}); delete it and fetch it again") from None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if cfg.stem == "small":
        model.conv1 = nn.Conv2d(cfg.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        if imagenet:
            print(f"pretrained imagenet: {arch} conv1 freshly initialised for stem: small (3x3, stride 1)")
    elif cfg.in_channels != 3:
        model.conv1 = adapted_conv(model.conv1, cfg.in_channels, keep_weights=imagenet)
    return model


def _register_torchvision(arch: str, depth: int) -> None:
    def build(cfg: ModelConfig, num_classes: int) -> nn.Module:
        return _torchvision_resnet(arch, cfg, num_classes)

    build.__doc__ = f"torchvision ResNet-{depth} (He et al. 2016), head replaced for the classes."
    register_model(arch, "classification", head=("fc.",), imagenet=True, stems=("standard", "small"))(build)


for _arch, _depth in [("resnet18", 18), ("resnet34", 34), ("resnet50", 50), ("resnet101", 101), ("resnet152", 152)]:
    _register_torchvision(_arch, _depth)


def timm_head(model: nn.Module) -> tuple[str, ...]:
    """A timm model's head: the module(s) its ``pretrained_cfg`` names as the classifier."""
    heads = model.pretrained_cfg.get("classifier") or "fc"
    return tuple(h + "." for h in ((heads,) if isinstance(heads, str) else heads))


#: the classifier names timm models use: another timm model's weights file may hold any of them
TIMM_HEADS = ("fc.", "head.", "classifier.", "linear.")


@register_model("timm:<name>", "classification", head=timm_head, imagenet=True, other_heads=TIMM_HEADS)
def timm_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Any timm model by name, e.g. timm:resnet10t or timm:resnet50.a1_in1k; classifier resized."""
    import timm

    name = cfg.name[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join('timm:' + c for c in close)}?)" if close else ""
        raise UserError(f"model.name: timm has no model {name!r}{hint}; see timm.list_models()")
    kwargs = dict(num_classes=num_classes, in_chans=cfg.in_channels)
    if cfg.pretrained == "imagenet":
        probe = timm.create_model(name, pretrained=False, num_classes=0)
        state = timm_imagenet(name, dict(probe.pretrained_cfg))
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state), **kwargs)
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    return model


class UNetClassifier(nn.Module):
    """The encoder and classification head of an smp U-Net built with ``aux_params``.

    smp computes a U-Net's class logits from the deepest encoder features
    alone, so the decoder cannot change them; it is not kept, which spares
    its compute and leaves no parameter without a gradient (DDP needs that).
    Parameter names match smp's ``Unet``, so weights move between this
    classifier and a U-Net segmenter (the decoder is skipped, reported).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.encoder = unet.encoder
        self.classification_head = unet.classification_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classification_head(self.encoder(x)[-1])


@register_model("resnet_unet", "classification", head=("classification_head.",), imagenet=True,
                other_heads=("decoder.", "segmentation_head."), unused=dropped_encoder_stages)
def resnet_unet(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """smp U-Net with a ResNet encoder (model.encoder) and an aux_params classification head; class logits only."""

    return UNetClassifier(smp_model("Unet", cfg, 1, aux_params={"classes": num_classes}))
