"""Signed, expiring tokens shared by the bot and the web companion: session cookies, the OAuth2 ``state``, and the
private Vary (Region) link (valid for one member, one image, ``WEB_LINK_TTL_S``).

A token is ``<payload>.<signature>``: the payload is URL-safe base64 of compact JSON with an ``exp`` (Unix time),
the signature HMAC-SHA256 over the token's purpose and the payload with ``WEB_SECRET``. The purpose is signed in, so
a token made for one use (a session) is refused for another (a region link). Tokens are signed, not encrypted: they
carry nothing secret (ids and expiry times).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared import messages
from shared.errors import MemberFacingError
from shared.settings import Settings

log = logging.getLogger(__name__)

REGION_PURPOSE = "region"
"""Purpose of Vary (Region) links."""

SECRET_MIN_CHARS = 16
"""Shortest ``WEB_SECRET`` accepted (a short secret can be guessed offline from one signed token)."""


class TokenRefused(MemberFacingError):
    """A token that is forged, tampered with, made for another use, or expired (the sentence says which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_secret(secret: str) -> str:
    """``secret`` if it is long enough to sign with; ``ValueError`` naming ``WEB_SECRET`` otherwise."""
    if len(secret) < SECRET_MIN_CHARS:
        raise ValueError(f"WEB_SECRET must be at least {SECRET_MIN_CHARS} characters, got {len(secret)}")
    return secret


def _signature(secret: str, purpose: str, payload: str) -> str:
    digest = hmac.new(check_secret(secret).encode(), f"{purpose}.{payload}".encode(), hashlib.sha256).digest()
    return _b64(digest)


def sign(secret: str, purpose: str, data: dict[str, Any], ttl_s: float, now: float | None = None) -> str:
    """A token for ``purpose`` carrying ``data``, valid for ``ttl_s`` seconds from ``now``."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
    body = {**data, "exp": round((time.time() if now is None else now) + ttl_s, 3)}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_signature(secret, purpose, payload)}"


def verify(secret: str, purpose: str, token: str, now: float | None = None) -> dict[str, Any]:
    """The data of a token made by ``sign`` for ``purpose``; ``TokenRefused`` if it is forged, tampered with, made
    for another purpose, or expired."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise TokenRefused(messages.LINK_FORGED)
    if not hmac.compare_digest(signature, _signature(secret, purpose, payload)):
        raise TokenRefused(messages.LINK_FORGED)
    try:
        data = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise TokenRefused(messages.LINK_FORGED) from None
    if not isinstance(data, dict) or not isinstance(data.get("exp"), int | float):
        raise TokenRefused(messages.LINK_FORGED)
    if (time.time() if now is None else now) >= float(data["exp"]):
        raise TokenRefused(messages.LINK_EXPIRED, expired=True)
    return data


@dataclass(frozen=True)
class RegionGrant:
    """What a Vary (Region) link allows: ``member`` may repaint image ``index`` of ``job_id``; the result goes to
    ``channel_id`` of ``guild_id`` (where the button was clicked)."""

    member: str
    job_id: str
    index: int
    channel_id: str
    guild_id: str
    expires_at: float = 0.0


def region_token(settings: Settings, grant: RegionGrant, now: float | None = None) -> str:
    """The signed token of a Vary (Region) link, valid for ``WEB_LINK_TTL_S``."""
    data = {"m": grant.member, "j": grant.job_id, "i": grant.index, "c": grant.channel_id, "g": grant.guild_id}
    return sign(settings.web_secret.get_secret_value(), REGION_PURPOSE, data, settings.web_link_ttl_s, now)


def region_url(settings: Settings, grant: RegionGrant, now: float | None = None) -> str:
    """The private link to the web companion's mask editor for ``grant``."""
    if not settings.web_base_url:
        raise ValueError("WEB_BASE_URL is not set: there is no web companion to link to")
    return f"{settings.web_base_url.rstrip('/')}/region/{quote(region_token(settings, grant, now), safe='')}"


def read_region(settings: Settings, token: str, now: float | None = None) -> RegionGrant:
    """The grant of a region link's token; ``TokenRefused`` if it is forged, tampered with or expired."""
    data = verify(settings.web_secret.get_secret_value(), REGION_PURPOSE, token, now)
    try:
        return RegionGrant(
            member=str(data["m"]),
            job_id=str(data["j"]),
            index=int(data["i"]),
            channel_id=str(data.get("c", "")),
            guild_id=str(data.get("g", "")),
            expires_at=float(data["exp"]),
        )
    except (KeyError, TypeError, ValueError):
        raise TokenRefused(messages.LINK_FORGED) from None
