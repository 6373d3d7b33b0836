"""
The client's connection lifecycle as one table: every state, every event,
and what each pair does.

:class:`txheartbeat.HeartbeatClientFactory` feeds events into
:data:`TRANSITIONS`; a pair that is not in the table is a bug that shows up
as an error in the log (and in the completeness test), never as a hang.
This module is pure data: the actions it names are methods of the factory.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, Tuple


class State(str, Enum):
    """Where the client is.  The value is what ``factory.state`` compares equal to."""

    IDLE = "idle"  #: built, never started
    PREPARING = "preparing"  #: ``prepare(attempt)`` is running
    CONNECTING = "connecting"  #: resolving the name and connecting TCP
    HANDSHAKING = "handshaking"  #: TCP is up; proxy CONNECT, TLS and the opening handshake
    OPEN = "open"  #: the WebSocket is open
    DISCONNECTED = "disconnected"  #: an attempt or connection just ended; hooks run, then retry or give up
    WAITING = "waiting"  #: the retry timer is pending
    CLOSING = "closing"  #: ``close()`` was called; waiting for the connection to end
    CLOSED = "closed"  #: closed for good (final until ``connect()`` again)
    GAVEUP = "gaveup"  #: retries exhausted or a fatal error (final until ``connect()`` again)

    def __str__(self) -> str:
        return self.value


class Event(str, Enum):
    """What can happen to the client."""

    START = "start"  #: ``connect()``
    PREPARED = "prepared"  #: ``prepare`` returned the URL and headers (at once when there is none)
    ATTEMPT = "attempt"  #: a connector started (``startedConnecting``)
    TCP_UP = "tcp up"  #: the transport connected (``buildProtocol``)
    CONNECT_FAILED = "connect failed"  #: the attempt failed before a transport existed
    OPENED = "opened"  #: the opening handshake completed
    LOST = "lost"  #: the connection ended (any reason, opened or not)
    DEAD_PEER = "dead peer"  #: the heartbeat declared the peer dead (the connection is being aborted)
    CLOSE = "close"  #: ``close()``
    CANCEL = "cancel"  #: the Deferred from ``connect()`` was cancelled
    OPEN_TIMEOUT = "open timeout"  #: ``openTimeout`` ran out
    RETRY = "retry"  #: decided after a failure: wait, then try again
    GIVE_UP = "give up"  #: decided after a failure: stop
    TIMER = "timer"  #: the retry delay ran out


S, E = State, Event
FINAL = frozenset({S.CLOSED, S.GAVEUP})
#: States in which the attempt's ``openTimeout`` timer runs.
ATTEMPTING = frozenset({S.PREPARING, S.CONNECTING, S.HANDSHAKING})

#: ``(state, event) -> (next state, factory method)``.  The state is set
#: before the method runs, so a hook called from it sees the new state.
#: ``"_ignore"`` marks events that may arrive late and mean nothing there;
#: ``"_refuse"`` marks user calls that are errors in that state (they raise).
TRANSITIONS: Dict[Tuple[State, Event], Tuple[State, str]] = {
    # idle
    (S.IDLE, E.START): (S.PREPARING, "_prepare"),
    (S.IDLE, E.ATTEMPT): (S.CONNECTING, "_adoptConnector"),  # reactor.connectTCP(host, port, factory)
    (S.IDLE, E.CLOSE): (S.CLOSED, "_finish"),
    (S.IDLE, E.CANCEL): (S.CLOSED, "_finish"),
    # preparing
    (S.PREPARING, E.PREPARED): (S.CONNECTING, "_dial"),
    (S.PREPARING, E.CONNECT_FAILED): (S.DISCONNECTED, "_attemptFailed"),
    (S.PREPARING, E.OPEN_TIMEOUT): (S.PREPARING, "_openTimedOut"),
    (S.PREPARING, E.CLOSE): (S.CLOSED, "_cancelAttemptAndFinish"),
    (S.PREPARING, E.CANCEL): (S.CLOSED, "_cancelAttemptAndFinish"),
    (S.PREPARING, E.START): (S.PREPARING, "_refuse"),
    (S.PREPARING, E.ATTEMPT): (S.PREPARING, "_refuseConnector"),
    # connecting
    (S.CONNECTING, E.ATTEMPT): (S.CONNECTING, "_attemptStarted"),
    (S.CONNECTING, E.TCP_UP): (S.HANDSHAKING, "_tcpUp"),
    (S.CONNECTING, E.CONNECT_FAILED): (S.DISCONNECTED, "_attemptFailed"),
    (S.CONNECTING, E.OPEN_TIMEOUT): (S.CONNECTING, "_openTimedOut"),
    (S.CONNECTING, E.CLOSE): (S.CLOSED, "_cancelAttemptAndFinish"),
    (S.CONNECTING, E.CANCEL): (S.CLOSED, "_cancelAttemptAndFinish"),
    (S.CONNECTING, E.START): (S.CONNECTING, "_refuse"),
    # handshaking
    (S.HANDSHAKING, E.OPENED): (S.OPEN, "_opened"),
    (S.HANDSHAKING, E.CONNECT_FAILED): (S.HANDSHAKING, "_ignore"),  # an endpoint's Deferred failing after TCP was up
    (S.HANDSHAKING, E.LOST): (S.DISCONNECTED, "_handshakeLost"),
    (S.HANDSHAKING, E.OPEN_TIMEOUT): (S.HANDSHAKING, "_openTimedOut"),
    (S.HANDSHAKING, E.CLOSE): (S.CLOSING, "_abortHandshake"),
    (S.HANDSHAKING, E.CANCEL): (S.CLOSING, "_abortHandshake"),
    (S.HANDSHAKING, E.ATTEMPT): (S.HANDSHAKING, "_refuseConnector"),
    (S.HANDSHAKING, E.START): (S.HANDSHAKING, "_refuse"),
    # open
    (S.OPEN, E.LOST): (S.DISCONNECTED, "_connectionLost"),
    (S.OPEN, E.DEAD_PEER): (S.OPEN, "_deadPeer"),
    (S.OPEN, E.CLOSE): (S.CLOSING, "_closeOpen"),
    (S.OPEN, E.CANCEL): (S.CLOSING, "_closeOpen"),
    (S.OPEN, E.ATTEMPT): (S.OPEN, "_refuseConnector"),
    (S.OPEN, E.START): (S.OPEN, "_refuse"),
    # disconnected (the hooks of a loss are running; a close() there is final at once)
    (S.DISCONNECTED, E.RETRY): (S.WAITING, "_scheduleRetry"),
    (S.DISCONNECTED, E.GIVE_UP): (S.GAVEUP, "_giveUp"),
    (S.DISCONNECTED, E.CLOSE): (S.CLOSED, "_finish"),
    (S.DISCONNECTED, E.CANCEL): (S.CLOSED, "_finish"),
    (S.DISCONNECTED, E.ATTEMPT): (S.DISCONNECTED, "_refuseConnector"),
    (S.DISCONNECTED, E.START): (S.DISCONNECTED, "_refuse"),
    # waiting
    (S.WAITING, E.TIMER): (S.PREPARING, "_prepare"),
    # connector.connect() by hand on the factory's own connector: try now (-> connecting); another is refused
    (S.WAITING, E.ATTEMPT): (S.WAITING, "_connectorWhileWaiting"),
    (S.WAITING, E.CLOSE): (S.CLOSED, "_finish"),
    (S.WAITING, E.CANCEL): (S.CLOSED, "_finish"),
    (S.WAITING, E.START): (S.WAITING, "_refuse"),
    # closing
    (S.CLOSING, E.LOST): (S.CLOSED, "_closedLost"),
    (S.CLOSING, E.CLOSE): (S.CLOSING, "_ignore"),
    (S.CLOSING, E.CANCEL): (S.CLOSING, "_ignore"),
    (S.CLOSING, E.ATTEMPT): (S.CLOSING, "_refuseConnector"),
    (S.CLOSING, E.START): (S.CLOSING, "_refuse"),
    # closed and gave up: final, until connect() (or connector.connect()) starts over
    (S.CLOSED, E.START): (S.PREPARING, "_restart"),
    (S.CLOSED, E.ATTEMPT): (S.CONNECTING, "_restartWithConnector"),
    (S.CLOSED, E.CLOSE): (S.CLOSED, "_ignore"),
    (S.CLOSED, E.CANCEL): (S.CLOSED, "_ignore"),
    (S.GAVEUP, E.START): (S.PREPARING, "_restart"),
    (S.GAVEUP, E.ATTEMPT): (S.CONNECTING, "_restartWithConnector"),
    (S.GAVEUP, E.CLOSE): (S.GAVEUP, "_ignore"),
    (S.GAVEUP, E.CANCEL): (S.GAVEUP, "_ignore"),
}

#: Pairs that cannot happen: the factory filters stale notifications (from a
#: connector or protocol that is no longer current) before they get here, and
#: each timer is cancelled when its state is left.  One arriving anyway is
#: logged as a bug and changes nothing.
IMPOSSIBLE = frozenset((state, event) for state in State for event in Event if (state, event) not in TRANSITIONS)
