"""The training recipe's sections: ``model:``, ``optimizer:``, ``scheduler:``, ``stages:``, ``ema:``,
``early_stopping:`` and the loss spec's type."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, model_validator

from lossbench.config.base import StrictModel


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

    name: Literal["sgd", "adam", "adamw"] = Field("adam", description="the optimizer")
    lr: float = Field(1e-3, gt=0, description="learning rate of the head (and of everything, with factor 1)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam / AdamW betas")
    weight_decay: float = Field(0.0, ge=0, description="weight decay; biases and norm weights skipped unless decay_norm_and_bias")
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

    name: Literal["none", "cosine", "step", "multistep", "plateau", "onecycle"] = Field(
        "none", description="the schedule; none keeps lr constant"
    )
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

    epochs: int = Field(gt=0, description="epochs of this stage")
    train: Union[Literal["all", "head"], list[str]] = Field(
        "all", description="parameter groups that train (all, head, or a list such as [head, backbone]); the rest is frozen"
    )
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
    patience: int = Field(10, ge=1, description="evaluations without improvement before stopping (one an epoch, "
                          "or one every eval_every epochs)")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    mode: Literal["auto", "max", "min"] = Field("auto", description="auto: min for losses and ece, max otherwise")

