"""Name -> factory registries, filled by decorators and queried by name.

One registry per kind (models, losses, sources). An unknown name is a user
error that lists the names that exist.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lossbench.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories of one kind (e.g. ``"loss"``)."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or (f"{kind}es" if kind.endswith(("s", "x", "sh", "ch")) else f"{kind}s")
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that files the decorated factory under ``name``."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str, where: str | None = None) -> T:
        """The factory called ``name``; a UserError listing the known names otherwise, starting with ``where``
        (``exp.yaml: model.name``) when given."""
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: not a name at all (a list, a mapping)
            close = difflib.get_close_matches(name, self._items, n=1) if isinstance(name, str) else []
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise UserError(
                (f"{where}: " if where else "")
                + f"unknown {self.kind} {name!r}{hint} known {self.plural}: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
