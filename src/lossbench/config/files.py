"""Config files: reading YAML documents, validating them as experiments (errors as one line naming the
file and key), a run folder's recorded config, and ``--data`` replacements."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lossbench.config import yaml_io
from lossbench.config.data import DataConfig
from lossbench.config.experiment import RECORDED_KEYS, Experiment, is_plugin_file
from lossbench.config.limits import check_config_size, check_yaml_nesting
from lossbench.config.overrides import apply_overrides
from lossbench.errors import UserError


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
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read it as UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
                        f"{exc.start}); "
                        "save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.__class__.__name__}: {exc})") from None
    check_yaml_nesting(text, str(path))
    try:
        docs = [d for d in yaml_io.load_all(text) if d is not None]
    except yaml_io.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: YAML syntax error: {problem}; fix the file and run again") from None
    except RecursionError:
        raise UserError(f"{path}: nested far too deeply to read; a config is a few levels deep") from None
    if not docs:
        raise UserError(f"{path}: the config is empty; see recipes/quickstart.yaml for an example")
    for doc in docs:
        if not isinstance(doc, dict):
            raise UserError(f"{path}: each YAML document must be a mapping of keys, got {type(doc).__name__}")
        check_config_size(doc, str(path))
        _plugin_files_made_absolute(doc, path.parent)
    return docs


def _plugin_files_made_absolute(doc: dict[str, Any], folder: Path) -> None:
    """A document's ``plugins:`` files, relative to its config file's folder, as absolute paths (a sweep's cells
    read copies of the config from elsewhere)."""
    plugins = doc.get("plugins")
    if isinstance(plugins, list):
        doc["plugins"] = [str((folder / p).resolve()) if isinstance(p, str) and is_plugin_file(p) else p
                          for p in plugins]


def validate_experiment(raw: dict[str, Any], source: str) -> Experiment:
    """Validate a raw mapping as an Experiment read from ``source``, errors as one UserError line naming it."""
    check_config_size(raw, source)
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
    docs = read_documents(path)  # a file that is not UTF-8 YAML, or expands too far, is one line naming it
    if len(docs) != 1:
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
