"""The experiment config: pydantic models, YAML loading and ``--set`` overrides.

A config file holds one experiment, or several as YAML documents separated by
``---`` (the quickstart runs a classification and a segmentation experiment).
Every mistake in it is reported as one line naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from lossbench.errors import UserError


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(StrictModel):
    """Training-time augmentation, applied jointly to image and mask (validation gets none)."""

    random_resized_crop: tuple[float, float] | None = Field(
        None, description="area scale range, e.g. [0.5, 1.0]: crop a random part and resize it back to image_size"
    )
    crop_padding: int = Field(0, ge=0, description="pad by this many pixels, then crop image_size at random (CIFAR style)")
    hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    rotation: float = Field(0.0, ge=0, le=180, description="rotate by a random angle in [-rotation, rotation] degrees")
    color_jitter: float = Field(0.0, ge=0, le=1, description="brightness, contrast and saturation jitter strength")

    @field_validator("random_resized_crop")
    @classmethod
    def _scale_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1] <= 1:
            raise ValueError("needs 0 < min <= max <= 1, e.g. [0.5, 1.0]")
        return v


class NormalizeStats(StrictModel):
    """Explicit per-channel mean and std (of images scaled to [0, 1])."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length_positive_std(self) -> "NormalizeStats":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be > 0")
        return self


class CsvOptions(StrictModel):
    """Options of the ``csv`` source; file names are relative to ``data.root``."""

    train: str = Field("train.csv", description="training CSV (with a header), or header-less ids with train_labels")
    train_labels: str | None = Field(None, description="header-less labels file: selects the two-file form")
    val: str | None = Field(None, description="validation CSV; none: a stratified split of train")
    val_labels: str | None = None
    test: str | None = None
    test_labels: str | None = None
    images: str = Field(".", description="folder of the images, relative to root")
    id_column: str = Field("image", description="column of image ids or relative paths (one-file form)")
    label_column: str = Field("label", description="column of integer labels (one-file form)")
    extension: str = Field("", description="appended to each id, e.g. '.jpeg' for Kaggle's trainLabels.csv")
    delimiter: str = Field(",", min_length=1, max_length=1)
    class_names: list[str] | None = Field(None, description="names of classes 0..K-1; also fixes K")


class SegFolderOptions(StrictModel):
    """Options of the ``seg_folder`` source; folder names are relative to ``data.root``."""

    images: str = "images"
    masks: str = "masks"
    mask_suffix: str = Field("", description="mask file stem = image stem + this, e.g. '_mask'")
    value_map: dict[int, int] | None = Field(
        None, description="index masks: mask value -> class (255 = ignore), e.g. {0: 0, 255: 1}"
    )
    class_names: list[str] | None = Field(None, description="names of the classes, background first for index masks")
    target: Literal["index", "multilabel"] = Field(
        "index", description="masks/<k>/ layout: merge into one index mask (background 0) or keep C binary channels"
    )


class ScenesOptions(StrictModel):
    """Options of the ``fashion_mnist_scenes`` source: canvases of real Fashion-MNIST items.

    ``data.image_size`` is the canvas side and ``data.imbalance_ratio`` how much
    more often the most frequent class appears than the rarest in training
    (validation and test canvases hold every class equally often). An item's
    size is drawn from ``scale_frequent`` for class 0 (the most frequent),
    ``scale_rare`` for class 9 (the rarest) and a linear blend of the two for
    the classes in between, in every split: size belongs to the class, frequency
    to the training sample.
    """

    train_canvases: int = Field(2000, gt=0, description="training canvases (items from the Fashion-MNIST train images)")
    val_canvases: int = Field(500, gt=0, description="validation canvases (items from one half of the t10k images)")
    test_canvases: int = Field(500, gt=0, description="test canvases (items from the other half of the t10k images)")
    objects: tuple[int, int] = Field(
        (2, 4), description="[min, max] items per canvas; a few canvases may hold one more or fewer so the class "
        "counts follow the profile exactly"
    )
    scale_frequent: tuple[float, float] = Field(
        (0.35, 0.6), description="[min, max] item side / canvas side of the most frequent class (class 0)"
    )
    scale_rare: tuple[float, float] = Field(
        (0.2, 0.35), description="[min, max] item side / canvas side of the rarest class (class 9)"
    )
    threshold: int = Field(
        25, ge=0, le=254, description="an item's (resized) pixel above this gray value (0-255) is the item and "
        "gets its class; at or below it the item is transparent"
    )
    eval_seed: int = Field(
        0, ge=0, description="seed of the validation / test canvases and of the t10k halves: the same for every "
        "run, so every cell of a sweep is evaluated on identical canvases (training canvases follow the run's seed)"
    )

    @field_validator("objects")
    @classmethod
    def _object_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError("needs 1 <= min <= max items per canvas, e.g. [2, 4]")
        return v

    @field_validator("scale_frequent", "scale_rare")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("needs 0 < min <= max <= 1 (item side / canvas side), e.g. [0.3, 0.5]")
        return v


