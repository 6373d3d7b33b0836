"""
Session stores other than the in-process default (networked stores).

Nothing here is imported by the rest of txheartbeat: the arrows point from
here to ``txheartbeat._resume``, never back.
"""

from .redis import RedisSessionStore

__all__ = ["RedisSessionStore"]
