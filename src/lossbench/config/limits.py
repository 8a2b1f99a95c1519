"""Bounds on what a config may expand to, checked before anything walks it.

A YAML file of a few hundred bytes can stand for 10^9 values (anchors and
aliases repeating a list of aliases...), and a Python mapping can share its
parts the same way; expanding one hangs whatever reads it. A config that is
too big or too deep is refused in one line, in the time it takes to count
its distinct parts once.
"""

from __future__ import annotations

from typing import Any, Iterator

import yaml

from lossbench.config import yaml_io
from lossbench.errors import UserError

#: the most values (mappings, lists and scalars, aliases counted as what they repeat) one config document may hold
MAX_VALUES = 100_000
#: the deepest a config document may nest mappings and lists
MAX_NESTING = 32


def check_yaml_nesting(text: str, source: str) -> None:
    """Refuse YAML ``text`` nesting deeper than :data:`MAX_NESTING` before it is built into Python values (that
    recursion takes seconds, then fails); a syntax error is left for the loader to report. libyaml's parser (fast)
    reads the text first; where it fails (libyaml stops at its own depth limit before streaming the levels), the
    pure-Python one streams the events up to the first level too deep."""
    try:
        _refuse_deep_events(yaml_io.events(text), source)
    except yaml_io.YAMLError:
        try:
            _refuse_deep_events(yaml.parse(text, Loader=yaml.SafeLoader), source)
        except yaml.YAMLError:
            return


def _refuse_deep_events(events: Iterator[yaml.Event], source: str) -> None:
    depth = 0
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                line = f":{event.start_mark.line + 1}" if event.start_mark is not None else ""
                raise UserError(f"{source}{line}: nested more than {MAX_NESTING} levels deep; a config is a few "
                                "levels deep, write it out plainly")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def check_config_size(doc: Any, source: str) -> None:
    """Refuse ``doc`` (read from ``source``) when it expands to more than :data:`MAX_VALUES` values or nests more
    than :data:`MAX_NESTING` levels; the line names the top-level key that does."""
    memo: dict[int, int] = {}
    items = doc.items() if isinstance(doc, dict) else [("", doc)]
    total = 1
    for key, value in items:
        where = f"{source}: {key}" if key != "" else source
        total += _expanded_size(value, 1, memo, where)
        if total > MAX_VALUES:
            raise _too_big(where)


def _expanded_size(value: Any, depth: int, memo: dict[int, int], where: str) -> int:
    """How many values ``value`` stands for with every alias expanded; each distinct container is counted once."""
    if not isinstance(value, (dict, list, tuple)):
        return 1
    if depth > MAX_NESTING:
        raise UserError(f"{where}: nested more than {MAX_NESTING} levels deep (or refers to itself); a config is a few "
                        "levels deep, write it out plainly")
    if id(value) not in memo:
        total = 1
        for item in value.values() if isinstance(value, dict) else value:
            total += _expanded_size(item, depth + 1, memo, where)
            if total > MAX_VALUES:
                raise _too_big(where)
        memo[id(value)] = total
    return memo[id(value)]


def _too_big(where: str) -> UserError:
    return UserError(f"{where}: expands to more than {MAX_VALUES} values (YAML anchors and aliases repeated over and "
                     "over?); a config is far smaller, write it out without such repetition")
