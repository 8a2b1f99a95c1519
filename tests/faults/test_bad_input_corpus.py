"""A generated corpus of bad inputs, each fed to the real ``lossbench`` command line.

Every defect must end the same way: exit code 2, exactly one line on stderr
that names the file / row / key at fault, no traceback, and every file of the
run folder the command points at (a finished run, which ``train --overwrite``
targets by name) unchanged. Each defect is its own test id; a few also run as
``python -m lossbench`` subprocesses, or as forked processes, to show the contract holds for a real process.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from .helpers import (
    TALLY, assert_refused_in_one_line, class_folder, csv_dataset, png_header_only, run_cli, save_image, seg_dataset,
    tree_hash,
)


@dataclass
class Setup:
    """A defect planted in ``tmp``: the command to run, fragments its one error line must hold."""

    argv: list[str]
    fragments: list[str]
    absent: list[Path] = field(default_factory=list)  # files the command must never create


def experiment(tmp: Path, run: Path, **sections) -> dict:
    """A valid one-epoch experiment writing to ``run`` (a finished run: only --overwrite reaches it)."""
    cfg = {
        "name": run.name,
        "output_dir": str(run.parent),
        "data": {"source": "folder", "root": str(tmp / "data"), "image_size": 8, "cache_dir": str(tmp / "cache")},
        "model": {"name": "resnet20"},
        "epochs": 1,
        "batch_size": 4,
        "device": "cpu",
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def train_with(tmp: Path, run: Path, fragments: list[str], **sections) -> Setup:
    if (sections.get("data") or {}).get("source", "folder") == "folder" and not (tmp / "data").exists():
        class_folder(tmp / "data")
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment(tmp, run, **sections)))
    return Setup(["train", str(path), "--overwrite"], fragments)


def train_text(tmp: Path, text: str | bytes, fragments: list[str], extra: list[str] = ()) -> Setup:
    path = tmp / "exp.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return Setup(["train", str(path), "--overwrite", *extra], [str(path), *fragments])


# --- images -------------------------------------------------------------------------------------


def image_defect(write: Callable[[Path], object], *fragments: str):
    def make(tmp: Path, run: Path) -> Setup:
        class_folder(tmp / "data")
        bad = tmp / "data" / "b" / "bad.png"
        write(bad)
        return train_with(tmp, run, [str(bad), *fragments])

    return make


def _truncated_png(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _symlink_loop_class(tmp: Path, run: Path) -> Setup:
    class_folder(tmp / "data")
    loop = tmp / "data" / "c"
    loop.mkdir()
    (loop / "again").symlink_to(loop, target_is_directory=True)   # c/again/again/... never ends
    (loop / "self.png").symlink_to(loop / "self.png")               # a file link that points at itself
    return train_with(tmp, run, [str(loop), "class folder"])


def _val_class_not_in_train(tmp: Path, run: Path) -> Setup:
    class_folder(tmp / "data" / "train")
    class_folder(tmp / "data" / "val", classes=("a", "zebra"), n=1)
    return train_with(tmp, run, [str(tmp / "data" / "val" / "zebra"), "not in"])


def _root_missing(tmp: Path, run: Path) -> Setup:
    (tmp / "data").mkdir()
    return train_with(tmp, run, ["data.root", str(tmp / "nowhere")], data={"root": str(tmp / "nowhere")})


# --- CSV files ----------------------------------------------------------------------------------


def csv_defect(rows: str, *fragments: str, n: int = 4, **csv_opts):
    def make(tmp: Path, run: Path) -> Setup:
        root = csv_dataset(tmp / "data", rows, n)
        if "outside" in rows:
            save_image(tmp / "outside.png", np.zeros((8, 8, 3), np.uint8))
        data = {"source": "csv", "csv": {"train": "labels.csv", "images": "img", **csv_opts}}
        return train_with(tmp, run, [str(root / "labels.csv"), *fragments], data=data)

    return make


def _csv_symlink_loop(tmp: Path, run: Path) -> Setup:
    setup = csv_defect("image,label\n0.png,0\nloop.png,1\n", "line 3", "loop.png")(tmp, run)
    (tmp / "data" / "img" / "loop.png").symlink_to(tmp / "data" / "img" / "loop.png")
    return setup


def _csv_binary(tmp: Path, run: Path) -> Setup:
    root = csv_dataset(tmp / "data", "")
    (root / "labels.csv").write_bytes((root / "img" / "0.png").read_bytes())
    return train_with(tmp, run, [str(root / "labels.csv"), "UTF-8"],
                      data={"source": "csv", "csv": {"train": "labels.csv", "images": "img"}})


# --- masks --------------------------------------------------------------------------------------


def mask_defect(write: Callable[[Path], object], fragments: list[str], **seg):
    def make(tmp: Path, run: Path) -> Setup:
        root = seg_dataset(tmp / "data")
        write(root)
        data = {"source": "seg_folder", "num_classes": 2, **({"seg": seg} if seg else {})}
        return train_with(tmp, run, fragments, task="segmentation", data=data,
                          model={"name": "unet", "encoder": "resnet18", "encoder_depth": 3})

    return make


def _coloured_mask(root: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    save_image(root / "masks" / "1.png", rgb)


def _float_mask(root: Path) -> None:
    (root / "masks" / "1.png").unlink()
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(root / "masks" / "1.tif")


# --- config files -------------------------------------------------------------------------------


def _config_missing(tmp: Path, run: Path) -> Setup:
    return Setup(["train", str(tmp / "missing.yaml")], [str(tmp / "missing.yaml"), "no such config file"])


def _set_override(tmp: Path, run: Path) -> Setup:
    setup = train_with(tmp, run, [])
    setup.argv += ["--set", "data.image_size.width=8"]
    setup.fragments = ["--set", "data.image_size", "not a section"]
    return setup


# --- loss specs ---------------------------------------------------------------------------------


def loss_defect(spec: str, *fragments: str, marker: bool = False):
    def make(tmp: Path, run: Path) -> Setup:
        target = tmp / "PAYLOAD_RAN"
        setup = train_with(tmp, run, ["loss", *fragments], loss=spec.replace("MARKER", str(target)))
        setup.absent = [target] if marker else []
        return setup

    return make


# --- weights files ------------------------------------------------------------------------------


def weights_defect(write: Callable[[Path], Path], *fragments: str):
    def make(tmp: Path, run: Path) -> Setup:
        path = write(tmp / "weights.pth")
        return train_with(tmp, run, [str(path), *fragments], model={"pretrained": str(path)})

    return make


def _other_arch(path: Path) -> Path:
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), path)
    return path


def _truncated_weights(path: Path) -> Path:
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3), "fc.weight": torch.zeros(2, 64)}, buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _list_pickle(path: Path) -> Path:
    torch.save([1, 2, 3], path)
    return path


def _plain_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"conv1.weight": [[0.0]]}))
    return path


def _truncated_safetensors(path: Path) -> Path:
    from safetensors.torch import save

    data = save({"conv1.weight": torch.zeros(16, 3, 3, 3)})
    path = path.with_suffix(".safetensors")
    path.write_bytes(data[: len(data) // 2])
    return path


def _folder_without_best(path: Path) -> Path:
    folder = path.parent / "some-run"
    folder.mkdir()
    return folder


# --- checkpoints of a run (resume, eval) --------------------------------------------------------


def run_file_defect(command: str, name: str, write: Callable[[Path, Path], object], *fragments: str):
    def make(tmp: Path, run: Path) -> Setup:
        write(run / name, tmp)
        if command == "resume":  # an unfinished run: last.pt without summary.json
            (run / "summary.json").unlink()
            return Setup(["train", "--resume", str(run)], [str(run / name), *fragments])
        return Setup(["eval", str(run), "--device", "cpu"], [str(run / name), *fragments])

    return make


def _truncate(path: Path, tmp: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _replace_with_list(path: Path, tmp: Path) -> None:
    torch.save([1, 2, 3], path)


def _replace_with_other_arch(path: Path, tmp: Path) -> None:
    """The run's own checkpoint, with a resnet18's weights in place of its resnet20's."""
    import torchvision

    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"] = torchvision.models.resnet18(num_classes=2).state_dict()
    torch.save(checkpoint, path)


