"""Each recipe in recipes/ runs end to end on a tiny fixture written in the exact on-disk layout it expects.

The recipes are run unchanged except for ``--set`` overrides that shrink them
(one epoch, one seed, tiny images) and point ``data.root`` at the fixture.
ImageNet cells read weights the test saves into fake offline caches
(``$TORCH_HOME`` and the Hugging Face cache): nothing is downloaded.
"""

import csv
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import save_file
from sklearn.metrics import cohen_kappa_score

from cli_helper import run_cli

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SMALL = ["epochs=1", "data.num_workers=0", "grid.seed=[0]"]


@pytest.fixture
def caches(tmp_path, monkeypatch, forked_cells):
    """Empty offline weight caches and a private decode cache; inherited by the sweep's cell processes."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "decoded"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def fake_torchvision_imagenet(root: Path, arch: str) -> dict:
    """A freshly initialised 1000-class model saved under the file name torchvision would download."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = root / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    torch.save(state, path)
    return state


def fake_smp_imagenet(root: Path, encoder: str) -> dict:
    """An smp encoder's weights laid out as huggingface_hub caches smp's pinned revision."""
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    revision = settings["revision"]
    repo = root / "hf" / f"models--{settings['repo_id'].replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(8)
    state = smp.encoders.get_encoder(encoder).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / revision / "model.safetensors"))
    return state


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def blob_image(rng: np.random.Generator, size: int, level: int) -> np.ndarray:
    """A noisy RGB image whose brightness follows ``level``, so classes differ a little."""
    base = 40 + 40 * level
    return np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def sweep(recipe: str, out: Path, *overrides: str) -> tuple[list[dict], str]:
    """Run ``lossbench sweep`` in this process (cells are forked processes); rows of results.csv and stdout."""
    args = ["sweep", str(RECIPES / recipe), "--out", str(out), "--jobs", "2"]
    for item in overrides:
        args += ["--set", item]
    printed = run_cli(args)
    assert printed.code == 0, printed.out + printed.err
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["status"] == "done" for r in rows), rows
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    return rows, printed.out


def summary(out: Path, row: dict) -> dict:
    return json.loads((out / row["cell"] / "summary.json").read_text())


def per_class_from_confusion(cm: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(recall, IoU) per class, written out from a confusion matrix (rows = true class); NaN where undefined."""
    cm = np.asarray(cm, dtype=float)
    tp, true, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / true, tp / (true + pred - tp)


def best_state(out: Path, row: dict) -> dict:
    return torch.load(out / row["cell"] / "best.pt", map_location="cpu", weights_only=True)["model"]


# --- 2. CIFAR-10, four classes, ResNet-U-Net classifier, focal vs focal + Dice ------------------------


def write_cifar10(root: Path) -> None:
    """cifar-10-batches-py/ with one training batch, the test batch and batches.meta, as pickled by CIFAR's authors."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 120), ("test_batch", 30)):
        labels = [k % 10 for k in range(n)]
        data = np.stack([blob_image(rng, 32, y % 4).transpose(2, 0, 1).reshape(-1) for y in labels])
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(n)]}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_cases_per_batch": 10000}, f)


def test_cifar10_recipe_is_the_original_system_a_resnet50_unet_classifier_with_focal_vs_focal_plus_dsc():
    from lossbench.experiments.plan import plan_sweep
    from lossbench.losses import build_loss
    from lossbench.losses.dsc import SelfAdjustingDiceLoss
    from lossbench.losses.focal import FocalLoss
    from lossbench.models import build_model

    plan = plan_sweep(RECIPES / "cifar10_focal_dice.yaml", sweep_dir="/nonexistent")
    exp = plan.cells[0].experiment
    assert [c.experiment.loss for c in plan.cells if c.experiment.seed == 0] == [
        "focal(gamma=2)", "focal(gamma=2) + dsc", "focal(gamma=2) + dice"]
    assert sorted({c.experiment.seed for c in plan.cells}) == [0, 1, 2]
    assert exp.data.eval_split == "val" and plan.report[plan.cells[0].document]["epoch"] == "best"
    model = build_model(exp.model, "classification", 4)
    encoder = model.encoder  # the U-Net's encoder, kept by the classifier (its decoder is not)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in encoder.modules()) == 53  # ResNet-50: 49 + 4 downsamples
    assert encoder.layer1[0].conv3.out_channels == 256  # bottleneck blocks (ResNet-18/34 have none)
    loss = build_loss("focal(gamma=2) + dsc", 4, class_counts=[40, 20, 10, 5])
    kinds = [type(m) for m in loss.modules()]
    assert FocalLoss in kinds and SelfAdjustingDiceLoss in kinds
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    focal = build_loss("focal(gamma=2)", 4)(z, y)
    dsc = build_loss("dsc", 4)(z, y)
    assert loss(z, y).item() == pytest.approx((focal + dsc).item(), rel=1e-6)


