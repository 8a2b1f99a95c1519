"""What ``lossbench list`` shows: every registered loss, model or source with its origin, as plain records."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lossbench.data import SOURCES
from lossbench.losses import LOSSES, loss_parameters, loss_summary
from lossbench.models import MODELS

KINDS = ("losses", "models", "sources")


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def catalog(kind: str) -> list[dict[str, Any]]:
    """One record per entry of the registry ``kind`` (losses, models or sources), sorted by name: its name,
    origin (``built-in`` or the plugin that registered it), one-line description and what it declares."""
    if kind == "losses":
        return [{"name": name, "origin": LOSSES.origin(name), "class": cls.__name__,
                 "parameters": loss_parameters(cls), "capabilities": asdict(cls.capabilities),
                 "description": loss_summary(cls)} for name, cls in LOSSES.items()]
    if kind == "models":
        return [{"name": name, "origin": MODELS.origin(name), "task": entry.task,
                 "description": _first_line(entry.description)} for name, entry in MODELS.items()]
    return [{"name": name, "origin": SOURCES.origin(name), "tasks": list(entry.tasks),
             "description": _first_line(entry.description)} for name, entry in SOURCES.items()]


def catalog_lines(kind: str) -> list[str]:
    """The records of :func:`catalog` as the text ``lossbench list KIND`` prints (origin shown for plugins)."""
    lines = []
    for item in catalog(kind):
        origin = "" if item["origin"] == "built-in" else f"  [{item['origin']}]"
        if kind == "losses":
            params = ", ".join(f"{k}={v!r}" for k, v in item["parameters"].items())
            lines += [f"{item['name']}({params}){origin}", f"    {item['description']}"]
        elif kind == "models":
            lines.append(f"{item['name']:<16} {item['task']:<15} {item['description']}{origin}")
        else:
            lines.append(f"{item['name']:<20} {', '.join(item['tasks']):<30} {item['description']}{origin}")
    return lines
