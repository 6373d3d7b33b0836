"""
Checks of what users pass to the factories, made before anything else so
that a mistake is reported with what to change (not as an Autobahn error).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, List, Mapping, Set, Tuple


def checkURL(url: Any, allowNone: bool = False) -> None:
    """
    Raise ``TypeError`` unless ``url`` is a ``str`` (or ``None`` where
    ``allowNone``), saying what a URL looks like.
    """
    if isinstance(url, str) or (allowNone and url is None):
        return
    none = " or None" if allowNone else ""
    raise TypeError(f"the URL must be a str{none} such as 'ws://127.0.0.1:9000/', not {type(url).__name__}")


@functools.cache
def _names(
    sources: Tuple[Callable[..., Any], ...], extra: Tuple[str, ...], owned: Tuple[str, ...]
) -> Tuple[Set[str], List[str]]:
    """The keyword names ``sources`` take plus ``extra``; and those worth suggesting (not ``owned``), sorted."""
    names = set(extra)
    for source in sources:
        for parameter in inspect.signature(source).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
    names.discard("self")
    return names, sorted(names.difference(owned))


def checkOptions(
    owner: str,
    options: Mapping[str, Any],
    sources: Tuple[Callable[..., Any], ...],
    extra: Tuple[str, ...] = (),
    owned: Tuple[str, ...] = (),
) -> None:
    """
    Raise ``ValueError`` for a keyword in ``options`` that none of the
    callables in ``sources`` takes and ``extra`` does not list, naming it and
    its closest matches among the known names (``owned`` ones, which
    txheartbeat manages itself, are known but never suggested).  Values are
    never quoted: they may be secrets.

    :param owner: the class name said in the message.
    """
    known, candidates = _names(sources, extra, owned)
    unknown = sorted(name for name in options if name not in known)
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, candidates, n=3)
        hint = f" (did you mean {_either(close)}?)" if close else ""
        parts.append(f"{name}{hint}")
    what = "option" if len(unknown) == 1 else "options"
    raise ValueError(
        f"unknown {what} for {owner}: {', '.join(parts)}. "
        "The options are txheartbeat's (see the README's options tables) and Autobahn's protocol options"
    )


def _either(names: List[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