class DataConfig(StrictModel):
    """Where samples come from, how they are shaped, and what is done about class imbalance."""

    source: str = Field("synthetic", description="registered data source, see `lossbench list sources`")
    root: Path | None = Field(None, description="folder or file the source reads from")
    image_size: int = Field(32, gt=0, description="square side images are resized (or generated) to")
    num_classes: int | None = Field(None, gt=0, description="classes to generate (synthetic); inferred for files")
    train_per_class: int = Field(200, gt=0, description="synthetic: training images of the largest class")
    val_per_class: int = Field(50, gt=0, description="synthetic: validation images per class (balanced)")
    imbalance_ratio: float = Field(1.0, ge=1.0, description="largest / smallest training class size")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    channels: Literal["auto", 1, 3] = Field("auto", description="channels images are decoded to; auto = model.in_channels")
    classes: list[int | str] | None = Field(None, min_length=1, description="class subset (indices or names), remapped to 0..K-1")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of train split off (stratified) when there is no val split")
    eval_split: Literal["val", "test"] = Field(
        "val", description="split evaluated every epoch: val, or the source's test split (the long-tail papers' "
        "protocol: train on all of train, evaluate on the balanced test set; no validation split is taken "
        "unless holdout is set)"
    )
    holdout: bool = Field(
        False, description="with eval_split: test, also hold out a validation split for choices that must not see "
        "the test set (post-hoc tau, tuning, epoch choice): the source's val split, else a stratified val_fraction "
        "of train taken BEFORE the long-tail subsample (so it is balanced when train is); recorded in split.json"
    )
    sampler: Literal["shuffle", "balanced"] = Field("shuffle", description="balanced: class-balanced weighted sampling")
    normalize: Literal["imagenet", "auto", "none"] | NormalizeStats = Field(
        "imagenet", description="imagenet, auto (mean/std of the training images, cached), none, or {mean, std}"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    cache: bool = Field(False, description="decode once into a memory-mapped file reused by later epochs and runs")
    cache_dir: Path | None = Field(None, description="where caches go; default $LOSSBENCH_CACHE or ~/.cache/lossbench")
    skip_bad: bool = Field(False, description="skip bad files (and report them) instead of stopping")
    csv: CsvOptions = Field(default_factory=CsvOptions)
    seg: SegFolderOptions = Field(default_factory=SegFolderOptions)
    scenes: ScenesOptions = Field(default_factory=ScenesOptions)
    pet_classes: Literal[2, 3] = Field(
        3, description="oxford_pet segmentation: 3 (background, pet, border) or 2 (background, pet; border ignored)"
    )

    @model_validator(mode="after")
    def _holdout_needs_eval_split_test(self) -> "DataConfig":
        if self.holdout and self.eval_split != "test":
            raise ValueError("holdout: true needs eval_split: test (with eval_split: val the validation split is "
                             "already held out); remove holdout or set eval_split: test")
        return self

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_spec(cls, v: Any) -> Any:
        """One clear message for a bad normalize value instead of one per union member."""
        if isinstance(v, str):
            if v not in ("imagenet", "auto", "none"):
                raise ValueError("use imagenet, auto, none or {mean: [...], std: [...]}")
            return v
        if isinstance(v, dict):
            try:
                return NormalizeStats.model_validate(v)
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = first['msg'].removeprefix('Value error, ')
                raise ValueError(f"{where + ': ' if where else ''}{msg}") from None
        if isinstance(v, NormalizeStats):
            return v
        raise ValueError("use imagenet, auto, none or {mean: [...], std: [...]}")


class ModelConfig(StrictModel):
    """Which network, how it is shaped, and what it starts from (see `lossbench list models`)."""

    name: str = Field("resnet18", description="registered model, or timm:<name> for any timm model")
    encoder: str = Field("resnet18", description="encoder of an smp segmenter or of resnet_unet (e.g. resnet34)")
    in_channels: int = Field(3, gt=0, description="input image channels; 1 sums pretrained first-conv weights over RGB")
    pretrained: str | None = Field(
        None, description="null, imagenet (local cache only), a state-dict file, or a run folder (its best.pt)"
    )
    stem: Literal["standard", "small"] | None = Field(
        None, description="torchvision ResNets: small = 3x3 stride-1 first conv, no max-pool (32x32 images); "
        "null = the model's own stem"
    )
    encoder_depth: int | None = Field(
        None, ge=1, le=5, description="downsampling stages of a U-Net encoder; null = the model's default (5, nested 4)"
    )
    deep_supervision: bool = Field(
        False, description="nested_unet: return every side output in training (list), the last in evaluation"
    )
    base_channels: int = Field(32, gt=0, description="nested_unet: channels of the first level, doubled per level")
    head: Literal["linear", "cosine"] = Field(
        "linear", description="classifiers: linear (W f + b), or cosine (cos(f, w_c) in [-1, 1], no bias: LDAM's "
        "NormedLinear, Cao et al. 2019; the loss supplies the scale, e.g. ldam(s=30))"
    )
    bias_prior: float | None = Field(
        None, gt=0, lt=1, description="classifiers: start the classifier bias at -log((1-pi)/pi), so each sigmoid "
        "starts at p = pi (Cui et al. 2019: pi = 0.1, for sigmoid losses); null: the framework's default init"
    )

    @model_validator(mode="after")
    def _bias_prior_needs_a_bias(self) -> "ModelConfig":
        if self.head == "cosine" and self.bias_prior is not None:
            raise ValueError("bias_prior needs a bias and head: cosine has none; set bias_prior: null or head: linear")
        return self


class OptimizerConfig(StrictModel):
    """The optimizer and its hyper-parameters.

    Weight decay skips biases and normalization weights (every parameter with
    fewer than two dimensions) unless ``decay_norm_and_bias`` is set: decaying
    them only fights the normalization (Goyal et al. 2017; timm does the same).
    """

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, description="learning rate of the head (and of everything, with factor 1)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam / AdamW betas")
    weight_decay: float = Field(0.0, ge=0)
    decay_norm_and_bias: bool = Field(False, description="also apply weight decay to biases and norm weights")
    backbone_lr_factor: float = Field(1.0, gt=0, description="discriminative lr: backbone lr = lr x this factor")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "OptimizerConfig":
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs name: sgd and momentum > 0")
        return self


