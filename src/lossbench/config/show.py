"""A config as lossbench reads it: every document resolved with its defaults (``lossbench config show``), and
the JSON Schema of a config file (``lossbench config schema``) for editors that complete and check YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lossbench.config import yaml_io
from lossbench.config.experiment import RECORDED_KEYS, Experiment
from lossbench.config.files import document_name, read_documents, validate_experiment
from lossbench.config.overrides import apply_overrides
from lossbench.errors import UserError

#: the keys of a sweep document that are not part of the experiment (lossbench.experiments reads them)
SWEEP_KEYS = {
    "grid": "sweep: config keys (or zipped keys \"a, b\") mapped to lists of values; the cells are their product",
    "report": "sweep: report options, e.g. {baseline: {loss: ce}, metric: balanced_accuracy, epoch: best}",
    "tune": "sweep: an Optuna study per configuration before the seeds run (README: Tuning)",
}


def resolved_documents(path: str | Path, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Every document of config file ``path`` after ``--set`` overrides, validated and with every default
    filled in; a sweep document's ``grid:``, ``report:`` and ``tune:`` are kept as written, after the rest."""
    path = Path(path)
    docs = read_documents(path)
    resolved = []
    for i, doc in enumerate(docs):
        raw = apply_overrides(doc, list(overrides or []))
        sweep = {key: raw.pop(key) for key in SWEEP_KEYS if key in raw}
        raw["name"] = document_name(raw, path, i, len(docs))
        exp = validate_experiment(raw, str(path))
        resolved.append({**exp.model_dump(mode="json", exclude=set(RECORDED_KEYS)), **sweep})
    return resolved


def resolved_text(path: str | Path, overrides: list[str] | None = None) -> str:
    """:func:`resolved_documents` as YAML, documents separated by ``---``."""
    return yaml_io.dump_all(resolved_documents(path, overrides), sort_keys=False)


def config_schema() -> dict[str, Any]:
    """The JSON Schema of one config document: the experiment's pydantic models, plus a sweep's keys."""
    schema = Experiment.model_json_schema()
    for key in RECORDED_KEYS:
        schema["properties"].pop(key, None)
    for key, description in SWEEP_KEYS.items():
        schema["properties"][key] = {"type": "object", "description": description}
    schema["title"] = "lossbench config"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text() -> str:
    """:func:`config_schema` as indented JSON."""
    return json.dumps(config_schema(), indent=2) + "\n"


def write_schema(path: str | Path) -> Path:
    """Write :func:`schema_text` to ``path``; one line naming it when it cannot be written."""
    path = Path(path)
    try:
        path.write_text(schema_text(), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot write the schema ({exc.strerror or exc}); choose another --out") from None
    return path
