"""
A minimal Chrome DevTools Protocol driver for the browser tests: start a
headless Chromium, open pages, evaluate JavaScript, take screenshots.

Blocking calls (python-websockets' sync client), one at a time under a lock;
tests whose server runs on the reactor call them with ``deferToThread`` so
the reactor keeps serving the page while a call waits.  Every wait has a
deadline.  The browser runs in its own process group, which :meth:`Browser.close`
kills whole (the profile directory goes with it).
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from websockets.sync.client import connect

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def findChromium() -> Optional[str]:
    """The Chromium binary: ``$CHROMIUM`` if set, else the first of :data:`NAMES` on ``PATH``, else ``None``."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPError(Exception):
    """The browser answered a command with an error, or a page's JavaScript threw."""


class Browser:
    """
    A headless Chromium and one DevTools connection to it (the browser
    endpoint; pages are attached as flat sessions on the same connection).
    """

    def __init__(self, binary: str, timeout: float = 30.0, args: Sequence[str] = ()) -> None:
        """Start ``binary`` headless, with ``args`` added to its command line."""
        self.profile = tempfile.mkdtemp(prefix="txheartbeat-chromium-")
        self._log = open(os.path.join(self.profile, "browser.log"), "wb")
        self._lock = threading.Lock()
        self._ids = 0
        self._connection = ExitStack()
        self.conn: Any = None
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                *args,
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: close() kills every helper process too
        )
        try:
            port, path = self._devToolsActivePort(timeout)
            # Straight to loopback, never through a proxy from the environment (websockets 15 on
            # honours $https_proxy); entered as a context manager, as every version from 12 on allows.
            direct = {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}
            url = f"ws://127.0.0.1:{port}{path}"
            self.conn = self._connection.enter_context(
                connect(url, max_size=None, ping_interval=None, open_timeout=timeout, **direct)
            )
        except BaseException:
            self.close()
            raise

    def _devToolsActivePort(self, timeout: float) -> tuple:
        """Port and browser endpoint path, from the file Chromium writes once it listens (port 0: its choice)."""
        where = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.logTail()}")
            try:
                lines = where.read_text().split()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2:
                return int(lines[0]), lines[1]
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s: {self.logTail()}")

    def logTail(self, size: int = 2000) -> str:
        """The end of the browser's stdout and stderr."""
        try:
            return (Path(self.profile) / "browser.log").read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def send(
        self, method: str, params: Optional[Dict[str, Any]] = None, session: Optional[str] = None, timeout: float = 10.0
    ) -> Dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are dropped."""
        with self._lock:
            self._ids += 1
            ident = self._ids
            message: Dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
            if session is not None:
                message["sessionId"] = session
            self.conn.send(json.dumps(message))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method}: no answer within {timeout} s")
                try:
                    answer = json.loads(self.conn.recv(timeout=left))
                except TimeoutError:
                    raise TimeoutError(f"{method}: no answer within {timeout} s")
                if answer.get("id") != ident:
                    continue
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> Page:
        """Open ``url`` in a new page (target) and attach to it."""
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, target, session)

    def pids(self) -> List[int]:
        """The processes of the browser's process group (itself and every helper it started)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == self.proc.pid:
                        found.append(int(entry))
                except ProcessLookupError:
                    pass
        return found

    def processWith(self, needle: str) -> Optional[int]:
        """The pid of the browser's (descendant) process whose command line contains ``needle``."""
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if needle.encode() in cmdline:
                return pid
        return None

    def close(self) -> None:
        """Kill the browser and every process it started, and delete its profile."""
        try:
            self._connection.close()
        except Exception:
            pass  # the browser may be gone already
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # (stopped processes die too)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One open page (a CDP target) of a :class:`Browser`."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, timeout: float = 10.0) -> Dict[str, Any]:
        """A CDP command to this page."""
        return self.browser.send(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: float = 10.0) -> Any:
        """The JSON value of ``expression`` in the page (a Promise is awaited); raises :class:`CDPError` if it throws."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": int(timeout * 1000)},
            timeout + 1,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def waitFor(self, condition: str, timeout: float = 10.0) -> Any:
        """Poll the JavaScript ``condition`` in the page until it is truthy (then return it); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        error = ""
        while True:
            try:
                value = self.evaluate(condition, timeout=max(0.1, deadline - time.monotonic()))
            except CDPError as e:
                value, error = None, f" (last: {e})"  # e.g. a name the page has not defined yet
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{condition!r} still false after {timeout} s{error}")
            time.sleep(0.05)

    def screenshot(self) -> bytes:
        """The page as a PNG image."""
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        """Close the page (its WebSockets go with it)."""
        self.browser.send("Target.closeTarget", {"targetId": self.target})
