"""The board's login session and CSRF tokens, verified without server-side state.

The cookie never holds the API token. It is ``<issued>.<who>.<mac>``: when issued (epoch
seconds), who logged in (base64url) and HMAC-SHA256 keyed by the token over both, so any
replica that knows the token can check it, and changing the token ends every session.
Without a token (the API is open too) the ``mac`` part is a random nonce: nothing to
authenticate, but it still keys the CSRF tokens.

Every form carries ``csrf`` = HMAC-SHA256(token or nonce, the cookie value), compared in
constant time; a cross-site page can neither read the cookie nor (SameSite=Strict) send
it. POSTs whose ``Origin`` (or ``Sec-Fetch-Site``) says another site are refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "incidentd_ui"
PATH = "/ui"
MAX_AGE = 12 * 3600  # one shift; log in again after
_SKEW = 60  # a cookie issued this far in the future (another replica's clock) still counts
_SESSION = b"incidentd-ui-session"
_CSRF = b"incidentd-ui-csrf"
_MAC = re.compile(r"^[0-9a-f]{64}$")


def _mac(key: bytes, label: bytes, *parts: str) -> str:
    msg = b"\x00".join([label, *(p.encode() for p in parts)])
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Session:
    value: str  # the cookie, as set
    who: str  # the name commands are signed with (``by``)
    csrf: str  # what every form of this session carries


class Sessions:
    def __init__(self, token: bytes | None) -> None:
        self._token = token

    @property
    def open(self) -> bool:
        """No token configured: no login needed (the API is open too)."""
        return self._token is None

    def token_ok(self, given: str) -> bool:
        if self._token is None:
            return True
        return hmac.compare_digest(given.encode(), self._token)

    def issue(self, who: str, now: float) -> Session:
        issued, name = str(int(now)), _b64(who)
        if self._token is None:
            mac = secrets.token_hex(32)
        else:
            mac = _mac(self._token, _SESSION, issued, name)
        return self._session(f"{issued}.{name}.{mac}", who, mac)

    def read(self, value: str | None, now: float) -> Session | None:
        """The session of a cookie value, or None if it is forged, expired or malformed."""
        parts = (value or "").split(".")
        if len(parts) != 3:
            return None
        issued, name, mac = parts
        who = _unb64(name)
        if not issued.isdigit() or not who or not _MAC.match(mac):
            return None
        if not -_SKEW <= now - int(issued) <= MAX_AGE:
            return None
        if self._token is not None and not hmac.compare_digest(
            mac, _mac(self._token, _SESSION, issued, name)
        ):
            return None
        return self._session(f"{issued}.{name}.{mac}", who, mac)

    def _session(self, value: str, who: str, mac: str) -> Session:
        key = self._token if self._token is not None else mac.encode()
        return Session(value, who, _mac(key, _CSRF, value))

    def from_request(self, request: Request, now: float) -> Session | None:
        return self.read(request.cookies.get(COOKIE), now)


def csrf_ok(session: Session, given: str) -> bool:
    return hmac.compare_digest(session.csrf.encode(), given.encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser form, or one that does not send it: CSRF token still checked
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


def set_cookie(response: Response, request: Request, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.value,
        max_age=MAX_AGE,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
