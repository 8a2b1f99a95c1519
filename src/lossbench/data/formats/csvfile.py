"""``csv``: image ids (or relative paths) and integer labels in CSV files, images under a root.

One-file form: a CSV with a header naming ``data.csv.id_column`` and
``data.csv.label_column`` (Kaggle's ``trainLabels.csv``: ``image,level``, with
``extension: .jpeg``). Two-file form: a header-less file of ids and a
header-less file of labels, row for row (``train`` + ``train_labels``). No
header is ever guessed, so every row is used. Each row is checked when the
dataset is opened: a label that is not an integer, negative or not below the
number of classes, a path that leaves the image folder, a missing file and
an image listed twice are each reported with the file and line. Without
``data.num_classes`` or ``data.csv.class_names`` the classes are 0 to the
largest training label, and one of them without a training row is an error
naming the line of that label.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from lossbench.config import CsvOptions, DataConfig
from lossbench.data.files import Decoder, FileItem, open_files, report_bad
from lossbench.data.formats.common import channels_of, require_root
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError

_INT = re.compile(r"[+-]?\d+")


def _read(path: Path, delimiter: str, key: str) -> list[list[str]]:
    if path.is_dir():
        raise UserError(f"data.csv.{key}: {path} is a folder, not a CSV file; name the CSV file in it "
                        "(relative to data.root)")
    if not path.is_file():
        raise UserError(f"data.csv.{key}: {path} does not exist; fix the file name (relative to data.root)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read as CSV ({exc}); save it as UTF-8 text") from None


def _rows(root: Path, opts: CsvOptions, split: str) -> list[tuple[str, str, str]]:
    """``(where, id, label text)`` for every data row of a split, ``where`` naming file and line."""
    ids_name = getattr(opts, split)
    labels_name = getattr(opts, f"{split}_labels")
    ids_path = root / ids_name
    rows = _read(ids_path, opts.delimiter, split)
    numbered = [(n, r) for n, r in enumerate(rows, 1) if any(c.strip() for c in r)]
    if labels_name is None:
        if not numbered:
            raise UserError(f"{ids_path}: empty file; expected a header with columns "
                            f"{opts.id_column!r} and {opts.label_column!r}, then one row per image")
        header = [c.strip() for c in numbered[0][1]]
        for col, key in ((opts.id_column, "id_column"), (opts.label_column, "label_column")):
            if col not in header:
                raise UserError(f"{ids_path}: no column {col!r} (columns: {', '.join(header)}); "
                                f"set data.csv.{key} to the right column")
        i, j = header.index(opts.id_column), header.index(opts.label_column)
        body = numbered[1:]
        if not body:
            raise UserError(f"{ids_path}: no data rows after the header; add one row per image")
        out = []
        for n, r in body:
            if len(r) <= max(i, j):
                raise UserError(f"{ids_path} line {n}: {len(r)} fields, expected {len(header)}; fix the row")
            out.append((f"{ids_path} line {n}", r[i].strip(), r[j].strip()))
        return out
    labels_path = root / labels_name
    labels = [(n, r) for n, r in enumerate(_read(labels_path, opts.delimiter, f"{split}_labels"), 1)
              if any(c.strip() for c in r)]
    if not numbered:
        raise UserError(f"{ids_path}: no rows; expected one image id per line")
    if len(numbered) != len(labels):
        raise UserError(f"{ids_path} has {len(numbered)} rows but {labels_path} has {len(labels)}; "
                        f"the two-file form needs one label per id, without headers")
    return [(f"{ids_path} line {n} / {labels_path} line {m}", r[0].strip(), lab[0].strip())
            for (n, r), (m, lab) in zip(numbered, labels)]


def _items(rows: list[tuple[str, str, str]], images: Path, opts: CsvOptions, num_classes: int | None
           ) -> tuple[list[FileItem], list[tuple[int, str]]]:
    items, bad = [], []
    base = images.resolve()
    seen: dict[str, str] = {}
    for idx, (where, ident, text) in enumerate(rows):
        if not _INT.fullmatch(text):
            hint = ("; the two-file form has no header row, remove it"
                    if idx == 0 and opts.train_labels is not None else "")
            bad.append((idx, f"{where}: label {text!r} is not an integer; labels are class indices 0..K-1{hint}"))
            continue
        label = int(text)
        if label < 0:
            bad.append((idx, f"{where}: label {label} is negative; labels are class indices 0..K-1"))
            continue
        if num_classes is not None and label >= num_classes:
            bad.append((idx, f"{where}: label {label} is not below the {num_classes} classes; "
                             f"fix the label or set data.num_classes / data.csv.class_names"))
            continue
        rel = ident
        if opts.extension and not rel.lower().endswith(opts.extension.lower()):
            rel += opts.extension
        if not rel:
            bad.append((idx, f"{where}: empty image id; fill it in or remove the row"))
            continue
        if "\0" in rel:
            bad.append((idx, f"{where}: image id {ident!r} contains a NUL byte; fix the row"))
            continue
        path = images / rel
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            bad.append((idx, f"{where}: path {ident!r} cannot be resolved ({exc}); fix the file or remove the row"))
            continue
        if os.path.isabs(rel) or not resolved.is_relative_to(base):
            bad.append((idx, f"{where}: path {ident!r} leaves the image folder {images}; "
                             f"use ids relative to data.csv.images"))
            continue
        if not path.is_file():
            bad.append((idx, f"{where}: image {path} does not exist; fix the id (data.csv.images, "
                             f"data.csv.extension) or remove the row"))
            continue
        key = str(resolved)
        if key in seen:
            first = seen[key]
            bad.append((idx, f"{where}: image {ident!r} is listed again (first at {first}); "
                             "remove the duplicate row"))
            continue
        seen[key] = where
        items.append(FileItem(path, Path(rel).as_posix(), label=label))
    return items, bad


def _inferred_class_count(rows: list[tuple[str, str, str]]) -> int:
    """Classes 0..the largest training label; UserError naming that label's line when a class below it has no row.

    A mistyped label (7 in a 0-4 file) would otherwise make a larger model with
    classes no image belongs to.
    """
    first: dict[int, str] = {}
    for where, _, text in rows:
        if _INT.fullmatch(text) and int(text) >= 0:
            first.setdefault(int(text), where)
    if not first:
        return 1
    top = max(first)
    empty = [k for k in range(top) if k not in first]
    if empty:
        listed = ", ".join(map(str, empty))
        raise UserError(f"{first[top]}: label {top} makes {top + 1} classes, but class{'es' * (len(empty) > 1)} "
                        f"{listed} {'have' if len(empty) > 1 else 'has'} no training image; fix the label, or "
                        f"declare the classes (data.num_classes or data.csv.class_names) if {listed} "
                        f"{'are' if len(empty) > 1 else 'is'} really absent")
    return top + 1


@register_source("csv", tasks=("classification",), shares_cache=True)
def csv_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """CSV of image ids / paths and integer labels (one file with a header, or header-less ids + labels files)."""
    root = require_root(cfg)
    opts = cfg.csv
    images = root / opts.images
    if not images.is_dir():
        raise UserError(f"data.csv.images: {images} is not a folder; set it relative to data.root")
    num_classes = len(opts.class_names) if opts.class_names else cfg.num_classes
    if opts.class_names and cfg.num_classes and cfg.num_classes != len(opts.class_names):
        raise UserError(f"data.num_classes is {cfg.num_classes} but data.csv.class_names has "
                        f"{len(opts.class_names)}; make them agree")
    decoder = Decoder(cfg.image_size, channels_of(cfg))
    sets = {}
    for split in ("train", "val", "test"):
        if split != "train" and getattr(opts, split) is None:
            continue
        rows = _rows(root, opts, split)
        if split == "train" and num_classes is None:
            num_classes = _inferred_class_count(rows)
        items, bad = _items(rows, images, opts, num_classes)
        skipped = report_bad(bad, cfg.skip_bad, str(root / getattr(opts, split)))
        sets[split] = open_files(items, decoder, cfg, str(root / getattr(opts, split)), f"csv-{split}",
                                 skipped=skipped)
    names = list(opts.class_names) if opts.class_names else [str(k) for k in range(num_classes)]
    return Splits(sets["train"], sets.get("val"), names, test=sets.get("test"), named_classes=bool(opts.class_names))