def test_cifar10_focal_dice(caches):
    write_cifar10(caches / "cifar")
    out = caches / "runs" / "cifar"
    rows, _ = sweep("cifar10_focal_dice.yaml", out, *SMALL, f"data.root={caches / 'cifar'}",
                    "data.image_size=16", "batch_size=8", "model.encoder=resnet18")
    assert [r["loss"] for r in rows] == ["focal(gamma=2)", "focal(gamma=2) + dsc", "focal(gamma=2) + dice"]
    for row in rows:
        s = summary(out, row)
        assert s["class_names"] == ["cat", "deer", "dog", "horse"]
        counts = s["class_counts"]  # long-tailed by the recipe's imbalance_ratio
        assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
        assert 0 <= s["best"]["val_balanced_accuracy"] <= 1
        # 12 images per class in the batch, 20 % of each to validation before the long tail: 2 per class
        cm = s["best_confusion_matrix"]
        assert [sum(r) for r in cm] == [2, 2, 2, 2]
        recall, _ = per_class_from_confusion(cm)
        assert s["best"]["val_balanced_accuracy"] == pytest.approx(float(np.nanmean(recall)))
    assert "focal(gamma=2) + dice" in (out / "report.md").read_text()


# --- 3. Diabetic retinopathy: Kaggle CSV layout, ResNet-18 / -50 x ImageNet / scratch, QWK -----------


