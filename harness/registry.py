"""Things of one kind by name (metrics, ...): register, look up, list; an unknown name is a one-line error.

A registry iterates over its names in registration order, so `", ".join(registry)` lists them and a loop over it
computes things in a fixed order (stored rows and report lines do not depend on the order a file names them in).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named items of one kind. `kind` and `where` word the error for an unknown name: "unknown metric 'f2'
    (metrics): known are acc, ..." names the kind and the field or flag the name came from."""

    def __init__(self, kind: str, where: str):
        self.kind = kind
        self.where = where
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add `item` under `name`; returns it. A name registered twice is a programming error."""
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Drop `name` (a test's own registration, once the test is done)."""
        del self._items[name]

    def get(self, name: str, source: str = "") -> T:
        """The item called `name`; else a HarnessError naming `source` (a file, a flag) and the known names."""
        if name not in self._items:
            raise HarnessError(self.unknown(name, source))
        return self._items[name]

    def unknown(self, name: str, source: str = "") -> str:
        """The one-line message for an unknown name."""
        prefix = f"{source}: " if source else ""
        return f"{prefix}unknown {self.kind} '{name}' ({self.where}): known are {', '.join(self._items)}"

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
