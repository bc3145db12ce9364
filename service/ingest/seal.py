"""The intake's seal: a MAC, in a record header, of each record the intake wrote.

The intake writes a record only after validating its body (``intake.py``), so the
consumer can read a sealed record without validating it a second time
(``parse.read_sealed``: half the cost of pydantic's parse, which was a twelfth of a storm).
Every other record, from any other producer, an older release, or a replayed dead letter,
is validated as before; so is a sealed one that does not read as a webhook.

The key is the deployment's own (``store/keys.py``), shared by every replica through the
store, so a record one replica wrote is trusted by another. A producer who can write to
the alerts topic but cannot read the store cannot make a seal.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "incidentd-seal"
# The name of the key in the store.
KEY_NAME = "intake-seal"
# A new scheme gets a new prefix; a record under an old one is validated.
_SCHEME = "v1="


class Seal:
    """Unkeyed until the store's key is known (``use``): it then seals and verifies."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    def use(self, key: bytes) -> None:
        self._key = key

    def headers(self, value: bytes) -> dict[str, str] | None:
        """The header that seals ``value``; None while unkeyed."""
        if self._key is None:
            return None
        return {HEADER: _mac(self._key, value)}

    def holds(self, value: bytes, seal: bytes | None) -> bool:
        """Did this deployment's intake write ``value``, as ``seal`` (the header's value) says?"""
        if seal is None or self._key is None:
            return False
        return hmac.compare_digest(seal, _mac(self._key, value).encode())


def _mac(key: bytes, value: bytes) -> str:
    return _SCHEME + hmac.digest(key, value, hashlib.sha256).hex()


def seal_of(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    """The seal header's value among a Kafka record's headers, if any."""
    for name, value in headers:
        if name == HEADER:
            return value
    return None