LossSpec = Union[str, dict[str, Any], list[Any]]


class SchedulerConfig(StrictModel):
    """Learning-rate schedule over a stage's epochs.

    ``cosine``, ``step``, ``multistep`` and ``onecycle`` are stepped every
    optimizer step (so warm-up and cosine are smooth and step decays land on
    epoch boundaries); ``plateau`` is stepped once per epoch on the monitored
    validation metric. ``warmup_epochs`` (linear from ``warmup_start_factor``)
    applies to cosine, step and multistep.
    """

    name: Literal["none", "cosine", "step", "multistep", "plateau", "onecycle"] = "none"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up length in epochs (may be fractional)")
    warmup_start_factor: float = Field(0.01, gt=0, le=1, description="lr factor at the first warm-up step")
    min_lr_factor: float = Field(0.0, ge=0, le=1, description="cosine: final lr as a fraction of the base lr")
    step_size: int = Field(30, gt=0, description="step: epochs between decays")
    milestones: list[int] = Field(default_factory=list, description="multistep: epochs (within the stage) to decay at")
    gamma: float = Field(0.1, gt=0, le=1, description="step / multistep / plateau: decay factor")
    patience: int = Field(5, ge=0, description="plateau: epochs without improvement before decaying")
    monitor: str | None = Field(None, description="plateau: validation metric to watch (default best_metric)")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction of steps spent increasing the lr")
    div_factor: float = Field(25.0, gt=0, description="onecycle: initial lr = lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="onecycle: final lr = initial lr / final_div_factor")

    @model_validator(mode="after")
    def _milestones_for_multistep(self) -> "SchedulerConfig":
        if self.name == "multistep" and not self.milestones:
            raise ValueError("multistep needs milestones, e.g. milestones: [160, 180]")
        if sorted(self.milestones) != self.milestones or any(m <= 0 for m in self.milestones):
            raise ValueError("milestones must be positive epochs in increasing order")
        return self


class StageConfig(StrictModel):
    """One training phase: how many epochs, which parameter groups train, optional overrides.

    ``train`` is ``all``, ``head``, or a list of the model's named groups
    (``head``, ``backbone``). Groups not trained are frozen: out of the
    optimizer, ``requires_grad=False``, and their batch-norm layers stay in
    eval mode so running statistics do not move. Each stage starts a fresh
    optimizer and scheduler; ``optimizer`` / ``scheduler`` overrides are merged
    over the experiment's own sections, ``lr`` is a shortcut for ``optimizer.lr``.
    """

    epochs: int = Field(gt=0)
    train: Union[Literal["all", "head"], list[str]] = "all"
    lr: float | None = Field(None, gt=0, description="this stage's learning rate (optimizer.lr)")
    optimizer: dict[str, Any] = Field(default_factory=dict, description="keys of optimizer: to change for this stage")
    scheduler: dict[str, Any] = Field(default_factory=dict, description="keys of scheduler: to change for this stage")

    @model_validator(mode="after")
    def _groups_not_empty(self) -> "StageConfig":
        if isinstance(self.train, list) and not self.train:
            raise ValueError("train: name at least one parameter group, or use all")
        return self


class EmaConfig(StrictModel):
    """Exponential moving average of the weights; validation and best.pt use the averaged model."""

    decay: float = Field(0.999, gt=0, lt=1, description="ema = decay * ema + (1 - decay) * weights, every step")


class EarlyStoppingConfig(StrictModel):
    """Stop when a validation metric has not improved by ``min_delta`` for ``patience`` epochs."""

    metric: str | None = Field(None, description="metric to watch, e.g. val_macro_f1 or val_loss (default best_metric)")
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["auto", "max", "min"] = Field("auto", description="auto: min for losses, max otherwise")


#: what a run records about itself in config.yaml besides the experiment; never read as input
RECORDED_KEYS = ("versions", "data_identity")


class Experiment(StrictModel):
    """One experiment: data, model, loss and the training recipe."""

    name: str | None = Field(None, description="run folder name; defaults to the config file's name")
    task: Literal["classification", "segmentation"] = "classification"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossSpec = Field("ce", description="loss spec, e.g. 'focal(gamma=2) + 0.5 * dice'")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    epochs: int = Field(1, gt=0, description="total epochs (the sum of the stages' epochs when stages are given)")
    stages: list[StageConfig] = Field(default_factory=list, description="training phases; empty: one stage, all")
    batch_size: int = Field(32, gt=0)
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision: bf16 autocast, or fp16 + scaler")
    channels_last: bool = Field(False, description="channels-last memory format (faster convolutions on GPUs)")
    ema: EmaConfig | None = Field(None, description="keep and evaluate an EMA of the weights")
    best_metric: str | None = Field(None, description="metric choosing best.pt (default balanced_accuracy / miou)")
    best_mode: Literal["auto", "max", "min"] = Field("auto", description="auto: min for losses, max otherwise")
    early_stopping: EarlyStoppingConfig | None = None
    drw_epoch: int | None = Field(
        None, ge=1, description="deferred re-weighting (DRW, Cao et al. 2019) of any loss that takes class weights: "
        "from this epoch on (1-based; the papers' 200-epoch schedule: 161) the loss is weighted by the "
        "effective-number class weights of drw_beta; null: never")
    drw_beta: float = Field(0.9999, ge=0, lt=1, description="DRW: beta of the effective-number weights "
                            "(1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes")
    nonfinite_loss: Literal["stop", "skip"] = Field("stop", description="stop the run, or skip the step and count it")
    deterministic: bool = Field(False, description="torch deterministic algorithms (slower on GPUs)")
    tracking: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="copies of the per-epoch metrics for TensorBoard / MLflow "
        "(pip install 'lossbench[tracking]')")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<output_dir>/mlflow.db")
    tracking_experiment: str = Field("lossbench", min_length=1, description="MLflow experiment name")
    seed: int = Field(0, ge=0)
    output_dir: Path = Field(Path("runs"), description="parent folder of run folders")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    versions: dict[str, str] | None = Field(None, description="package versions a run recorded; ignored as input")
    data_identity: str | None = Field(
        None, description="hash of the files under data.root a run trained on, as it recorded them; ignored as input")

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, v: str | None) -> str | None:
        """The run folder's name: one path component inside output_dir, never a way out of it."""
        if v is not None and (not v.strip() or v in (".", "..") or any(c in v for c in "/\\\0")):
            raise ValueError("must be a plain folder name (no '/', '\\', NUL, '.' or '..'); "
                             "use output_dir for the parent folder")
        return v

    @model_validator(mode="before")
    @classmethod
    def _epochs_from_stages(cls, raw: Any) -> Any:
        """With stages, ``epochs`` is their sum when absent, and cuts them short when smaller.

        ``--set epochs=1`` on a recipe with stages (a smoke test) runs the
        first epoch of the first stage; more epochs than the stages hold is an
        error.
        """
        if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
            return raw
        stages = [dict(s) if isinstance(s, dict) else s.model_dump() if isinstance(s, BaseModel) else s
                  for s in raw["stages"]]
        try:
            lengths = [int(stage["epochs"]) for stage in stages]
        except (TypeError, KeyError, ValueError):
            return raw
        total, epochs = sum(lengths), raw.get("epochs")
        if epochs is None:
            return {**raw, "epochs": total}
        if not isinstance(epochs, int) or epochs <= 0 or epochs == total:
            return raw
        if epochs > total:
            raise ValueError(f"epochs: {epochs} but the stages add up to {total}; drop epochs or lengthen the stages")
        kept, left = [], epochs
        for stage, length in zip(stages, lengths):
            if left <= 0:
                break
            kept.append({**stage, "epochs": min(length, left)})
            left -= length
        return {**raw, "stages": kept}

    @model_validator(mode="after")
    def _stage_overrides_valid(self) -> "Experiment":
        for i in range(len(self.stages)):
            self.stage_optimizer(i)
            self.stage_scheduler(i)
        return self

    def resolved_stages(self) -> list[StageConfig]:
        """The stages to run: the configured ones, or one stage of ``epochs`` training everything."""
        return list(self.stages) or [StageConfig(epochs=self.epochs)]

    def stage_optimizer(self, index: int) -> OptimizerConfig:
        """Stage ``index``'s optimizer: the experiment's, with the stage's overrides merged in."""
        stages = self.resolved_stages()
        stage = stages[index]
        update = dict(stage.optimizer) | ({"lr": stage.lr} if stage.lr is not None else {})
        return _merged(OptimizerConfig, self.optimizer, update, f"stages.{index}.optimizer")

    def stage_scheduler(self, index: int) -> SchedulerConfig:
        """Stage ``index``'s scheduler: the experiment's, with the stage's overrides merged in."""
        stage = self.resolved_stages()[index]
        return _merged(SchedulerConfig, self.scheduler, stage.scheduler, f"stages.{index}.scheduler")

    #: where the experiment was read from (a config file, "cell NAME" of a sweep file), set by validate_experiment
    _source: str = PrivateAttr("config")

    @property
    def run_dir(self) -> Path:
        return self.output_dir / (self.name or "run")

    def where(self, key: str) -> str:
        """``<config file>: <key>``: how a message names one of this experiment's settings, e.g. ``exp.yaml: loss``."""
        return f"{self._source}: {key}"


