"""Use lossbench from Python: a loss, a model, a training run, predictions and a sweep.

tests/test_api.py runs this file as written, in a folder holding recipes/example.yaml and photo.jpg
(any image of yours).
"""

import lossbench
import torch
from PIL import Image

# a loss and a model from their registries (`lossbench list losses`, `lossbench list models`)
loss = lossbench.build_loss("focal(gamma=2) + 0.5 * dice", num_classes=3, task="segmentation")
unet = lossbench.build_model("unet", num_classes=3, encoder="resnet34")
print(loss(unet(torch.randn(2, 3, 64, 64)), torch.randint(0, 3, (2, 64, 64))))

# or a loss class itself, for plain PyTorch: built with a LossContext and its parameters
from lossbench.losses import LDAMLoss, LossContext
ldam = LDAMLoss(LossContext(num_classes=3, class_counts=(500, 50, 5)), s=30)
print(ldam(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))

# train a config file; keywords override its keys (nested with __, like --set data.image_size=16)
run = lossbench.train("recipes/example.yaml", epochs=1, data__image_size=16, data__train_per_class=20,
                      model__name="resnet20", output_dir="runs/python", overwrite=True)
print(run.folder, run.summary["best"]["val_balanced_accuracy"], run.metrics[-1]["val_loss"])

# a finished run predicts on images (decoded like its validation data) or on model-ready tensors
loaded = lossbench.load_run(run.folder)
print(loaded.predict(["photo.jpg", Image.open("photo.jpg")]).labels)
print(loaded.predict(torch.randn(4, 3, 16, 16)).probabilities.shape)

# a grid of runs, each in its own process, ending in report.html
sweep = lossbench.sweep("recipes/example.yaml", epochs=1, data__image_size=16, data__train_per_class=20,
                        model__name="resnet20", output_dir="runs/python", grid={"loss": ["ce", "focal(gamma=2)"]})
print(sweep.report, [row["status"] for row in sweep.results])
