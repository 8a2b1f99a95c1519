"""Open a real report in headless Chromium: every image must load and the page must not be blank."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from cli_helper import run_cli
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]

SWEEP = """
name: seg
task: segmentation
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 32, train_per_class: 8, val_per_class: 4}
model: {name: unet, encoder: resnet18}
epochs: 1
batch_size: 4
grid:
  loss: [ce, dice]
  seed: [0]
"""

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-probe', `images ${ok}/${imgs.length}`);
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_report_renders_in_headless_chromium(tiny_config, tmp_path, forked_cells):
    res = run_cli(["sweep", str(tiny_config(SWEEP))])
    assert res.code == 0, res.err
    report = tmp_path / "runs" / "exp" / "report.html"
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE))
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="images (\d+)/(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    loaded, total = map(int, found.groups())
    assert total >= 5 and loaded == total  # data, curves, confusion, per-class, examples
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, text=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text, tables and figures, not a blank page