def _merged(model: type[StrictModel], base: StrictModel, update: dict[str, Any], where: str) -> Any:
    """``base`` with ``update``'s keys changed, validated; a problem becomes a ValueError naming ``where``."""
    if not update:
        return base
    try:
        return model.model_validate(base.model_dump() | update)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{where}: {problems}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


#: what PyYAML appends to a document that is one plain scalar
DOCUMENT_END = "\n...\n"


def override_text(key: str, value: Any) -> str:
    """``KEY=VALUE`` that :func:`parse_override` reads back as ``value`` (a Python value as a ``--set`` item)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
    return f"{key}={text.removesuffix(DOCUMENT_END).strip()}"


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a raw (unvalidated) config mapping, creating sections as needed."""
    path = dotted.split(".")
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{dotted}: {'.'.join(path[: i + 1])} is not a section, so it has no key {path[i + 1]!r}")
        node = child
    node[path[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``--set a.b=c`` in the raw config mapping (validation happens after)."""
    for text in overrides:
        path, value = parse_override(text)
        try:
            set_key(raw, ".".join(path), value)
        except UserError as exc:
            raise UserError(f"--set {text!r}: {exc}") from None
    return raw


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the config section that ``loc`` points into (for 'valid keys' hints)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def describe_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line naming each bad key and what is wrong with it."""
    model = model or Experiment
    problems = []
    for item in err.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc if not str(p).startswith(("str", "dict[", "list[")))
        if item["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            msg = "unknown key" + (f"; valid keys here: {', '.join(valid)}" if valid else "")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            if item["type"] != "missing" and "input" in item and not isinstance(item["input"], (dict, list)):
                msg += f" (got {item['input']!r})"
        problems.append(f"{key}: {msg}" if key else msg)
    seen = list(dict.fromkeys(problems))
    return f"{source}: " + "; ".join(seen)


def read_documents(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config ({exc.__class__.__name__}: {exc})") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: YAML syntax error: {problem}; fix the file and run again") from None
    if not docs:
        raise UserError(f"{path}: the config is empty; see recipes/quickstart.yaml for an example")
    for doc in docs:
        if not isinstance(doc, dict):
            raise UserError(f"{path}: each YAML document must be a mapping of keys, got {type(doc).__name__}")
    return docs


def validate_experiment(raw: dict[str, Any], source: str) -> Experiment:
    """Validate a raw mapping as an Experiment read from ``source``, errors as one UserError line naming it."""
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source)) from None
    exp._source = source
    return exp


