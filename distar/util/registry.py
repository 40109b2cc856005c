"""A tiny name -> object registry: interchangeable parts are chosen by config, not `if` chains.

A registry of a config field's implementations is made with that field's ``choices`` (the
config's own tuple: the config validates without importing torch): it refuses a name the config
does not allow, and :meth:`Registry.complete`, called where the registry is filled, refuses to
import while a choice has no implementation. The two cannot drift apart without every import
failing."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names fail with the list of known ones. ``choices``: the
    config field's allowed values, the only names it takes (and, once :meth:`complete`, has)."""

    def __init__(self, kind: str, choices: Sequence[str] | None = None) -> None:
        self.kind = kind
        self.choices = tuple(choices) if choices is not None else None
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            if self.choices is not None and name not in self.choices:
                raise KeyError(
                    f"{self.kind} {name!r} is not a config choice ({', '.join(self.choices)}): "
                    "add it to the config's choices first"
                )
            self._items[name] = item
            return item

        return add

    def add(self, name: str, item: T) -> T:
        return self.register(name)(item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def complete(self) -> None:
        """Every config choice has its implementation (call it where the registry is filled)."""
        missing = sorted(set(self.choices or ()) - set(self._items))
        if missing:
            raise KeyError(f"{self.kind}: config choice {', '.join(missing)} has no implementation")

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
