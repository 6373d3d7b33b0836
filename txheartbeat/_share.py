"""
Per-connection memory: values most instances share live on the class.

Autobahn copies about thirty option values from the factory into every
protocol instance and keeps the opening handshake (raw request and response,
the parsed headers) for the life of the connection; each of our clients
also carries a factory holding all of Autobahn's options.  With 10,000
connections that is most of their memory.  :class:`SharedValues` keeps one
copy of the common values as class attributes and only what differs on the
instance; :func:`compact` drops from an instance what Autobahn never reads
after the handshake and rebuilds its ``__dict__`` at the size it now needs
(a dict never shrinks by itself).

Everything here relies on attribute names of Autobahn's classes; the names
are listed in one place each, and ``tests/test_scale.py`` fails loudly if an
Autobahn release stops using one of them.
"""

from __future__ import annotations

from types import FunctionType
from typing import Any, Dict, FrozenSet, Iterable, Iterator, Mapping, Tuple

_MISSING = object()


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` can stand in for ``b``: the same object, or equal values of the same type."""
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


class SharedValues:
    """
    Attributes ``names`` of ``owner``'s instances: the first source seen
    gives their class-level values; an instance holds its own only where it
    differs (or where a subclass of ``owner`` defines the name itself: that
    definition stays in charge, as Autobahn's per-class options do).
    """

    def __init__(self, owner: type, names: Iterable[str]) -> None:
        self.owner = owner
        self.names: Tuple[str, ...] = tuple(names)
        self.ready = False
        self.values: Dict[str, Any] = {}  # the class-level values, as captured
        self._ours: Dict[type, Tuple[str, ...]] = {}  # class -> the names whose value comes from owner

    def capture(self, source: Any) -> None:
        """Set the class-level values from ``source`` (once)."""
        if self.ready:
            return
        for name in self.names:
            value = self.values[name] = getattr(source, name)
            # A plain function (Autobahn's default perMessageCompressionAccept is a
            # lambda) must not become a method of the class.
            setattr(self.owner, name, staticmethod(value) if isinstance(value, FunctionType) else value)
        self.ready = True

    def ours(self, cls: type) -> Tuple[str, ...]:
        """The names that ``cls`` takes from ``owner`` (not redefined by a class in between)."""
        found = self._ours.get(cls)
        if found is None:
            names = []
            for name in self.names:
                for klass in cls.__mro__:
                    if name in klass.__dict__:
                        if klass is self.owner:
                            names.append(name)
                        break
            found = self._ours[cls] = tuple(names)
        return found

    def differing(self, source: Any, cls: type) -> Iterator[Tuple[str, Any]]:
        """``(name, value)`` for each of ``source``'s values that an instance of ``cls`` must hold itself."""
        values = self.values
        for name in self.ours(cls):
            value = getattr(source, name)
            if not same(value, values[name]):
                yield name, value

    def shared(self, obj: Any) -> FrozenSet[str]:
        """The names ``obj`` holds at the class-level value (its own copy can go)."""
        if not self.ready:
            return frozenset()
        values, mine = self.values, obj.__dict__
        return frozenset(name for name in self.ours(type(obj)) if same(mine.get(name, _MISSING), values[name]))


def compact(obj: Any, drop: Iterable[str] = (), defaults: Mapping[str, Any] = {}) -> None:
    """
    Rebuild ``obj.__dict__`` without ``drop`` and without the entries equal to
    ``defaults`` (which must be class attributes of ``obj`` with those values).
    """
    gone = frozenset(drop)
    obj.__dict__ = {
        name: value
        for name, value in obj.__dict__.items()
        if name not in gone and not (name in defaults and value is defaults[name])
    }
