"""Pretrained weights: ImageNet from the local caches, a state-dict file, or an earlier run.

Nothing here downloads. ``pretrained: imagenet`` resolves the exact file
torchvision, timm or smp would download and reads it from the local cache
(``$TORCH_HOME/hub/checkpoints`` or the Hugging Face cache); when it is not
there, one line names the file and where to put it. ``pretrained: FILE`` and
``pretrained: RUN_FOLDER`` load a state dict strictly for the backbone and
tolerantly for the head, so one can pre-train on one dataset (or task) and
fine-tune on another. Every file is read with ``torch.load(weights_only=True)``
(or safetensors), never by unpickling arbitrary objects.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lossbench.errors import UserError
from lossbench.models.registry import ModelLayout

StateDict = dict[str, torch.Tensor]


# --- where the caches are ------------------------------------------------------------------------


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (read from the environment now, as torch.hub does)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def cached_hf_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """Path of ``filename`` of a Hugging Face repo in the local cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_hub_cache()), revision=revision)
    return Path(found) if isinstance(found, str) else None


def _hf_download_hint(repo_id: str, filename: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"`huggingface-cli download {repo_id} {filename}{rev}` on a machine online, then copy "
            f"{hf_hub_cache()}/models--{repo_id.replace('/', '--')} here (or point HF_HOME at such a cache)")


# --- reading files -------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> StateDict:
    """The tensors of a state-dict file (``.pth``/``.pt`` or ``.safetensors``) or of a checkpoint's ``model`` entry.

    A file that is not a state dict (another pickle, a truncated or corrupt
    file) is a UserError naming it.
    """
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict]:
    """A weights file's state dict and, for a checkpoint, its other top-level entries (epoch, optimizer, ...)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": the file is reported in one line below
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file can fail in any way (pickle, zip, safetensors header)
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: not a loadable state dict (truncated, corrupt or not plain tensors: {first[:160]})") \
            from None
    meta: dict = {}
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                meta = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise UserError(f"{path}: holds a {type(obj).__name__} that is not a state dict (name -> tensor); "
                        "give a .pth saved from model.state_dict() or a lossbench run folder")
    return obj, meta


def best_chosen_on_test(run_dir: Path) -> bool:
    """Whether a run folder's ``best.pt`` was chosen on the test split: as best.pt records it (``selected_on``),
    else (runs trained before it did) when the run evaluated the test split every epoch."""
    meta = read_checkpoint(run_dir / "best.pt")[1]
    if "selected_on" in meta:
        return meta["selected_on"] == "test"
    if not (run_dir / "config.yaml").is_file():  # a folder of weights, not a lossbench run: nothing to tell
        return False
    from lossbench.config import load_run_config

    return load_run_config(run_dir).data.eval_split == "test"


def resolve_pretrained_file(spec: str, log: Callable[[str], None] = print) -> Path:
    """``pretrained:`` as a file: a weights file as given, or a run folder's ``best.pt`` (its ``last.pt`` when
    best.pt was chosen on the test split or nothing was chosen: a starting point is never picked on test)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        best, last = path / "best.pt", path / "last.pt"
        if best.is_file() and not best_chosen_on_test(path):
            return best
        if not last.is_file():
            raise UserError(f"model.pretrained: {path} is a folder without best.pt or last.pt; give a finished run "
                            "folder or a weights file")
        why = "its best.pt was chosen on the test split" if best.is_file() else "it has no best.pt"
        log(f"model.pretrained: {path}: loading last.pt ({why})")
        return last
    if not path.exists():
        raise UserError(f"model.pretrained: {spec!r} is neither imagenet nor an existing weights file or run folder")
    return path


# --- loading into a model ------------------------------------------------------------------------


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


#: Ways to rename a file's keys onto a model's: as is, or a ResNet moving between classifier and U-Net encoder.
KEYINGS: tuple[Callable[[str], str], ...] = (lambda k: k, lambda k: "encoder." + k, lambda k: _strip(k, "encoder."))


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