def _break_yaml(path: Path, tmp: Path) -> None:
    path.write_text(path.read_text() + "\n  - : [unclosed\n")


def _break_json(path: Path, tmp: Path) -> None:
    path.write_text(path.read_text()[:40])


def predict_defect(write: Callable[[Path], object], *fragments: str):
    def make(tmp: Path, run: Path) -> Setup:
        image = tmp / "query.png"
        write(image)
        return Setup(["predict", str(run), str(image), "--device", "cpu"], [str(image), *fragments])

    return make


def _export_unwritable(tmp: Path, run: Path) -> Setup:
    (tmp / "blocker").write_text("a regular file")
    out = tmp / "blocker" / "model.onnx"
    return Setup(["export", str(run), "--format", "torchscript", "--out", str(out)], [str(out.parent), "--out"])


def _report_not_a_sweep(tmp: Path, run: Path) -> Setup:
    return Setup(["report", str(run.parent)], [str(run.parent), "not a sweep folder"])


DEFECTS: dict[str, Callable[[Path, Path], Setup]] = {
    # images
    "image-truncated-png": image_defect(_truncated_png, "truncated"),
    "image-zero-bytes": image_defect(lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "image-html-named-png": image_defect(lambda p: p.write_text("<html>saved web page</html>"), "not an image"),
    "image-absurd-size-1x5000": image_defect(
        lambda p: save_image(p, np.zeros((5000, 1, 3), np.uint8)), "1x5000"),
    "image-decompression-bomb-header": image_defect(lambda p: png_header_only(p, 60000, 60000), "too large"),
    "image-symlink-loop-class-folder": _symlink_loop_class,
    "image-val-class-not-in-train": _val_class_not_in_train,
    "image-root-missing": _root_missing,
    # CSV
    "csv-label-out-of-range": csv_defect("image,label\n0.png,0\n1.png,7\n", "line 3", "label 7",
                                         class_names=["x", "y"]),
    "csv-label-not-integer": csv_defect("image,label\n0.png,0\n1.png,cat\n", "line 3", "'cat'"),
    "csv-duplicate-id": csv_defect("image,label\n0.png,0\n1.png,1\n0.png,1\n2.png,0\n", "line 4", "0.png", "line 2"),
    "csv-path-escapes-root": csv_defect("image,label\n0.png,0\n../../outside.png,1\n", "line 3", "leaves"),
    "csv-absolute-path": csv_defect("image,label\n0.png,0\n/etc/hostname,1\n", "line 3", "leaves"),
    "csv-missing-image": csv_defect("image,label\n0.png,0\n9.png,1\n", "line 3", "9.png"),
    "csv-missing-column": csv_defect("file,level\n0.png,0\n", "no column 'image'", "data.csv.id_column"),
    "csv-ragged-row": csv_defect("image,label\n0.png,0\n1.png\n", "line 3", "fields"),
    "csv-nul-byte-in-id": csv_defect("image,label\n0.png,0\n1.png\0,1\n", "line 3"),
    "csv-binary-file": _csv_binary,
    "csv-id-is-a-symlink-loop": _csv_symlink_loop,
    # masks
    "mask-wrong-size": mask_defect(lambda r: save_image(r / "masks" / "1.png", np.zeros((6, 8), np.uint8)),
                                   ["masks/1.png", "8x6"]),
    "mask-values-out-of-range": mask_defect(
        lambda r: save_image(r / "masks" / "2.png", np.full((8, 8), 7, np.uint8)), ["masks/2.png", "[7]"]),
    "mask-missing": mask_defect(lambda r: (r / "masks" / "3.png").unlink(), ["images/3.png", "no mask"]),
    "mask-rgb-coloured": mask_defect(_coloured_mask, ["masks/1.png", "RGB mask"]),
    "mask-float-mode": mask_defect(_float_mask, ["masks/1.tif", "floating-point"]),
    "mask-value-map-incomplete": mask_defect(lambda r: None, ["masks/", "value_map"], value_map={0: 0, 255: 1}),
    # config files
    "config-yaml-syntax-error": lambda tmp, run: train_text(tmp, "name: x\ndata: {source: folder\nepochs: 1\n",
                                                            ["YAML syntax error"]),
    "config-unknown-key": lambda tmp, run: train_text(tmp, "optimiser: {lr: 0.1}\n", ["optimiser", "unknown key"]),
    "config-unknown-nested-key": lambda tmp, run: train_text(tmp, "data: {sauce: folder}\n",
                                                             ["data.sauce", "unknown key"]),
    "config-wrong-type": lambda tmp, run: train_text(tmp, "epochs: three\n", ["epochs", "'three'"]),
    "config-section-wrong-type": lambda tmp, run: train_text(tmp, "data: [1, 2]\n", ["data"]),
    "config-not-a-mapping": lambda tmp, run: train_text(tmp, "- epochs: 1\n", ["mapping"]),
    "config-not-utf8": lambda tmp, run: train_text(tmp, b"epochs: \xff\xfe\x00\x01\n", ["cannot read"]),
    "config-empty": lambda tmp, run: train_text(tmp, "", ["empty"]),
    "config-missing-file": _config_missing,
    "config-bad-set-override": _set_override,
    "config-unknown-model": lambda tmp, run: train_with(tmp, run, ["resnet9000"], model={"name": "resnet9000"}),
    # loss specs
    "loss-unbalanced-parentheses": loss_defect("focal(gamma=2", "focal(gamma=2"),
    "loss-injection-import": loss_defect("__import__('os').system('touch MARKER')", "__import__", marker=True),
    "loss-injection-attribute": loss_defect("ce.__class__.__init__.__globals__", "__class__"),
    "loss-injection-in-value": loss_defect("focal(gamma=open('MARKER', 'w'))", "open", marker=True),
    "loss-unknown-name": loss_defect("fcoal(gamma=2)", "fcoal"),
    "loss-bad-parameter-value": loss_defect("focal(gamma=-1)", "gamma"),
    "loss-unknown-parameter": loss_defect("focal(gama=2)", "gama"),
    "loss-nul-byte": loss_defect("ce\0", "ce"),
    "loss-absurdly-long-spec": loss_defect(" + ".join(["ce"] * 5000), "ce + ce"),
    # weights files
    "weights-other-architecture": weights_defect(_other_arch, "backbone"),
    "weights-truncated": weights_defect(_truncated_weights, "truncated"),
    "weights-zero-bytes": weights_defect(lambda p: (p.write_bytes(b""), p)[1], "not a loadable"),
    "weights-pickled-list": weights_defect(_list_pickle, "not a state dict"),
    "weights-plain-pickle": weights_defect(_plain_pickle, "not a loadable"),
    "weights-truncated-safetensors": weights_defect(_truncated_safetensors, "not a loadable"),
    "weights-folder-without-best": weights_defect(_folder_without_best, "best.pt"),
    # a run's own files
    "resume-truncated-last-pt": run_file_defect("resume", "last.pt", _truncate, "cannot"),
    "resume-last-pt-not-a-dict": run_file_defect("resume", "last.pt", _replace_with_list, "holds a list"),
    "resume-last-pt-other-architecture": run_file_defect("resume", "last.pt", _replace_with_other_arch,
                                                         "does not fit"),
    "resume-broken-config-yaml": run_file_defect("resume", "config.yaml", _break_yaml, "YAML"),
    "eval-truncated-best-pt": run_file_defect("eval", "best.pt", _truncate, "truncated"),
    "eval-best-pt-other-architecture": run_file_defect("eval", "best.pt", _replace_with_other_arch, "does not fit"),
    "eval-broken-summary-json": run_file_defect("eval", "summary.json", _break_json, "JSON"),
    "predict-zero-byte-image": predict_defect(lambda p: p.write_bytes(b""), "cannot read"),
    "predict-decompression-bomb-header": predict_defect(lambda p: png_header_only(p, 60000, 60000), "cannot read"),
    "predict-missing-image": predict_defect(lambda p: None, "no such image"),
    "report-not-a-sweep-folder": _report_not_a_sweep,
    "export-out-under-a-file": _export_unwritable,
}

#: a fresh ``python -m lossbench`` process for a few (each that reaches torch costs seconds of imports; the
#: in-process runs cover all): one refused before anything heavy is imported, one after the whole stack is,
#: so import-time output would show on its stderr
SUBPROCESS = ["config-yaml-syntax-error", "image-truncated-png"]
#: a process forked with lossbench imported: its own exit code, file descriptors 1 and 2 and working folder
FORKED = ["loss-injection-import"]
PROCESS = {"in-process": False, "subprocess": True, "forked": "forked"}

CASES = [pytest.param(name, "in-process", id=name) for name in DEFECTS] + [
    pytest.param(name, "subprocess", id=f"{name}-subprocess") for name in SUBPROCESS] + [
    pytest.param(name, "forked", id=f"{name}-forked") for name in FORKED]


def test_corpus_is_large_and_varied():
    kinds = {name.split("-")[0] for name in DEFECTS}
    assert len(DEFECTS) >= 25
    assert kinds >= {"image", "csv", "mask", "config", "loss", "weights", "resume", "eval", "predict"}


@pytest.mark.parametrize("name, via", CASES)
def test_defect_is_refused_in_one_line(name, via, tmp_path, kept_run):
    setup = DEFECTS[name](tmp_path, kept_run)
    before = tree_hash(kept_run.parent)
    res = run_cli(setup.argv, cwd=tmp_path, process=PROCESS[via])
    assert_refused_in_one_line(res, setup.fragments)
    assert tree_hash(kept_run.parent) == before, "a run folder changed"
    for path in setup.absent:
        assert not path.exists(), f"{path} was created"
    TALLY[f"defects refused ({via})"] += 1