def write_retinopathy(root: Path, per_grade: int = 5) -> None:
    """trainLabels.csv ("image,level") and train/<image>.jpeg, as in Kaggle's diabetic-retinopathy-detection."""
    rng = np.random.default_rng(1)
    rows = ["image,level"]
    for i in range(per_grade * 5):
        ident, level = f"{10 + i // 2}_{'left' if i % 2 == 0 else 'right'}", i % 5
        rows.append(f"{ident},{level}")
        (root / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(blob_image(rng, 40, level)).save(root / "train" / f"{ident}.jpeg", quality=90)
    (root / "trainLabels.csv").write_text("\n".join(rows) + "\n")


def test_retinopathy_transfer_grid_then_focal_on_the_best_cell(caches):
    r18 = fake_torchvision_imagenet(caches, "resnet18")
    fake_torchvision_imagenet(caches, "resnet50")
    write_retinopathy(caches / "dr")
    out = caches / "runs" / "retinopathy"
    rows, _ = sweep("retinopathy.yaml", out, "epochs=1", "data.num_workers=0", "grid.seed=[0]",
                    f"data.root={caches / 'dr'}", "data.image_size=16")
    assert [(r["document"], r["model.pretrained"]) for r in rows] == [
        ("retinopathy-resnet18", "imagenet"), ("retinopathy-resnet18", ""),
        ("retinopathy-resnet50", "imagenet"), ("retinopathy-resnet50", ""),
    ]
    for row in rows:
        s = summary(out, row)
        assert s["best_metric"] == "val_quadratic_kappa" and s["class_names"] == ["0", "1", "2", "3", "4"]
        assert -1 <= s["best"]["val_quadratic_kappa"] <= 1
        cm = s["best_confusion_matrix"]
        assert [sum(r) for r in cm] == [1] * 5  # 5 images per grade, 20 % of each to validation
        true = [t for t in range(5) for p in range(5) for _ in range(cm[t][p])]
        pred = [p for t in range(5) for p in range(5) for _ in range(cm[t][p])]
        kappa = cohen_kappa_score(true, pred, labels=list(range(5)), weights="quadratic")
        assert s["best"]["val_quadratic_kappa"] == pytest.approx(kappa)
        assert "normalization.json" in {p.name for p in (out / row["cell"]).iterdir()}
    # epochs=1 runs the first stage only (feature extraction): the ImageNet backbone is still the file's,
    # the new 5-grade head has trained
    pretrained = best_state(out, rows[0])
    assert torch.equal(pretrained["layer3.1.conv2.weight"], r18["layer3.1.conv2.weight"])
    assert torch.equal(pretrained["bn1.running_mean"], r18["bn1.running_mean"])
    assert pretrained["fc.weight"].shape == (5, 512)
    assert not torch.equal(best_state(out, rows[1])["conv1.weight"], r18["conv1.weight"])
    report = (out / "report.md").read_text()
    assert "Δ quadratic_kappa (a − b" in report and "quadratic_kappa" in report.splitlines()[
        next(i for i, line in enumerate(report.splitlines()) if line.startswith("| configuration | seeds"))]
    assert "Normalized confusion matrices" in report

    # the documented follow-up: CE vs focal on the best cell, from the config the sweep saved
    best = max(rows, key=lambda r: -math.inf if math.isnan(float(r["best_quadratic_kappa"]))
               else float(r["best_quadratic_kappa"]))
    config = out / "configs" / f"{best['cell']}.yaml"
    focal_out = caches / "runs" / "retinopathy-focal"
    printed = run_cli(["sweep", str(config), "--out", str(focal_out), "--jobs", "2",
                       "--set", 'grid={loss: [ce, "focal(gamma=2)"]}', "--set", "report={metric: quadratic_kappa}"])
    assert printed.code == 0, printed.err
    with (focal_out / "results.csv").open(newline="") as f:
        focal_rows = list(csv.DictReader(f))
    assert [r["loss"] for r in focal_rows] == ["ce", "focal(gamma=2)"]
    assert all(r["status"] == "done" and r["best_quadratic_kappa"] != "" for r in focal_rows)
    assert summary(focal_out, focal_rows[1])["best_metric"] == "val_quadratic_kappa"
    assert "Δ quadratic_kappa (a − b" in (focal_out / "report.md").read_text()

    # a report.metric the runs do not have is one line naming it, exit code 2
    meta = json.loads((focal_out / "sweep.json").read_text())
    meta["report"] = {document: {"metric": "kappa"} for document in meta["report"]}
    (focal_out / "sweep.json").write_text(json.dumps(meta))
    res = run_cli(["report", str(focal_out)])
    assert res.code == 2
    err = res.err.strip()
    assert err.startswith(f"lossbench: error: {focal_out / 'sweep.json'}: report.metric: 'kappa' is not a metric")
    assert "\n" not in err
    assert "quadratic_kappa" in err


# --- 4. Oxford-IIIT Pet trimaps, U-Net ResNet-34, CE vs Dice vs focal --------------------------------


def write_oxford_pet(root: Path) -> None:
    """images/<id>.jpg, annotations/trimaps/<id>.png (1 pet, 2 background, 3 border), trainval.txt, test.txt."""
    rng = np.random.default_rng(2)
    lines = {"trainval": [], "test": []}
    for breed, cls, species in (("Abyssinian", 1, 1), ("american_bulldog", 2, 2)):
        for i in range(1, 6):
            ident = f"{breed}_{i}"
            image = blob_image(rng, 48, 1)
            tri = np.full((48, 48), 2, dtype=np.uint8)
            lo, hi = 8 + i, 36 + i % 3
            image[lo:hi, lo:hi] = 220
            tri[lo:hi, lo:hi] = 1
            tri[lo - 1, lo - 1:hi + 1] = tri[hi, lo - 1:hi + 1] = 3
            save_image(root / "images" / f"{ident}.jpg", image)
            save_image(root / "annotations" / "trimaps" / f"{ident}.png", tri)
            lines["test" if i == 5 else "trainval"].append(f"{ident} {cls} {species} 1")
    for name, entries in lines.items():
        (root / "annotations" / f"{name}.txt").write_text("\n".join(entries) + "\n")


def test_oxford_pet_losses(caches):
    fake_smp_imagenet(caches, "resnet34")
    write_oxford_pet(caches / "pets")
    out = caches / "runs" / "pets"
    rows, _ = sweep("oxford_pet_losses.yaml", out, "epochs=1", "data.num_workers=0", "grid.seed=[0]",
                    f"data.root={caches / 'pets'}", "data.image_size=32")
    assert [r["loss"] for r in rows] == ["ce", "dice", "focal(gamma=2)"]
    for row in rows:
        s = summary(out, row)
        assert s["class_names"] == ["background", "pet", "border"]
        assert 0 <= s["best"]["val_miou"] <= 1 and 0 <= s["best"]["val_pixel_accuracy"] <= 1
        assert all(0 <= s["best"][f"val_iou_{k}"] <= 1 for k in range(3))  # per-class IoU
        cm = np.asarray(s["best_confusion_matrix"])
        assert cm.sum() == 2 * 32 * 32  # 20 % of the 8 trainval images, every pixel (3 classes: none ignored)
        _, iou = per_class_from_confusion(cm)
        assert [s["best"][f"val_iou_{k}"] for k in range(3)] == pytest.approx(iou.tolist(), nan_ok=True)
        assert s["best"]["val_miou"] == pytest.approx(float(np.nanmean(iou)))
        assert s["best"]["val_pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| configuration | seeds"))
    assert "miou" in header and "pixel_accuracy" in header
    table = [line for line in md.splitlines() if line.startswith("| loss=")]
    assert len(table) >= 3 and any("★" in line for line in table)  # the best loss per column is marked
    assert "Validation examples" in md