@dataclass
class FittedTensors:
    """A weights file's tensors sorted against a model: loaded, skipped (file keys), or not fitting (described);
    and the model's backbone tensors the file lacks."""

    to_load: StateDict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def keys_onto_model(state: StateDict, target: StateDict) -> dict[str, tuple[str, torch.Tensor]]:
    """The file's tensors under the model's key names: DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.``
    unwrapped, then the :data:`KEYINGS` renaming that matches most keys; values keep their original key."""
    state = {_strip(_strip(k, "module."), "_orig_mod."): v for k, v in state.items()}
    rename = max(KEYINGS, key=lambda f: sum(f(k) in target for k in state))
    return {rename(k): (k, v) for k, v in state.items()}


def rgb_summed_to_gray(value: torch.Tensor, want: torch.Tensor) -> torch.Tensor | None:
    """A 3-channel first convolution summed over RGB when the model's takes one channel; None if that is not it."""
    if (value.ndim == 4 and want.ndim == 4 and value.shape[1] == 3 and want.shape[1] == 1
            and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]):
        return value.sum(1, keepdim=True)
    return None


def fit_tensors(renamed: dict[str, tuple[str, torch.Tensor]], target: StateDict, layout: ModelLayout
                ) -> FittedTensors:
    """Sort the renamed tensors: those that fit are loaded; skippable ones the model lacks and head tensors of
    another shape are skipped; anything else does not fit; backbone tensors the file lacks are missing."""
    # BatchNorm fills in a missing counter itself (old torchvision files have none).
    fitted = FittedTensors(missing=[k for k in target if not k.startswith(layout.head) and k not in renamed
                                    and not k.endswith("num_batches_tracked")])
    for key, (orig, value) in renamed.items():
        if key not in target:
            if key.startswith(layout.skippable) or orig.startswith(layout.skippable):
                fitted.skipped.append(orig)
            else:
                fitted.bad.append(f"{orig} (not in this model)")
            continue
        want = target[key]
        if value.shape != want.shape:
            gray = rgb_summed_to_gray(value, want)
            if gray is None and key.startswith(layout.head):
                fitted.skipped.append(orig)
                continue
            if gray is None:
                fitted.bad.append(f"{orig} ({_shape(value)} in file, {_shape(want)} in model)")
                continue
            value = gray
        fitted.to_load[key] = value.to(want.dtype)
    return fitted


def check_backbone_complete(fitted: FittedTensors, source: str) -> None:
    """UserError naming ``source`` unless every backbone tensor is there and everything loaded fits."""
    missing = fitted.missing
    if not (missing or fitted.bad):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} backbone tensors missing (e.g. {missing[0]})")
    if fitted.bad:
        parts.append(f"{len(fitted.bad)} that do not fit (e.g. {fitted.bad[0]})")
    raise UserError(f"{source}: not weights for this model's backbone: {'; '.join(parts)}; "
                    "check model.name / encoder / in_channels / stem against the file")


def loaded_summary(fitted: FittedTensors, target: StateDict, layout: ModelLayout, source: str) -> str:
    """The one log line of a load: tensors loaded, file tensors skipped (where), head tensors left fresh."""
    head_missing = [k for k in target if k.startswith(layout.head) and k not in fitted.to_load
                    and not k.endswith("num_batches_tracked")]
    if not (fitted.skipped or head_missing):
        return f"pretrained {source}: loaded all {len(fitted.to_load)} tensors"
    where = sorted({".".join(k.split(".")[:2 if k.startswith("encoder.") else 1]) for k in fitted.skipped})
    return (f"pretrained {source}: loaded {len(fitted.to_load)} tensors; skipped {len(fitted.skipped)} tensors of "
            f"the file (other head or unused layers: {', '.join(where) or 'none'}); "
            f"{len(head_missing)} head tensors of the model keep their fresh initialisation")


