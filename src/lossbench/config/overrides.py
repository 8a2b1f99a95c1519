"""``--set a.b=value`` overrides of a raw (not yet validated) config mapping."""

from __future__ import annotations

from typing import Any

from lossbench.config import yaml_io
from lossbench.errors import UserError


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.01")
    try:
        value = yaml_io.load(raw) if raw.strip() else None
    except yaml_io.YAMLError:
        value = raw
    return key.strip().split("."), value


#: what PyYAML appends to a document that is one plain scalar
DOCUMENT_END = "\n...\n"


def override_text(key: str, value: Any) -> str:
    """``KEY=VALUE`` that :func:`parse_override` reads back as ``value`` (a Python value as a ``--set`` item)."""
    text = yaml_io.dump(value, default_flow_style=True, width=1_000_000)
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

