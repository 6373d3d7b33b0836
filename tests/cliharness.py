"""Drive txheartbeat._cli._connect on a MemoryReactor, with stdin replaced by a captured LineReceiver."""

import io

from twisted.internet import stdio

from txheartbeat import _cli
from txheartbeat.testing import MemoryReactor

URL = "ws://127.0.0.1:9000/"


class Run:
    def __init__(self, monkeypatch, *extra):
        self.reactor = MemoryReactor()
        self.out, self.err = io.StringIO(), io.StringIO()
        monkeypatch.setattr("sys.stdout", self.out)
        monkeypatch.setattr("sys.stderr", self.err)
        self.lines = None

        def fake(proto, reactor=None):
            self.lines = proto
            return proto

        monkeypatch.setattr(stdio, "StandardIO", fake)
        args = _cli.buildParser().parse_args(["connect", URL, *extra])
        self.result = []
        self.d = _cli._connect(self.reactor, args)
        self.d.addBoth(self.result.append)
        self.handler = self.lines  # (set below)

    def feed(self, *lines):
        for line in lines:
            self.lines.lineReceived(line.encode())

    def eof(self):
        self.lines.connectionLost(None)

    @property
    def exitCode(self):
        if not self.result:
            return None
        r = self.result[0]
        if r is None:
            return 0
        return r.value.code if hasattr(r, "value") and isinstance(r.value, SystemExit) else r