def load_backbone_strict(
    model: nn.Module, state: StateDict, source: str, layout: ModelLayout, log: Callable[[str], None] = print
) -> list[str]:
    """Load ``state`` into ``model``: every backbone tensor must be there with its shape; head tensors may differ.

    Keys saved by DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) are
    unwrapped, and a ResNet's keys move between a classifier and a U-Net
    encoder (``encoder.`` prefix) when that is what matches. A 3-channel first
    convolution loaded into a 1-channel model is summed over RGB. Tensors
    under ``layout.skippable`` that the model lacks (another kind of head,
    layers it drops) and head tensors of another shape are skipped and
    reported in one line; anything else that does not fit is a UserError
    naming ``source``. Returns the skipped keys.
    """
    target = model.state_dict()
    fitted = fit_tensors(keys_onto_model(state, target), target, layout)
    check_backbone_complete(fitted, source)
    model.load_state_dict({**target, **fitted.to_load}, strict=True)
    log(loaded_summary(fitted, target, layout, source))
    return fitted.skipped


# --- ImageNet weights from the local caches ------------------------------------------------------


def _missing(what: str, where: str, how: str) -> UserError:
    return UserError(f"model.pretrained: imagenet weights for {what} are not in the local cache (offline, "
                     f"nothing is downloaded): missing {where}; {how}")


def torchvision_imagenet(arch: str) -> StateDict:
    """torchvision's default ImageNet weights of ``arch`` (e.g. resnet18-f37072fd.pth) from ``$TORCH_HOME``."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    path = torch_hub_checkpoints() / filename
    if not path.is_file():
        raise _missing(arch, str(path), f"download {weights.url} into {path.parent} (or set TORCH_HOME)")
    return read_state_dict(path)


def timm_imagenet(name: str, pretrained_cfg: dict) -> StateDict:
    """A timm model's default pretrained weights: Hugging Face cache first, then ``$TORCH_HOME`` (timm's old URL)."""
    repo = pretrained_cfg.get("hf_hub_id")
    url = pretrained_cfg.get("url")
    wanted = []
    if repo:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = cached_hf_file(repo, filename)
            if found is not None:
                return read_state_dict(found)
        wanted.append((f"{repo}/model.safetensors in the Hugging Face cache {hf_hub_cache()}",
                       _hf_download_hint(repo, "model.safetensors", None)))
    if url:
        path = torch_hub_checkpoints() / url.rsplit("/", 1)[-1]
        if path.is_file():
            return read_state_dict(path)
        wanted.append((str(path), f"download {url} into {path.parent}"))
    if not wanted:
        raise UserError(f"model.pretrained: timm:{name} has no pretrained weights; set pretrained: null")
    raise _missing(f"timm:{name}", " or ".join(w for w, _ in wanted), "; or ".join(h for _, h in wanted))


def smp_encoder_imagenet(encoder: str) -> StateDict:
    """An smp encoder's ImageNet weights (``model.safetensors`` of its pinned smp-hub revision) from the HF cache."""
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        raise UserError(f"model.pretrained: smp has no imagenet weights for encoder {encoder!r}; "
                        "use a ResNet encoder or pretrained: null")
    if "repo_id" not in settings:
        raise UserError("model.pretrained: offline imagenet weights for smp encoders need "
                        "segmentation-models-pytorch with Hugging Face hub weights (0.5 or later); upgrade it")
    repo, revision = settings["repo_id"], settings.get("revision")
    found = cached_hf_file(repo, "model.safetensors", revision)
    if found is None:
        where = f"{hf_hub_cache()}/models--{repo.replace('/', '--')}/snapshots/{revision}/model.safetensors"
        raise _missing(f"encoder {encoder}", where, _hf_download_hint(repo, "model.safetensors", revision))
    return read_state_dict(found)