def document_name(doc: dict[str, Any], path: Path, index: int, count: int) -> str:
    """The name of document ``index`` of ``count`` in config file ``path``: its ``name:``, else the file's stem
    (with ``-<index>`` when the file holds several documents). Runs, sweep cells and report options go by it."""
    return doc.get("name") or (path.stem if count == 1 else f"{path.stem}-{index}")


def load_experiments(path: str | Path, overrides: list[str] | None = None) -> list[Experiment]:
    """Every experiment in a config file, with ``--set`` overrides applied to each."""
    path = Path(path)
    docs = read_documents(path)
    experiments = []
    for i, doc in enumerate(docs):
        if "grid" in doc:
            raise UserError(f"{path}: has a grid: of several runs; run it with `lossbench sweep {path}`")
        raw = apply_overrides(doc, list(overrides or []))
        raw["name"] = document_name(raw, path, i, len(docs))
        experiments.append(validate_experiment(raw, str(path)))
    return experiments


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """The single experiment in a config file."""
    experiments = load_experiments(path, overrides)
    if len(experiments) != 1:
        raise UserError(f"{path}: holds {len(experiments)} experiments; this command takes a file with one")
    return experiments[0]


def load_run_config(run_dir: str | Path) -> Experiment:
    """The experiment a run folder recorded in ``config.yaml``, placed where the folder is now.

    ``output_dir`` and ``name`` are the folder's parent and name, so a moved
    run folder continues where it lies.
    """
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    docs = read_documents(config)
    if len(docs) != 1:
        raise UserError(f"{config}: holds {len(docs)} YAML documents, a run's config holds one; it cannot be resumed")
    raw = {**docs[0], "output_dir": str(run_dir.parent), "name": run_dir.name}
    return validate_experiment(raw, str(config))


