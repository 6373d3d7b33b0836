"""
Retry delays: pure functions of the attempt number, random source injectable.
"""

from __future__ import annotations

import random as _random
from typing import Callable

from ._heartbeat import checkInterval

RetryPolicy = Callable[[int], float]


def exponentialBackoff(
    *,
    initialDelay: float = 1.0,
    maxDelay: float = 30.0,
    factor: float = 2.0,
    jitter: float = 0.1,
    random: Callable[[], float] = _random.random,
) -> RetryPolicy:
    """
    Return a policy ``attempt -> seconds`` for attempts numbered from 1.

    The base delay is ``initialDelay * factor ** (attempt - 1)``, capped at
    ``maxDelay``.  With ``jitter > 0``:

    * the first retry is spread uniformly over ``[0, initialDelay]``: it is
      the one that every client of a crashed server takes at the same
      instant, so it gets the widest spread (python-websockets does the same);
    * later retries are spread uniformly over ``±jitter`` of their base delay.

    No delay is ever above ``maxDelay``.  ``jitter=0`` gives the exact
    sequence ``initialDelay, initialDelay * factor, …``.

    :param jitter: fraction in ``[0, 1)``.
    :param random: a callable returning floats in ``[0, 1)``, for tests.
    """
    checkInterval("initialDelay", initialDelay, allowNone=False)
    checkInterval("maxDelay", maxDelay, allowNone=False)
    if maxDelay < initialDelay:
        raise ValueError(f"maxDelay ({maxDelay!r}) must not be below initialDelay ({initialDelay!r})")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
        raise ValueError(f"factor must be a number >= 1, got {factor!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
        raise ValueError(f"jitter must be a fraction in [0, 1), got {jitter!r}")

    def policy(attempt: int) -> float:
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt!r}")
        try:
            base = min(maxDelay, initialDelay * factor ** (attempt - 1))
        except OverflowError:
            base = maxDelay
        if not jitter:
            return base
        if attempt == 1:
            return base * random()
        return min(maxDelay, base * (1.0 + jitter * (2.0 * random() - 1.0)))

    return policy
