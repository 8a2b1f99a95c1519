"""Untrusted files cannot run code: weights, checkpoints, data pickles and configs are read without unpickling
arbitrary objects. Each malicious file carries a payload that would create a marker file; the tests prove the
payload is live (it fires when unpickled the unsafe way) and that lossbench refuses the file in one line
without it ever firing."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from .helpers import TALLY, Payload, class_folder, run_cli, save_image, tree_hash, write_evil_pickle

SRC = Path(__file__).resolve().parents[2] / "src" / "lossbench"


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path):
    for torch_format in (True, False):
        marker = tmp_path / f"fired-{torch_format}"
        path = write_evil_pickle(tmp_path / f"evil-{torch_format}.pth", marker, torch_format)
        if torch_format:
            torch.load(path, weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert marker.exists()


def test_every_load_in_the_package_is_safe():
    """torch.load always with weights_only=True; no bare pickle or yaml.load; the CIFAR unpickler is restricted."""
    unsafe = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                unsafe.append(f"{path.name}: {call}")
        # yaml.load only in config/yaml_io.py, with its safe Loader (checked below)
        unsafe += [f"{path.name}: {m}" for m in re.findall(r"pickle\.loads?\(|yaml\.unsafe_load|yaml\.load(?:_all)?\("
                                                            r"(?![^)]*Loader=Loader\))", text)]
        unsafe += [f"{path.name}: {m}" for m in re.findall(r"weights_only=False", text)]
    assert not unsafe, unsafe
    from lossbench.config import yaml_io

    assert issubclass(yaml_io.Loader, yaml.constructor.SafeConstructor)
    assert not issubclass(yaml_io.Loader, yaml.constructor.FullConstructor)
    with pytest.raises(yaml.YAMLError, match="python/object"):
        yaml_io.load("!!python/object/apply:os.system ['true']")


def _config(tmp: Path, **model) -> Path:
    root = class_folder(tmp / "data")
    cfg = {"name": "victim", "output_dir": str(tmp / "runs"),
           "data": {"source": "folder", "root": str(root), "image_size": 8, "cache_dir": str(tmp / "cache")},
           "model": {"name": "resnet20", **model}, "epochs": 1, "batch_size": 4, "device": "cpu"}
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def pretrained(torch_format):
    def make(tmp, run, marker):
        evil = write_evil_pickle(tmp / "evil.pth", marker, torch_format)
        return ["train", str(_config(tmp, pretrained=str(evil)))], evil
    return make


def run_file(command, name):
    def make(tmp, run, marker):
        write_evil_pickle(run / name, marker)
        if command == "resume":
            (run / "summary.json").unlink()
            return ["train", "--resume", str(run)], run / name
        if command == "predict":
            image = save_image(tmp / "query.png", np.zeros((8, 8, 3), np.uint8))
            return ["predict", str(run), str(image), "--device", "cpu"], run / name
        return ["eval", str(run), "--device", "cpu"], run / name
    return make


def cifar_batch(tmp, run, marker):
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}))
    cfg = tmp / "cifar.yaml"
    cfg.write_text(yaml.safe_dump({"name": "victim", "output_dir": str(tmp / "runs"),
                                   "data": {"source": "cifar10", "root": str(tmp), "image_size": 8},
                                   "model": {"name": "resnet20"}, "device": "cpu"}))
    return ["train", str(cfg)], folder / "data_batch_1"


def yaml_python_tag(tmp, run, marker):
    cfg = tmp / "evil.yaml"
    touch = f"!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]"
    cfg.write_text(f"name: {touch}\n")
    return ["train", str(cfg)], cfg


CASES = {
    "pretrained-torch-file": pretrained(True),
    "pretrained-plain-pickle": pretrained(False),
    "eval-best-pt": run_file("eval", "best.pt"),
    "predict-best-pt": run_file("predict", "best.pt"),
    "resume-last-pt": run_file("resume", "last.pt"),
    "cifar10-data-batch": cifar_batch,
    "config-yaml-python-tag": yaml_python_tag,
}


@pytest.mark.parametrize("name", list(CASES))
def test_malicious_file_is_refused_and_its_payload_never_runs(name, tmp_path, kept_run):
    marker = tmp_path / "PAYLOAD_RAN"
    argv, bad = CASES[name](tmp_path, kept_run, marker)
    before = tree_hash(kept_run)
    res = run_cli(argv, cwd=tmp_path)
    assert not marker.exists(), "the payload ran"
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert len(res.err_lines) == 1 and str(bad) in res.err_lines[0], res.err
    assert tree_hash(kept_run) == before
    TALLY["malicious files refused (payload never ran)"] += 1


def test_malicious_weights_refused_by_a_real_process(tmp_path):
    """A process of its own (forked with lossbench imported): its exit code, its stderr, the payload never fires."""
    marker = tmp_path / "PAYLOAD_RAN"
    argv, bad = pretrained(True)(tmp_path, None, marker)
    res = run_cli(argv, cwd=tmp_path, process="forked")
    assert not marker.exists(), "the payload ran"
    assert res.code == 2 and "Traceback" not in res.err and len(res.err_lines) == 1, res.err
    assert str(bad) in res.err_lines[0] and "not a loadable state dict" in res.err_lines[0]
    TALLY["malicious files refused (payload never ran)"] += 1
