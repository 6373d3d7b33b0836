"""Tests for the in-memory doubles in txheartbeat.testing: simulated TLS and the synchronous name resolver."""

from typing import Any, List, Tuple

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import (
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from txheartbeat import HeartbeatClientFactory
from txheartbeat.testing import MemoryReactor, RecordingHandler


def finish(reactor: MemoryReactor, handler: RecordingHandler) -> None:
    handler.close()
    reactor.advance(10)
    assert handler.factory.state == "closed"
    assert reactor.getDelayedCalls() == []


# TLS --------------------------------------------------------------------------


def test_wss_opens_over_connectSSL(reactor, handler):
    """A wss:// client connects through connectSSL and opens once the attempt is accepted, on an ISSLTransport."""
    reactor.hosts["example.com"] = ["192.0.2.10"]  # for a client that resolves before connecting
    factory = HeartbeatClientFactory("wss://example.com/", handler, reactor=reactor, jitter=0)
    opened: List[Any] = []
    factory.connect().addCallback(opened.append)
    [(_, port, _, contextFactory, _, _)] = reactor.sslClients
    assert (port, contextFactory) == (443, factory.contextFactory)
    assert reactor.tcpClients == []
    link = reactor.accept()
    assert handler.isOpen
    assert handler.names() == ["onOpen"]
    assert opened == [handler]
    assert ISSLTransport.providedBy(link.clientTransport)
    assert ISSLTransport.providedBy(link.serverTransport)
    assert link.clientTransport.getPeerCertificate() is None
    finish(reactor, handler)


def test_ws_transport_is_not_ssl(reactor, handler, make):
    """A ws:// client's transport does not provide ISSLTransport."""
    make()
    link = reactor.accept()
    assert handler.isOpen
    assert not ISSLTransport.providedBy(link.clientTransport)
    assert not ISSLTransport.providedBy(link.serverTransport)
    finish(reactor, handler)


def test_startTLS_records_context_factory_and_turns_secure(reactor, handler, make):
    """startTLS on a plain transport records the context factory and makes the transport provide ISSLTransport."""
    make()
    link = reactor.accept()
    contextFactory = object()
    link.clientTransport.startTLS(contextFactory)
    assert link.clientTransport.tlsContextFactory is contextFactory
    assert ISSLTransport.providedBy(link.clientTransport)
    assert not ISSLTransport.providedBy(link.serverTransport)
    finish(reactor, handler)


# Name resolution --------------------------------------------------------------


@implementer(IResolutionReceiver)
class Receiver:
    """An IResolutionReceiver that records the calls it gets."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, Any]] = []

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        self.events.append(("began", resolution.name))

    def addressResolved(self, address: Any) -> None:
        self.events.append(("address", address))

    def resolutionComplete(self) -> None:
        self.events.append(("complete", None))


def resolve(reactor: MemoryReactor, name: str, **kwargs: Any) -> List[Tuple[str, Any]]:
    receiver = Receiver()
    resolution = reactor.nameResolver.resolveHostName(receiver, name, 9000, **kwargs)
    assert resolution.name == name
    return receiver.events


@pytest.mark.parametrize(
    "literal, addressType", [("192.0.2.7", IPv4Address), ("::1", IPv6Address), ("2001:db8::7", IPv6Address)]
)
def test_ip_literal_resolves_to_itself(reactor, literal, addressType):
    """An IP literal resolves synchronously to exactly one address of its own family, with the port."""
    assert resolve(reactor, literal) == [
        ("began", literal),
        ("address", addressType("TCP", literal, 9000)),
        ("complete", None),
    ]


def test_localhost_resolves_to_ipv4_loopback(reactor):
    """'localhost' resolves to 127.0.0.1 by default."""
    assert resolve(reactor, "localhost")[1:] == [("address", IPv4Address("TCP", "127.0.0.1", 9000)), ("complete", None)]


def test_hosts_name_resolves_to_its_addresses_in_order(reactor):
    """A name in reactor.hosts resolves to its listed addresses in order, each with its own family."""
    reactor.hosts["v6only.test"] = ["::1"]
    reactor.hosts["dual.test"] = ["::1", "10.0.0.1"]
    assert resolve(reactor, "v6only.test")[1:] == [("address", IPv6Address("TCP", "::1", 9000)), ("complete", None)]
    assert resolve(reactor, "dual.test")[1:] == [
        ("address", IPv6Address("TCP", "::1", 9000)),
        ("address", IPv4Address("TCP", "10.0.0.1", 9000)),
        ("complete", None),
    ]


def test_addressTypes_filters_addresses(reactor):
    """addressTypes keeps only the requested families: [IPv4Address] drops an IPv6-only name's address."""
    reactor.hosts["dual.test"] = ["::1", "10.0.0.1"]
    reactor.hosts["v6only.test"] = ["::1"]
    assert resolve(reactor, "v6only.test", addressTypes=[IPv4Address]) == [("began", "v6only.test"), ("complete", None)]
    assert resolve(reactor, "dual.test", addressTypes=[IPv6Address])[1:] == [
        ("address", IPv6Address("TCP", "::1", 9000)),
        ("complete", None),
    ]


def test_udp_semantics_give_udp_addresses(reactor):
    """transportSemantics='UDP' gives addresses of type UDP."""
    assert resolve(reactor, "::1", transportSemantics="UDP")[1] == ("address", IPv6Address("UDP", "::1", 9000))


def test_unlisted_name_resolves_to_loopback_and_empty_entry_to_nothing(reactor):
    """A name not in reactor.hosts resolves to 127.0.0.1 (as Twisted's MemoryReactor); one mapped to [] to nothing."""
    assert [e[0] for e in resolve(reactor, "anything.test")] == ["began", "address", "complete"]
    reactor.hosts["nowhere.test"] = []
    assert resolve(reactor, "nowhere.test") == [("began", "nowhere.test"), ("complete", None)]


def test_hosts_must_list_ip_literals(reactor):
    """A reactor.hosts entry that is not an IP literal is a ValueError naming the entry."""
    reactor.hosts["alias.test"] = ["localhost"]
    with pytest.raises(ValueError, match="alias.test"):
        resolve(reactor, "alias.test")


def test_installNameResolver_returns_previous_resolver(reactor):
    """The reactor provides IReactorPluggableNameResolver: installNameResolver swaps in a resolver and returns the old one."""
    assert IReactorPluggableNameResolver.providedBy(reactor)
    default = reactor.nameResolver
    replacement = object()
    assert reactor.installNameResolver(replacement) is default
    assert reactor.nameResolver is replacement


def test_hostname_endpoint_connects_to_resolved_ipv6(reactor):
    """HostnameEndpoint resolves through reactor.hosts and connects to the IPv6 address; cancelling leaves no timer."""
    reactor.hosts = {"v6only.test": ["::1"]}
    d = HostnameEndpoint(reactor, "v6only.test", 9000).connect(Factory.forProtocol(Protocol))
    reactor.advance(0)
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("::1", 9000)]
    assert reactor.pending[0].getDestination() == IPv6Address("TCP", "::1", 9000)
    failures: List[Any] = []
    d.addErrback(failures.append)
    d.cancel()
    assert failures[0].check(ConnectingCancelledError)
    assert reactor.pending == []
    assert reactor.getDelayedCalls() == []


