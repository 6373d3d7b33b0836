"""
The unmodified websocket-heartbeat-js 1.1.3 (the seed txheartbeat.js is a
drop-in for), fetched from the npm registry without npm: the tarball is
downloaded once, checked against its published sha512 integrity and cached
under ``$XDG_CACHE_HOME/txheartbeat-tests``.  Used by the browser tests and
``benchmarks/browser.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import urllib.request
from pathlib import Path

SEED_VERSION = "1.1.3"
# The registry's dist.integrity for 1.1.3: a published npm version never changes,
# so a cached tarball is checked against this without asking the registry again.
SEED_INTEGRITY = "sha512-wiCMVsWK7KflVCC5f+rSTyzILDZX88A7BJfdJXt5THNDut7uUNP83r5AvdZ1El/8yOwGujC7K3iuxj96CT4gbQ=="
REGISTRY = "https://registry.npmjs.org/websocket-heartbeat-js"
# Its browser build: a UMD bundle that sets window.WebsocketHeartbeatJs (README: "use script").
SEED_BUILD = "package/dist/index.js"
SEED_SOURCE = "package/lib/index.js"  # its ES module source (export default), for Node


class SeedUnavailable(Exception):
    """websocket-heartbeat-js could not be fetched and is not cached."""


def _sha512Matches(data: bytes, integrity: str) -> bool:
    digests = [part[len("sha512-") :] for part in integrity.split() if part.startswith("sha512-")]
    return bool(digests) and base64.b64encode(hashlib.sha512(data).digest()).decode() in digests


def seedBuild(member: str = SEED_BUILD) -> bytes:
    """A file of websocket-heartbeat-js's npm tarball (its browser build by default), from the cache (downloaded and verified once)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "txheartbeat-tests"
    cached = cache / f"websocket-heartbeat-js-{SEED_VERSION}.tgz"
    data = cached.read_bytes() if cached.is_file() else b""
    if not _sha512Matches(data, SEED_INTEGRITY):
        try:
            meta = urllib.request.Request(REGISTRY, headers={"Accept": "application/vnd.npm.install-v1+json"})
            with urllib.request.urlopen(meta, timeout=30) as answer:
                dist = json.load(answer)["versions"][SEED_VERSION]["dist"]
            with urllib.request.urlopen(dist["tarball"], timeout=60) as answer:
                data = answer.read()
        except (OSError, ValueError, KeyError) as e:
            raise SeedUnavailable(f"could not download websocket-heartbeat-js {SEED_VERSION} from {REGISTRY}: {e}")
        # Not a skip: a tarball that does not match what was published is something to look at.
        assert dist["integrity"] == SEED_INTEGRITY, f"the registry now says {dist['integrity']}"
        assert _sha512Matches(data, dist["integrity"]), "the downloaded tarball does not match its sha512 integrity"
        cache.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, cached)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        extracted = archive.extractfile(member)
        assert extracted is not None
        return extracted.read()