def read_data_section(spec: str) -> dict[str, Any] | None:
    """The ``data`` mapping of a YAML file given as ``--data``, or None when ``spec`` is not a file."""
    path = Path(spec)
    if "=" in spec and not path.is_file():
        return None
    if not path.is_file():
        raise UserError(f"--data {spec!r}: neither a config file nor KEY=VALUE (e.g. --data root=/data/other)")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: YAML syntax error ({str(exc).splitlines()[0]})") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise UserError(f"{path}: --data takes a file with one experiment or one data section")
    doc = docs[0]
    section = doc.get("data", doc)
    if not isinstance(section, dict):
        raise UserError(f"{path}: its data section is not a mapping")
    return section


def with_data(exp: Experiment, data: Sequence[str] = ()) -> Experiment:
    """``exp`` with its data section replaced by config files and/or changed by ``KEY=VALUE`` items of ``data``.

    ``KEY`` is relative to the data section (``root=/data/other``) or
    written in full (``data.root=/data/other``). Later items win.
    """
    raw = exp.model_dump(mode="json", exclude=set(RECORDED_KEYS))
    for item in data:
        section = read_data_section(item)
        if section is not None:
            raw["data"] = dict(section)
        else:
            key = item if item.startswith("data.") else f"data.{item}"
            apply_overrides(raw, [key])
    try:
        DataConfig.model_validate(raw["data"])
    except ValidationError as err:
        raise UserError(describe_validation_error(err, "--data", DataConfig)) from None
    return Experiment.model_validate(raw)
