"""
``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` addresses: parsed early, with
a message that says what to change, and shown in logs without credentials.
"""

from typing import NamedTuple, Optional
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379


class RedisAddress(NamedTuple):
    """Where a Redis server is, and how to log in (``password`` is never shown by :attr:`redacted`)."""

    host: str
    port: int
    db: int
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def redacted(self) -> str:
        """The address for logs and errors: ``redis://HOST:PORT/DB``, credentials as ``***``."""
        login = "***@" if self.username is not None or self.password is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{login}{host}:{self.port}/{self.db}"

    def __repr__(self) -> str:  # never the password (repr ends up in logs and tracebacks)
        return f"<RedisAddress {self.redacted}>"


def parseRedisURL(url: str) -> RedisAddress:
    """
    Parse ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (port 6379 and
    database 0 when left out; percent-escapes in the credentials decoded).

    :raises ValueError: saying what to change; the message never repeats
        the credentials.
    """
    if not isinstance(url, str):
        raise ValueError(f"a Redis address is a string like redis://127.0.0.1:6379/0, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
        if port == 0:
            raise ValueError
    except ValueError:
        raise ValueError("the Redis address's port is not a number 1-65535: write redis://HOST:PORT/DB") from None
    # Shown without anything before the last "@": a password may hold "#", "?" or "/", where
    # urlsplit ends the netloc, so the netloc is no guide to where the credentials end.
    shown = url
    if "@" in url:
        scheme, sep, _ = url.partition("://")
        shown = (scheme + sep if sep else "") + "***@" + url.rpartition("@")[2]
    if parts.scheme != "redis":
        what = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(
            f"the Redis address {shown!r} has {what}: write redis://HOST:PORT/DB (rediss:// is not supported)"
        )
    if not parts.hostname:
        raise ValueError(f"the Redis address {shown!r} has no host: write redis://HOST:PORT/DB")
    if parts.query or parts.fragment:
        raise ValueError(f"the Redis address {shown!r} has a ?query or #fragment: write redis://HOST:PORT/DB")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and path.isascii()):
        raise ValueError(
            f"the Redis address {shown!r} names database {path!r}: a database is a number (redis://HOST:PORT/0)"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return RedisAddress(parts.hostname, port if port is not None else DEFAULT_PORT, int(path or 0), username, password)