# --- 5. Hymenoptera: ants vs bees class folders, ResNet-18 transfer learning -------------------------


def write_hymenoptera(root: Path) -> None:
    """hymenoptera_data/{train,val}/{ants,bees}/*.jpg, as in PyTorch's transfer-learning tutorial."""
    rng = np.random.default_rng(3)
    for split, n in (("train", 5), ("val", 2)):
        for k, cls in enumerate(("ants", "bees")):
            for i in range(n):
                save_image(root / split / cls / f"{1000 + i}_{cls}.jpg", blob_image(rng, 40, 1 + 2 * k))


def test_hymenoptera_transfer_learning(caches):
    r18 = fake_torchvision_imagenet(caches, "resnet18")
    write_hymenoptera(caches / "hymenoptera_data")
    out = caches / "runs" / "hymenoptera"
    rows, _ = sweep("hymenoptera.yaml", out, *SMALL, f"data.root={caches / 'hymenoptera_data'}",
                    "data.image_size=16")
    assert [json.loads(r["stages"])[0]["train"] for r in rows] == ["all", "head"]
    for row in rows:
        s = summary(out, row)
        assert s["class_names"] == ["ants", "bees"] and s["class_counts"] == [5, 5]
        assert sum(map(sum, s["best_confusion_matrix"])) == 4  # the given val/ split, not a re-split
        assert 0 <= s["best"]["val_accuracy"] <= 1
        cm = np.asarray(s["best_confusion_matrix"])
        assert cm.sum(1).tolist() == [2, 2] and s["best"]["val_accuracy"] == pytest.approx(np.trace(cm) / 4)
    finetuned, fixed = best_state(out, rows[0]), best_state(out, rows[1])
    assert not torch.equal(finetuned["layer4.1.conv2.weight"], r18["layer4.1.conv2.weight"])
    assert torch.equal(fixed["layer4.1.conv2.weight"], r18["layer4.1.conv2.weight"])  # a fixed feature extractor
    assert not torch.equal(fixed["fc.weight"], finetuned["fc.weight"])


# --- 6. DSB 2018 nuclei: prepare-dsb2018, nested U-Net with deep supervision, BCE + Dice vs Lovász ------


def write_dsb2018(root: Path, samples: int = 8) -> None:
    """stage1_train/<id>/images/<id>.png (RGBA) and stage1_train/<id>/masks/<n>.png, one mask per nucleus."""
    rng = np.random.default_rng(4)
    for s in range(samples):
        ident = f"{s:02d}a7c3e9b1f0d2"
        sample = root / "stage1_train" / ident
        image = np.zeros((40, 40, 4), dtype=np.uint8)
        image[..., :3] = rng.integers(0, 40, (40, 40, 3))
        image[..., 3] = 255
        for n in range(3):
            y, x = rng.integers(4, 30, 2)
            mask = np.zeros((40, 40), dtype=np.uint8)
            mask[y:y + 7, x:x + 7] = 255
            image[y:y + 7, x:x + 7, :3] = 200
            save_image(sample / "masks" / f"{n}.png", mask)
        save_image(sample / "images" / f"{ident}.png", image)


