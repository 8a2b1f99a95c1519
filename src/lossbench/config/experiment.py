"""The experiment: one config document, validated (data, model, loss and the training recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from lossbench.config.base import StrictModel
from lossbench.config.data import DataConfig
from lossbench.contract import Task
from lossbench.config.training import (
    EarlyStoppingConfig, EmaConfig, LossSpec, ModelConfig, OptimizerConfig, SchedulerConfig, StageConfig,
)


def is_plugin_file(name: str) -> bool:
    """Whether an item of ``plugins:`` is a ``.py`` file (a path) rather than a module name."""
    return name.endswith(".py") or "/" in name or "\\" in name


#: what a run records about itself in config.yaml besides the experiment; never read as input
RECORDED_KEYS = ("versions", "data_identity")


class Experiment(StrictModel):
    """One experiment: data, model, loss and the training recipe."""

    name: str | None = Field(None, description="run folder name; defaults to the config file's name")
    task: Task = Field("classification", description="a class per image, or a class per pixel")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossSpec = Field("ce", description="loss spec, e.g. 'focal(gamma=2) + 0.5 * dice'")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    epochs: int = Field(1, gt=0, description="total epochs (the sum of the stages' epochs when stages are given)")
    stages: list[StageConfig] = Field(default_factory=list, description="training phases; empty: one stage, all")
    batch_size: int = Field(32, gt=0, description="images per optimizer step (per process under torchrun)")
    checkpoint_every: int = Field(
        1, ge=1, description="write last.pt (and a new best.pt) every N epochs and after the last one; a kill "
        "loses at most N - 1 epochs, which a resume trains again bit for bit")
    eval_every: int = Field(
        1, ge=1, description="evaluate every N epochs and at each stage's last epoch (best.pt, early stopping and "
        "a plateau schedule see those epochs only: their patience counts evaluations); training is the same "
        "whatever N, so the last epoch's figures are too")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision: bf16 autocast, or fp16 + scaler")
    channels_last: bool = Field(False, description="channels-last memory format (faster convolutions on GPUs)")
    ema: EmaConfig | None = Field(None, description="keep and evaluate an EMA of the weights")
    best_metric: str | None = Field(None, description="metric choosing best.pt (default balanced_accuracy / miou)")
    best_mode: Literal["auto", "max", "min"] = Field("auto", description="auto: min for losses and ece, max otherwise")
    early_stopping: EarlyStoppingConfig | None = Field(None, description="stop early on a validation metric; none: never")
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
    seed: int = Field(0, ge=0, description="seeds Python, NumPy, torch, the split and the loader: a CPU run repeats exactly")
    output_dir: Path = Field(Path("runs"), description="parent folder of run folders")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    plugins: list[str] = Field(
        default_factory=list, description="your own code to import before anything is built: module names, or "
        ".py files relative to the config file, registering losses, models or sources (README: plugins)")
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

