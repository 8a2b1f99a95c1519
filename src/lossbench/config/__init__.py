"""The experiment config: pydantic models, YAML loading and ``--set`` overrides.

A config file holds one experiment, or several as YAML documents separated by
``---`` (the quickstart runs a classification and a segmentation experiment).
Every mistake in it is reported as one line naming the file and the key.

The package's modules, each with one job: ``base`` (StrictModel), ``data``
(the ``data:`` section), ``training`` (model, optimizer, scheduler, stages,
EMA, early stopping), ``experiment`` (the whole document), ``overrides``
(``--set``), ``limits`` (how far a config may expand) and ``files``
(reading and validating config files and run folders).
"""

from lossbench.config.base import StrictModel
from lossbench.config.data import (
    AugmentConfig, CsvOptions, DataConfig, NormalizeStats, ScenesOptions, SegFolderOptions,
)
from lossbench.config.experiment import RECORDED_KEYS, Experiment, is_plugin_file
from lossbench.config.files import (
    describe_validation_error, document_name, load_experiment, load_experiments, load_run_config,
    read_data_section, read_documents, validate_experiment, with_data,
)
from lossbench.config.overrides import DOCUMENT_END, apply_overrides, override_text, parse_override, set_key
from lossbench.config.training import (
    EarlyStoppingConfig, EmaConfig, LossSpec, ModelConfig, OptimizerConfig, SchedulerConfig, StageConfig,
)

__all__ = [
    "AugmentConfig", "CsvOptions", "DOCUMENT_END", "DataConfig", "EarlyStoppingConfig", "EmaConfig",
    "Experiment", "LossSpec", "ModelConfig", "NormalizeStats", "OptimizerConfig", "RECORDED_KEYS",
    "ScenesOptions", "SchedulerConfig", "SegFolderOptions", "StageConfig", "StrictModel", "apply_overrides",
    "describe_validation_error", "document_name", "is_plugin_file", "load_experiment", "load_experiments",
    "load_run_config",
    "override_text", "parse_override", "read_data_section", "read_documents", "set_key",
    "validate_experiment", "with_data",
]
