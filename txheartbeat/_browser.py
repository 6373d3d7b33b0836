"""
The browser end: ``txheartbeat.js``, shipped in the package and served by
``txheartbeat serve`` (a drop-in superset of websocket-heartbeat-js 1.1.3;
see docs/browser.md).

The file is an ES module; its classic-script form is the same text without
the final ``export default`` line, so that one file serves both
``import WebsocketHeartbeat from "/txheartbeat.js"`` and
``<script src="/txheartbeat.classic.js">`` (``window.WebsocketHeartbeat``).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Dict, Optional, Tuple

SCRIPT_FILE = Path(__file__).parent / "static" / "txheartbeat.js"
MODULE_PATH = "/txheartbeat.js"
CLASSIC_PATH = "/txheartbeat.classic.js"
_EXPORT = "export default WebsocketHeartbeat;\n"


@cache
def script(classic: bool = False) -> bytes:
    """The script's bytes: the ES module, or (``classic``) the classic script."""
    text = SCRIPT_FILE.read_text(encoding="utf-8")
    if not text.endswith(_EXPORT):
        raise RuntimeError(f"{SCRIPT_FILE} must end with {_EXPORT!r}")
    return (text[: -len(_EXPORT)] if classic else text).encode("utf-8")


def response(path: str, headers: Dict[str, str]) -> Optional[Tuple[int, Dict[str, str], bytes]]:
    """
    The HTTP answer for a GET of ``path`` if it is the script (``None``
    otherwise): ``(status, headers, body)``; 304 when ``If-None-Match``
    names the current version.  Cacheable for an hour and readable from any
    origin (a page on another origin imports it as a module, which needs CORS).
    """
    if path not in (MODULE_PATH, CLASSIC_PATH):
        return None
    body = script(classic=path == CLASSIC_PATH)
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    head = {
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": "public, max-age=3600",
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in (headers.get("if-none-match") or ""):
        return 304, head, b""
    return 200, head, body
