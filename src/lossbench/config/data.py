"""The ``data:`` section: where images come from, how they are split, resized, augmented and normalised."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lossbench.config.base import StrictModel


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
    imbalance_order: Literal["fixed", "permuted"] = Field(
        "fixed", description="which classes are rare: fixed (class 0 the most frequent, the last class the rarest) "
        "or permuted (each seed draws which class gets which long-tail frequency; recorded in split.json)")
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

