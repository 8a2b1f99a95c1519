"""Names and paths inside a sweep folder, defined once.

A cell's run folder, a tuning study, a tuned cell and a trial are all named by
:func:`cell_name`: the document, ``--``, a readable slug of the grid values and a
short digest of them (so two value sets never share a folder). The files a sweep
folder holds besides its run folders are named here too.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

LOCK_NAME = ".sweep.lock"
STOP_NAME = ".sweep.stop"  # exists while an interrupted sweep stops the cells it started
RESULTS_CSV = "results.csv"
SWEEP_JSON = "sweep.json"
CONFIGS_DIR = "configs"  # each cell's config, as the sweep ran it
LOGS_DIR = "logs"
REPORT_FILES = "report_files"
TUNE_DB = "tune.db"  # Optuna's SQLite storage, one study per configuration
TUNE_DIR = "tune"  # trial run folders, their stop files, and studies.json (what the report reads)
STUDIES_JSON = "studies.json"


def digest(obj: Any) -> str:
    """Six hex digits that tell value sets apart (a JSON dump's SHA-1, keys sorted)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]


def file_slug(text: str) -> str:
    """``text`` with every run of characters other than letters, digits, ``.``, ``=`` and ``-`` as one ``_``."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text)


def values_slug(values: dict[str, Any]) -> str:
    """Grid values as a folder-safe slug (``loss-ce__seed-0``, at most 80 characters) and their digest."""
    text = "__".join(f"{k.split('.')[-1]}-{v}" for k, v in values.items()) or "base"
    return f"{file_slug(text).strip('_')[:80]}-{digest(values)}"


def cell_name(document: str, values: dict[str, Any], *suffixes: str) -> str:
    """The run folder name of a document's cell with these grid values; ``suffixes`` (a study's fingerprint)
    follow, each after ``--``."""
    return "--".join([document, values_slug(values), *suffixes])


def trial_name(study: str, number: int) -> str:
    """The run folder (and cell) name of trial ``number`` of a study."""
    return f"{study}--t{number:03d}"


def tuned_document(document: str) -> str:
    """The document whose cells re-run a tuned document's best values over its seeds."""
    return f"{document}-tuned"


def config_path(sweep_dir: Path, cell: str) -> Path:
    """Where the sweep writes the config a cell trains from."""
    return Path(sweep_dir) / CONFIGS_DIR / f"{cell}.yaml"


def log_path(sweep_dir: Path, cell: str) -> Path:
    return Path(sweep_dir) / LOGS_DIR / f"{cell}.log"


def tune_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / TUNE_DIR


def studies_path(sweep_dir: Path) -> Path:
    """``tune/studies.json``: what tuning recorded, what the report's tuning section reads."""
    return tune_dir(sweep_dir) / STUDIES_JSON
