"""YAML in and out through libyaml's C parser and emitter when PyYAML was built with it (the wheels are): a cell's
config is read and written several times per run, and the pure-Python classes take 5-10x as long. Same safe
subset, same values and text; the pure-Python classes when libyaml is missing."""

from __future__ import annotations

from typing import Any, Iterator

import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
YAMLError = yaml.YAMLError


def load(text: str) -> Any:
    """The one YAML document in ``text`` (safe types only)."""
    return yaml.load(text, Loader=Loader)


def load_all(text: str) -> Iterator[Any]:
    """Each YAML document in ``text`` (safe types only), as they are read."""
    return yaml.load_all(text, Loader=Loader)


def events(text: str) -> Iterator[yaml.Event]:
    """The parser's events of ``text``, streamed (nothing is built into Python values)."""
    return yaml.parse(text, Loader=Loader)


def dump(obj: Any, **options: Any) -> str:
    """``obj`` (safe types only) as YAML text; ``options`` as for ``yaml.safe_dump``."""
    return yaml.dump(obj, Dumper=Dumper, **options)


def dump_all(docs: list[Any], **options: Any) -> str:
    """Each of ``docs`` as a YAML document of one text."""
    return yaml.dump_all(docs, Dumper=Dumper, **options)
