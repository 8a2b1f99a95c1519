"""Name -> factory registries, filled by decorators and queried by name.

One registry per kind (models, losses, sources). An unknown name is a user
error that lists the names that exist. Every entry remembers its origin:
``built-in``, or the plugin whose import registered it (set by
:func:`registering_from` while lossbench.plugins imports the plugin), so a
name registered twice is one line naming both origins.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from lossbench.errors import UserError

T = TypeVar("T")

BUILT_IN = "built-in"
#: the origin given to entries registered now (a stack: the innermost plugin being imported last)
_origins: list[str] = [BUILT_IN]


@contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Entries registered inside the block come from ``origin`` (e.g. ``plugin file /abs/my_loss.py``)."""
    _origins.append(origin)
    try:
        yield
    finally:
        _origins.pop()


class Registry(Generic[T]):
    """Maps names to factories of one kind (e.g. ``"loss"``)."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or (f"{kind}es" if kind.endswith(("s", "x", "sh", "ch")) else f"{kind}s")
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str, module: str | None = None) -> Callable[[T], T]:
        """Decorator that files the decorated factory under ``name``.

        ``module``: the module defining it; outside a plugin being loaded, code from outside lossbench
        (a user's own module, imported by hand) has the origin ``module <name>``.
        """

        def add(item: T) -> T:
            origin = _origins[-1]
            if origin == BUILT_IN and module and module.split(".")[0] != "lossbench":
                origin = f"module {module}"
            if name in self._items:
                raise UserError(f"{self.kind} {name!r} from {origin} clashes with the {self.kind} {name!r} "
                                f"from {self._origin[name]}; rename one of them")
            self._items[name] = item
            self._origin[name] = origin
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

    def discard(self, origin: str) -> list[str]:
        """Remove every entry registered from ``origin`` (a plugin that failed its checks); their names."""
        names = [name for name, where in self._origin.items() if where == origin and name in self._items]
        for name in names:
            del self._items[name], self._origin[name]
        return names

    def origin(self, name: str) -> str:
        """Where entry ``name`` was registered: ``built-in`` or the plugin that registered it."""
        self.get(name)
        return self._origin[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
