"""_options.py and GaveUp."""

import copy
import inspect
import pickle

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from txheartbeat import (
    GaveUp,
    HeartbeatClientFactory,
    HeartbeatClientService,
    HeartbeatHandler,
    HeartbeatServerFactory,
    connect,
)
from txheartbeat.testing import MemoryReactor

URL = "ws://127.0.0.1:9000/"
OWNED_CLIENT = {
    "autoPingInterval",
    "autoPingTimeout",
    "autoPingSize",
    "autoPingRestartOnAnyTraffic",
    "openHandshakeTimeout",
    "closeHandshakeTimeout",
    "serverConnectionDropTimeout",
}


def autobahnOptions(cls):
    probe = cls()
    for name in inspect.signature(cls.setProtocolOptions).parameters:
        if name == "self":
            continue
        yield name, getattr(probe, name, None)


@pytest.mark.parametrize("name, value", list(autobahnOptions(WebSocketClientFactory)))
def test_every_autobahn_client_option_is_known(name, value):
    """Every Autobahn client protocol option is accepted (or refused with its own 'use X' message)."""
    try:
        HeartbeatClientFactory(URL, HeartbeatHandler(), reactor=MemoryReactor(), **{name: value})
    except ValueError as e:
        assert "unknown option" not in str(e), str(e)
        assert name in OWNED_CLIENT, str(e)
    except Exception as e:  # a bad value is Autobahn's business, not an unknown option
        assert "unknown option" not in str(e)


@pytest.mark.parametrize("name, value", list(autobahnOptions(WebSocketServerFactory)))
def test_every_autobahn_server_option_is_known(name, value):
    """Every Autobahn server protocol option is accepted."""
    try:
        HeartbeatServerFactory(URL, reactor=MemoryReactor(), **{name: value})
    except ValueError as e:
        assert "unknown option" not in str(e), str(e)
    except Exception as e:
        assert "unknown option" not in str(e)


def test_factory_args_and_service_options():
    """Autobahn's factory arguments and the service's contextFactory are accepted."""
    r = MemoryReactor()
    HeartbeatClientFactory(
        URL,
        HeartbeatHandler(),
        reactor=r,
        origin="http://x",
        protocols=["p"],
        useragent="u",
        headers={"A": "b"},
        proxy={"host": "127.0.0.1", "port": 3128},
    )
    HeartbeatServerFactory(URL, reactor=r, protocols=["p"], server="s", headers={"A": "b"}, externalPort=80)
    HeartbeatClientService(URL, HeartbeatHandler(), reactor=r, contextFactory=None, maxFramePayloadSize=10)


def test_a_subclass_option_taken_by_its_setProtocolOptions_override_is_refused():
    """
    A HeartbeatClientFactory subclass that extends setProtocolOptions (the
    Autobahn way to add a protocol option) had its option accepted before
    5f3a5cb (autobahnOptions calls factory.setProtocolOptions); now
    checkOptions looks only at WebSocketClientFactory.setProtocolOptions.
    """

    class MyFactory(HeartbeatClientFactory):
        def setProtocolOptions(self, myLimit=None, **kw):
            if myLimit is not None:
                self.myLimit = myLimit
            super().setProtocolOptions(**kw)

    f = MyFactory(URL, HeartbeatHandler(), reactor=MemoryReactor(), myLimit=5)
    assert f.myLimit == 5


def test_unknown_option_message_has_no_value():
    """An unknown option's message never shows its value (it may be a secret)."""
    with pytest.raises(ValueError) as e:
        connect(URL, HeartbeatHandler(), reactor=MemoryReactor(), pasword="hunter2-SECRET", pingIntervall=5)
    assert "hunter2" not in str(e.value) and "pingInterval" in str(e.value) and "pasword" in str(e.value)


def test_connect_suggests_its_own_contextFactory():
    """connect(..., contextFactry=x): the suggestion list is the factory's, so connect()'s own
    contextFactory is never suggested."""
    with pytest.raises(ValueError) as e:
        connect(URL, HeartbeatHandler(), reactor=MemoryReactor(), contextFactry=object())
    assert "contextFactory" in str(e.value), str(e.value)


def test_gaveup_survives_pickle_and_copy():
    """Exceptions cross processes (multiprocessing, trial -j, ampoule) by pickle: args is the message, so
    GaveUp(message) is rebuilt with attempts=<the message>, url/reason lost and the text doubled."""
    e = GaveUp(3, "ws://h/", Failure(ConnectionRefusedError()))
    for other in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
        assert str(other) == str(e)
        assert other.attempts == 3 and other.url == "ws://h/"


def test_gaveup_on_nasty_urls_says_no_secret():
    """GaveUp's message holds no password, query or fragment, however the URL is written."""
    for url, host in [
        ("ws://user:pa@ss@127.0.0.1:9000/feed?token=SECRETQ", "ws://127.0.0.1:9000/feed"),
        ("ws://us%40er:p%40SECRETP@127.0.0.1:9000/?token=SECRETQ", "ws://127.0.0.1:9000/"),
        ("ws://[::1]:9000/?token=SECRETQ", "ws://[::1]:9000/"),
    ]:
        r = MemoryReactor()
        got = []
        connect(url, HeartbeatHandler(), reactor=r, maxRetries=0).addErrback(got.append)
        r.refuse()
        e = got[0].value
        assert isinstance(e, GaveUp) and e.url == host, (url, e.url)
        text = str(e) + repr(e)
        assert "SECRET" not in text and "pa@ss" not in text and "ss@" not in text, text
        assert "refused" in str(e).lower()


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:9000/#access_token=SECRET", "ws://u:p@127.0.0.1:9000/?q=1#access_token=SECRET"]
)
def test_bad_url_message_never_quotes_the_fragment(url):
    """A fragment (an OAuth implicit-flow token lives there) is quoted back by Autobahn's parse error;
    _checkURL only trims Autobahn's message when '@' is still in the URL, but _splitCredentials has
    removed the user info by then, so the fragment is printed in full."""
    with pytest.raises(ValueError) as e:
        connect(url, HeartbeatHandler(), reactor=MemoryReactor())
    assert "SECRET" not in str(e.value), str(e.value)
