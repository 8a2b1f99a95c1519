"""Train a config file from Python, then predict with the finished run (tests/test_docs.py runs this file)."""

import tempfile

import torch

import lossbench

out = tempfile.mkdtemp()
# keywords override the config's keys, nested with __ (tiny sizes, so it runs in seconds)
run = lossbench.train("recipes/example.yaml", epochs=1, data__image_size=16, data__train_per_class=20,
                      model__name="resnet20", output_dir=out, overwrite=True, log=lambda line: None)
print(run.folder, run.summary["best"]["val_balanced_accuracy"], run.metrics[-1]["val_loss"])

loaded = lossbench.load_run(run.folder)
predictions = loaded.predict(torch.randn(4, 3, 16, 16))   # or image files: loaded.predict(["photo.jpg"])
print(predictions.labels, predictions.probabilities.shape)