def test_dsb2018_nested_unet(caches):
    write_dsb2018(caches / "dsb2018")
    prepared = caches / "dsb2018-16"
    assert run_cli(["data", "prepare-dsb2018", str(caches / "dsb2018"), str(prepared), "--size", "16"]).code == 0
    assert len(list((prepared / "masks" / "0").glob("*.png"))) == 8
    out = caches / "runs" / "dsb"
    rows, _ = sweep("dsb2018_nested_unet.yaml", out, "epochs=1", f"data.root={prepared}",
                    "data.image_size=16", "grid.seed=[0]")
    assert [r["loss"] for r in rows] == ["bce_dice(per_image=true, smooth=0.00001)", "lovasz_hinge"]
    for row in rows:
        s = summary(out, row)
        assert s["class_names"] == ["nucleus"]
        assert 0 <= s["best"]["val_miou"] <= 1 and 0 <= s["best"]["val_dice"] <= 1
        config = (out / row["cell"] / "config.yaml").read_text()
        assert "deep_supervision: true" in config and "patience: 20" in config
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| configuration | seeds"))
    assert "miou" in header and "dice" in header

    # the run folder of a sigmoid segmenter re-evaluates to its summary and predicts 0 / 1 masks
    run = out / rows[0]["cell"]
    assert run_cli(["eval", str(run)]).code == 0
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    best = summary(out, rows[0])["best"]
    assert evaluated["metrics"]["miou"] == pytest.approx(best["val_miou"])
    assert evaluated["metrics"]["dice"] == pytest.approx(best["val_dice"])
    assert evaluated["per_class"][0]["class"] == "nucleus" and evaluated["per_class"][0]["support"] > 0
    assert run_cli(["predict", str(run), str(prepared / "images"), "--out", str(caches / "pred")]).code == 0
    masks = {m.name.removesuffix("_mask.png"): np.asarray(Image.open(m)) for m in (caches / "pred").glob("*_mask.png")}
    assert len(masks) == 8 and all(set(np.unique(m)) <= {0, 1} for m in masks.values())
    val = [Path(name).stem for name in json.loads((run / "split.json").read_text())["val"]]
    assert sum(int(masks[v].sum()) for v in val) == evaluated["per_class"][0]["predicted"]  # same pixels as eval


def test_dsb2018_recipe_loss_is_the_reference_bce_dice_and_min_lr():
    """4uiiurz1/pytorch-nested-unet: losses.py BCEDiceLoss and train.py's CosineAnnealingLR(eta_min=min_lr 1e-5)."""
    from lossbench.experiments.plan import plan_sweep
    from lossbench.losses import build_loss

    plan = plan_sweep(RECIPES / "dsb2018_nested_unet.yaml", sweep_dir="/nonexistent")
    exp = plan.cells[0].experiment
    assert exp.optimizer.lr * exp.scheduler.min_lr_factor == pytest.approx(1e-5)
    assert sorted({c.experiment.seed for c in plan.cells}) == [0, 1, 2]
    loss = build_loss(exp.loss, 1, task="segmentation")
    torch.manual_seed(0)
    z = torch.randn(4, 1, 8, 8) * 3
    y = (torch.rand(4, 1, 8, 8) > 0.7).float()
    y[1] = 0  # an image without nuclei: its Dice is smooth / (sum p + smooth), as in the reference
    bce = F.binary_cross_entropy_with_logits(z, y)
    p, t = torch.sigmoid(z).view(4, -1), y.view(4, -1)
    dice = (2 * (p * t).sum(1) + 1e-5) / (p.sum(1) + t.sum(1) + 1e-5)
    reference = 0.5 * bce + 1 - dice.sum() / 4
    assert loss(z, y).item() == pytest.approx(reference.item(), rel=1e-6)
    assert build_loss("bce_dice", 1, task="segmentation")(z, y).item() != pytest.approx(reference.item(), rel=1e-3)
