"""
Redis addresses (txheartbeat/stores/_redisurl.py): parsed early with a
message that says what to change, and never shown with their credentials.
"""

import pytest

from txheartbeat.stores._redisurl import RedisAddress, parseRedisURL


def test_defaults() -> None:
    """A bare host means port 6379, database 0, no login."""
    assert parseRedisURL("redis://example.test") == RedisAddress("example.test", 6379, 0, None, None)


def test_everything() -> None:
    """User, password (percent-escapes decoded), host, port and database are all read."""
    address = parseRedisURL("redis://app:s3cr%40t@10.0.0.5:6380/3")
    assert address == RedisAddress("10.0.0.5", 6380, 3, "app", "s3cr@t")


def test_passwordOnly() -> None:
    """redis://:PASSWORD@HOST (the requirepass form) has a password and no user."""
    address = parseRedisURL("redis://:pw@h/1")
    assert (address.username, address.password, address.db) == (None, "pw", 1)


def test_ipv6() -> None:
    """A bracketed IPv6 host is read, and shown bracketed again."""
    address = parseRedisURL("redis://[::1]:7000/2")
    assert (address.host, address.port, address.redacted) == ("::1", 7000, "redis://[::1]:7000/2")


def test_redactedAndReprHideCredentials() -> None:
    """What logs show (redacted, repr, str) never holds the user or password."""
    address = parseRedisURL("redis://app:hunter2@h:1/0")
    for shown in (address.redacted, repr(address), str(address), f"{address}"):
        assert "hunter2" not in shown and "app" not in shown
        assert "redis://***@h:1/0" in shown
    assert parseRedisURL("redis://h:1/0").redacted == "redis://h:1/0"


@pytest.mark.parametrize(
    "url, says",
    [
        ("http://u:hunter2@h/0", "write redis://HOST:PORT/DB"),
        ("rediss://u:hunter2@h/0", "rediss:// is not supported"),
        ("127.0.0.1:6379", "write redis://HOST:PORT/DB"),
        ("redis://:hunter2@h:99999/0", "port is not a number"),
        ("redis://:hunter2@h:port/0", "port is not a number"),
        ("redis://:hunter2@h:0/0", "port is not a number"),
        ("redis://:hunter2@h/x", "a database is a number"),
        ("redis://:hunter2@h/-1", "a database is a number"),
        ("redis:///0", "has no host"),
        ("redis://:hunter2@h/0?db=1", "?query"),
    ],
)
def test_mistakesSayWhatToChange(url: str, says: str) -> None:
    """Each malformed address is refused with what to write instead, and without the password."""
    with pytest.raises(ValueError) as raised:
        parseRedisURL(url)
    assert says in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_notAString() -> None:
    """A non-string (a bytes URL, None) is refused saying what a Redis address looks like."""
    with pytest.raises(ValueError, match="redis://127.0.0.1:6379/0"):
        parseRedisURL(b"redis://h/0")  # type: ignore[arg-type]
