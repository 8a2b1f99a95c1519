"""A loss and a model from their registries, one forward pass (tests/test_docs.py runs this file)."""

import torch

import lossbench

loss = lossbench.build_loss("focal(gamma=2) + 0.5 * dice", num_classes=3, task="segmentation")
model = lossbench.build_model("unet", num_classes=3, encoder="resnet18")
images = torch.randn(2, 3, 64, 64)
masks = torch.randint(0, 3, (2, 64, 64))
value = loss(model(images), masks)
print(f"loss of an untrained U-Net: {value.item():.3f}")
