"""
A hypothesis machine over the Redis store's scripts in a real redis-server:
two owners take one session over from each other (a paused owner wakes up
and keeps writing with its old epoch; a killed one just stops), anyone
pushes to it, an owner numbers the pushes or ends it; against a model, a
stale owner's writes are refused and change nothing, a claim replays
exactly what the client lacks or is refused (never a partial replay), the
bounds hold for kept and pushed messages together, and nothing of an
ended session can be written again.
"""

from typing import Dict, List, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.redisserver import Client, RedisServer, ReplyError, missing
from txheartbeat.stores import _redisscripts as scripts

META, OUT, IN, CHANNEL = "txhb:{m}:meta", "txhb:{m}:out", "txhb:{m}:in", "txhb:events"
TTL, MAX_MESSAGES, MAX_BYTES = 60000, 4, 12
OWNERS = st.sampled_from(["a", "b"])

server: Optional[RedisServer] = None


def call(client: Client, script: str, *args: object) -> object:
    """Run a script; an error reply comes back as its code (FENCED, GAP...)."""
    try:
        return client.call("EVAL", script, 3, META, OUT, IN, *args)
    except ReplyError as error:
        return str(error).split()[0]


class TakeoverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert server is not None
        self.client = Client(server.port)
        self.client.call("FLUSHALL")
        assert call(self.client, scripts.CREATE, TTL) == 1
        # the model: the session's epoch, the oldest kept number, what was sent, what is durable as received
        self.epoch, self.base, self.received = 1, 0, 0
        self.sent: List[bytes] = []
        self.inbox: List[bytes] = []  # pushed from anywhere, not numbered yet
        self.seen = 0
        self.ended = False
        self.owners: Dict[str, int] = {"a": 1, "b": 0}  # the epoch each owner believes it holds

    def teardown(self) -> None:
        self.client.close()

    def _refusedAsStale(self, owner: str, answer: object) -> bool:
        """Whether the session is gone (EXPIRED) or ``owner`` no longer holds it (FENCED): then that is the answer."""
        if self.ended:
            assert answer == "EXPIRED"
        elif self.owners[owner] != self.epoch:
            assert answer == "FENCED"
        else:
            return False
        return True

    def _kept(self) -> List[bytes]:
        return self.sent[self.base :]

    def _fits(self, extra: List[bytes], message: bytes) -> bool:
        kept = self._kept() + extra
        return len(kept) < MAX_MESSAGES and sum(len(m) - 1 for m in kept) + len(message) - 1 <= MAX_BYTES

    @rule(size=st.integers(0, 5))
    def push(self, size: int) -> None:
        """Anyone sends to the session (no epoch): kept in the inbox within the bounds, refused (FULL) past them."""
        message = b"b" + b"p" * size
        answer = call(self.client, scripts.PUSH, MAX_MESSAGES, MAX_BYTES, message, CHANNEL, "m")
        if self.ended:
            assert answer == "EXPIRED"
        elif not self._fits(self.inbox, message):
            assert answer == "FULL"
        else:
            self.inbox.append(message)
            assert answer == len(self.inbox)

    @rule(owner=OWNERS)
    def take(self, owner: str) -> None:
        """An owner numbers what was pushed, oldest first, as much as fits; a stale one is refused."""
        answer = call(self.client, scripts.TAKE, TTL, self.owners[owner], MAX_MESSAGES, MAX_BYTES)
        if self._refusedAsStale(owner, answer):
            return
        first, moved = len(self.sent), []
        while self.inbox and self._fits(moved, b"") and self._fitsBytes(moved, self.inbox[0]):
            moved.append(self.inbox.pop(0))
        self.sent.extend(moved)
        assert answer == [first, len(self.inbox), *moved]

    def _fitsBytes(self, extra: List[bytes], message: bytes) -> bool:
        return sum(len(m) - 1 for m in self._kept() + extra) + len(message) - 1 <= MAX_BYTES

    @rule(owner=OWNERS)
    def end(self, owner: str) -> None:
        """The owner ends the session (closed or expired): every later script finds it gone; a stale owner cannot."""
        answer = call(self.client, scripts.END, self.owners[owner])
        if self.ended:
            assert answer == "EXPIRED"
        elif self.owners[owner] != self.epoch:
            assert answer == "FENCED"
        else:
            assert answer == 1
            self.ended = True

    @rule(owner=OWNERS, size=st.integers(0, 5))
    def append(self, owner: str, size: int) -> None:
        """An owner numbers a message: only the current owner may, within the bounds."""
        message = b"t" + b"x" * size  # empty messages too: nothing may count them as -0 bytes
        answer = call(self.client, scripts.APPEND, TTL, self.owners[owner], MAX_MESSAGES, MAX_BYTES, message)
        if self._refusedAsStale(owner, answer):
            return
        kept = self.sent[self.base :]
        if len(kept) >= MAX_MESSAGES or sum(len(m) - 1 for m in kept) + len(message) - 1 > MAX_BYTES:
            assert answer == "FULL"
            return
        assert answer == len(self.sent)
        self.sent.append(message)  # (stored with its kind byte)

    @rule(owner=OWNERS, data=st.data())
    def ack(self, owner: str, data: st.DataObject) -> None:
        """An owner records the client's ack and its own received count: refused unless it is the current owner."""
        acked = data.draw(st.integers(0, len(self.sent) + 1))
        received = data.draw(st.integers(max(self.received - 1, 0), self.received + 2))
        seen = data.draw(st.integers(max(received - 1, 0), received + 3))
        answer = call(self.client, scripts.RECORD, TTL, self.owners[owner], acked, received, seen)
        if self.ended:
            assert answer == "EXPIRED"
        elif self.owners[owner] != self.epoch:
            assert answer == "FENCED"
        elif acked > len(self.sent) or received < self.received or seen < received:
            assert answer == "GAP"
        else:
            assert answer == 1
            self.base = max(self.base, acked)
            self.received = received
            self.seen = max(self.seen, seen)

    @rule(owner=OWNERS, data=st.data())
    def takeover(self, owner: str, data: st.DataObject) -> None:
        """A client resumes on ``owner`` saying how many it received: replayed exactly the rest, or refused."""
        clientReceived = data.draw(st.integers(max(self.base - 1, 0), len(self.sent) + 1))
        answer = call(self.client, scripts.CLAIM, TTL, clientReceived, CHANNEL, "m")
        if self.ended:
            assert answer == "EXPIRED"
            return
        if clientReceived < self.base or clientReceived > len(self.sent):
            assert answer == "GAP"  # never a partial replay; nothing changed
            return
        self.epoch += 1
        self.owners[owner] = self.epoch
        self.base = clientReceived
        assert answer == [self.epoch, self.received, self.seen, len(self.inbox), *self.sent[self.base :]]

    @invariant()
    def storeMatchesTheModel(self) -> None:
        """What Redis keeps is exactly the model's session (nothing at all once ended)."""
        if self.ended:
            assert self.client.call("EXISTS", META, OUT, IN) == 0
            return
        assert self.client.call("LRANGE", IN, 0, -1) == self.inbox
        assert self.client.call("HGET", META, "seen") == b"%d" % self.seen
        meta = self.client.call("HMGET", META, "epoch", "base", "sent", "bytes", "received")
        kept = self.sent[self.base :]
        assert meta == [
            b"%d" % n for n in (self.epoch, self.base, len(self.sent), sum(len(m) - 1 for m in kept), self.received)
        ]
        assert self.client.call("LRANGE", OUT, 0, -1) == kept


def test_takeovers(redis: RedisServer) -> None:
    """Two owners, takeovers and stale writers: Redis always holds the model's session; stale writes are refused."""
    global server
    server = redis
    try:
        TakeoverMachine.TestCase.settings = settings(
            max_examples=60,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        TakeoverMachine.TestCase().runTest()
    finally:
        server = None


if missing() is not None:  # pragma: no cover
    pytestmark = pytest.mark.skip(reason=str(missing()))
