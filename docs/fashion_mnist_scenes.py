"""Draw docs/fashion_mnist_scenes.png: canvases of recipes/fashion_mnist_scenes.yaml and their masks.

Six training canvases (long-tailed class occurrence) and six test canvases
(balanced), each above its mask in the colours ``lossbench predict`` uses
(background black). Needs the Fashion-MNIST IDX files of the recipe's
``data.root`` (Debian's dataset-fashion-mnist package).

    PYTHONPATH=src python docs/fashion_mnist_scenes.py [--out docs/fashion_mnist_scenes.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from lossbench.data import prepare_splits  # noqa: E402
from lossbench.engine.inference.predict import palette  # noqa: E402
from lossbench.experiments.sweep import plan_sweep  # noqa: E402

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "recipes" / "fashion_mnist_scenes.yaml"


def draw(out: Path, per_row: int = 6) -> Path:
    exp = plan_sweep(RECIPE, ["data.cache=false"], sweep_dir="/nonexistent").cells[0].experiment
    prepared = prepare_splits(exp.model_copy(update={"data": exp.data.model_copy(update={"eval_split": "val"})}))
    colours = palette(len(prepared.class_names))
    fig, axes = plt.subplots(4, per_row, figsize=(1.6 * per_row, 7.4))
    for row, (split, samples) in enumerate((("train", prepared.train), ("test", prepared.test))):
        for col in range(per_row):
            canvas, mask = np.asarray(samples.images[col, 0]), np.asarray(samples.masks[col])
            axes[2 * row, col].imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            axes[2 * row + 1, col].imshow(colours[mask], interpolation="nearest")
        axes[2 * row, 0].set_ylabel(f"{split} canvas")
        axes[2 * row + 1, 0].set_ylabel(f"{split} mask")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=colours[k] / 255, label=name) for k, name in enumerate(prepared.class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    size = exp.data.image_size
    fig.suptitle(f"fashion_mnist_scenes: {size} x {size} canvases, imbalance ratio {exp.data.imbalance_ratio:g} "
                 f"(training only)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "fashion_mnist_scenes.png")
    print(draw(parser.parse_args().out))
