"""The shared figures: a cropped PNG is what matplotlib's own tight crop gives, measured without its extra pass."""

import io

import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

from lossbench import plots


def _confusion_figure(k: int):
    """The figure plot_confusion draws, left open (plot_confusion closes it once saved)."""
    opened = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "figure_png", lambda fig, crop=False: opened.append(fig) or b"")
        plots.plot_confusion(torch.rand(k, k, generator=torch.Generator().manual_seed(k)) * 50,
                             ["background" if i == 0 else f"class {i}" for i in range(k)], "a title")
    return opened[0]


@pytest.mark.parametrize("k", [3, 25])  # values printed in the cells; a colour bar instead of values
def test_a_cropped_figure_is_byte_for_byte_what_tight_saving_gives(k):
    buf = io.BytesIO()
    tight = _confusion_figure(k)
    tight.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=plots.TIGHT_PAD_INCHES)
    plt.close(tight)
    expected = buf.getvalue()
    uncropped = Image.open(io.BytesIO(plots.figure_png(_confusion_figure(k)))).size
    cropped = plots.figure_png(_confusion_figure(k), crop=True)  # a fresh figure: no earlier drawing to rely on
    assert cropped == expected
    assert Image.open(io.BytesIO(cropped)).size != uncropped  # the crop moved the edges (labels, margins)
    assert not plt.get_fignums()  # saved figures are closed