def test_hostname_endpoint_unknown_name_fails_with_dns_error(reactor):
    """HostnameEndpoint to a name the reactor cannot resolve fails with DNSLookupError and tries nothing."""
    failures: List[Any] = []
    reactor.hosts["nowhere.test"] = []
    HostnameEndpoint(reactor, "nowhere.test", 9000).connect(Factory.forProtocol(Protocol)).addErrback(failures.append)
    reactor.advance(0)
    assert failures[0].check(DNSLookupError)
    assert reactor.tcpClients == []
    assert reactor.getDelayedCalls() == []


def test_ipv6_link_has_ipv6_addresses(reactor, handler):
    """A client connecting to [::1] opens and sees IPv6 addresses at both ends of its transport."""
    factory = HeartbeatClientFactory("ws://[::1]:9000/", handler, reactor=reactor, jitter=0)
    factory.connect()
    assert reactor.pending[0].getDestination() == IPv6Address("TCP", "::1", 9000)
    link = reactor.accept()
    assert handler.isOpen
    assert link.clientTransport.getPeer() == IPv6Address("TCP", "::1", 9000)
    assert isinstance(link.clientTransport.getHost(), IPv6Address)
    assert link.serverTransport.getPeer() == link.clientTransport.getHost()
    finish(reactor, handler)
