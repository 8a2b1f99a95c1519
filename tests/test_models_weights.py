"""Pretrained weights: ImageNet from fake local caches (nothing downloads), files, run folders, bad files."""

import pickle

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from safetensors.torch import save_file

from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.models import build_model, model_layout, parameter_groups


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty TORCH_HOME and Hugging Face caches in tmp_path; the network is never needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def put_in_hf_cache(root, repo_id, filename, tensors, revision="0123456789abcdef0123456789abcdef01234567"):
    """Lay out a file as huggingface_hub's cache does: refs/main -> snapshots/<commit>/<file>."""
    repo = root / "hf" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(repo / "snapshots" / revision / filename))


def fake_torchvision_imagenet(root, arch="resnet18"):
    """A freshly initialised 1000-class model saved under the exact name torchvision would download."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = root / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_torchvision_imagenet_missing_names_the_file(offline_caches):
    with pytest.raises(UserError) as err:
        build_model(ModelConfig(name="resnet18", pretrained="imagenet"), "classification", 3)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(offline_caches / "torch" / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and "\n" not in msg


def test_torchvision_imagenet_loads_from_cache_and_one_channel_sums_rgb(offline_caches):
    state = fake_torchvision_imagenet(offline_caches)
    model = build_model(ModelConfig(name="resnet18", pretrained="imagenet"), "classification", 3)
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and model.fc.out_features == 3
    gray = build_model(ModelConfig(name="resnet18", pretrained="imagenet", in_channels=1), "classification", 3)
    assert torch.allclose(gray.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(gray.bn1.running_var, state["bn1.running_var"])
    small = build_model(ModelConfig(name="resnet18", pretrained="imagenet", stem="small"), "classification", 3)
    assert small.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(small.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_timm_imagenet_from_hf_cache_and_missing_message(offline_caches):
    with pytest.raises(UserError, match=r"timm/resnet10t\.c3_in1k/model\.safetensors") as err:
        build_model(ModelConfig(name="timm:resnet10t", pretrained="imagenet"), "classification", 3)
    assert str(offline_caches / "hf") in str(err.value)
    torch.manual_seed(2)
    state = timm.create_model("resnet10t", pretrained=False).state_dict()
    put_in_hf_cache(offline_caches, "timm/resnet10t.c3_in1k", "model.safetensors", state)
    cfg = ModelConfig(name="timm:resnet10t", pretrained="imagenet", in_channels=1)
    model = build_model(cfg, "classification", 3)
    assert torch.equal(model.layer4[0].conv2.weight, state["layer4.0.conv2.weight"])
    assert torch.allclose(model.conv1[0].weight, state["conv1.0.weight"].sum(1, keepdim=True), atol=1e-6)
    assert model.fc.out_features == 3
    assert [p is model.fc.weight for p in parameter_groups(model, model_layout(cfg, model).head)["head"]].count(True) == 1


def test_smp_encoder_imagenet_from_pinned_hf_revision(offline_caches):
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    with pytest.raises(UserError, match=f"snapshots/{settings['revision']}/model.safetensors"):
        build_model(ModelConfig(name="unet", pretrained="imagenet", encoder_depth=3), "segmentation", 2)
    torch.manual_seed(3)
    state = smp.encoders.get_encoder("resnet18").state_dict()
    put_in_hf_cache(offline_caches, settings["repo_id"], "model.safetensors", state, settings["revision"])
    cfg = ModelConfig(name="unet", pretrained="imagenet", encoder_depth=3, in_channels=1)
    model = build_model(cfg, "segmentation", 2)
    assert torch.equal(model.encoder.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert torch.allclose(model.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    clf = build_model(ModelConfig(name="resnet_unet", pretrained="imagenet"), "classification", 4)
    assert torch.equal(clf.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_weights_file_loads_backbone_and_skips_a_different_head(tmp_path, capsys):
    torch.manual_seed(4)
    source = build_model(ModelConfig(name="resnet20"), "classification", 10)
    path = tmp_path / "pretrain.pth"
    torch.save(source.state_dict(), path)
    model = build_model(ModelConfig(name="resnet20", pretrained=str(path)), "classification", 4)
    assert torch.equal(model.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert torch.equal(model.bn1.running_mean, source.bn1.running_mean)
    assert model.fc.weight.shape == (4, 64)
    gray = build_model(ModelConfig(name="resnet20", in_channels=1, pretrained=str(path)), "classification", 4)
    assert torch.allclose(gray.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    lines = [line for line in capsys.readouterr().out.splitlines() if "pretrained" in line][:1]
    assert len(lines) == 1 and str(path) in lines[0]
    assert "skipped 2 tensors of the file (other head or unused layers: fc)" in lines[0]


def test_run_folder_best_checkpoint_moves_an_encoder_between_tasks(tmp_path, capsys):
    """Pre-train a U-Net segmenter, fine-tune its encoder as a classifier (and the other way round)."""
    torch.manual_seed(5)
    seg = build_model(ModelConfig(name="unet"), "segmentation", 3)
    run = tmp_path / "runs" / "seg"
    run.mkdir(parents=True)
    torch.save({"model": seg.state_dict(), "optimizer": {}, "epoch": 2}, run / "best.pt")
    clf = build_model(ModelConfig(name="resnet_unet", pretrained=str(run)), "classification", 5)
    assert torch.equal(clf.encoder.layer3[0].conv1.weight, seg.encoder.layer3[0].conv1.weight)
    tv = build_model(ModelConfig(name="resnet18", pretrained=str(run)), "classification", 5)
    assert torch.equal(tv.layer2[1].conv2.weight, seg.encoder.layer2[1].conv2.weight)
    torch.save({"model": tv.state_dict(), "epoch": 1}, run / "best.pt")
    back = build_model(ModelConfig(name="unet", pretrained=str(run)), "segmentation", 2)
    assert torch.equal(back.encoder.layer1[0].bn1.weight, tv.layer1[0].bn1.weight)
    assert "skipped" in capsys.readouterr().out


def test_run_folder_never_starts_from_a_best_checkpoint_chosen_on_the_test_split(tmp_path, capsys):
    torch.manual_seed(6)
    best_net = build_model(ModelConfig(name="resnet20"), "classification", 3)
    last_net = build_model(ModelConfig(name="resnet20"), "classification", 3)
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    torch.save({"model": last_net.state_dict(), "epoch": 2}, run / "last.pt")
    for selected_on, expected in (("holdout", best_net), ("val", best_net), ("test", last_net)):
        torch.save({"model": best_net.state_dict(), "epoch": 1, "selected_on": selected_on}, run / "best.pt")
        got = build_model(ModelConfig(name="resnet20", pretrained=str(run)), "classification", 3)
        assert torch.equal(got.layer1[0].conv1.weight, expected.layer1[0].conv1.weight), selected_on
    assert "loading last.pt (its best.pt was chosen on the test split)" in capsys.readouterr().out
    # a run from before best.pt recorded its split: chosen on what it evaluated every epoch
    torch.save({"model": best_net.state_dict(), "epoch": 1}, run / "best.pt")
    (run / "config.yaml").write_text("data: {eval_split: test}\n")
    got = build_model(ModelConfig(name="resnet20", pretrained=str(run)), "classification", 3)
    assert torch.equal(got.layer1[0].conv1.weight, last_net.layer1[0].conv1.weight)
    (run / "best.pt").unlink()  # eval_split: test without a holdout writes no best.pt
    got = build_model(ModelConfig(name="resnet20", pretrained=str(run)), "classification", 3)
    assert torch.equal(got.layer1[0].conv1.weight, last_net.layer1[0].conv1.weight)
    assert "loading last.pt (it has no best.pt)" in capsys.readouterr().out


def _bad_files(tmp_path):
    r34 = tmp_path / "resnet34.pth"
    torch.save(build_model(ModelConfig(name="resnet34"), "classification", 3).state_dict(), r34)
    truncated = tmp_path / "truncated.pth"
    torch.save(build_model(ModelConfig(name="resnet20"), "classification", 3).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    not_sd = tmp_path / "numbers.pth"
    torch.save({"lr": 0.1, "epochs": [1, 2]}, not_sd)
    evil = tmp_path / "object.pth"
    evil.write_bytes(pickle.dumps(UserError("an arbitrary object")))
    other = tmp_path / "r18.pth"
    torch.save(build_model(ModelConfig(name="resnet18"), "classification", 3).state_dict(), other)
    return [(r34, "resnet18", "not in this model"), (truncated, "resnet20", "not a loadable state dict"),
            (not_sd, "resnet20", "not a state dict"), (evil, "resnet20", "not a loadable state dict"),
            (other, "resnet20", "backbone tensors missing")]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unusable_weights_files_are_one_line_errors_naming_the_file(tmp_path):
    for path, name, message in _bad_files(tmp_path):
        with pytest.raises(UserError) as err:
            build_model(ModelConfig(name=name, pretrained=str(path)), "classification", 3)
        msg = str(err.value)
        assert str(path) in msg and message in msg and "\n" not in msg, msg
    empty_run = tmp_path / "runs" / "empty"
    empty_run.mkdir(parents=True)
    with pytest.raises(UserError, match="without best.pt"):
        build_model(ModelConfig(name="resnet20", pretrained=str(empty_run)), "classification", 3)


def test_full_encoder_file_loads_into_a_shallow_unet(tmp_path, capsys):
    full = build_model(ModelConfig(name="unet"), "segmentation", 2)
    path = tmp_path / "full.pth"
    torch.save(full.state_dict(), path)
    shallow = build_model(ModelConfig(name="unet", encoder_depth=3, pretrained=str(path)), "segmentation", 2)
    assert torch.equal(shallow.encoder.layer2[1].conv1.weight, full.encoder.layer2[1].conv1.weight)
    line = capsys.readouterr().out
    assert "encoder.layer3" in line and "encoder.layer4" in line
    shallow_file = tmp_path / "shallow.pth"
    torch.save(shallow.state_dict(), shallow_file)
    with pytest.raises(UserError, match="backbone tensors missing"):
        build_model(ModelConfig(name="unet", pretrained=str(shallow_file)), "segmentation", 2)
