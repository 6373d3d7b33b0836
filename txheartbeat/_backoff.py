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
    ``maxDelay``; it is then spread uniformly over ``±jitter`` of itself and
    capped at ``maxDelay`` again, so the result is never above ``maxDelay``
    and never below ``(1 - jitter) * initialDelay``.

    :param jitter: fraction in ``[0, 1)``; ``0`` gives the exact sequence.
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
        spread = 1.0 + jitter * (2.0 * random() - 1.0)
        return min(maxDelay, base * spread)

    return policy
