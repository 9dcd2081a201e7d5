"""Fetching image prompts (URLs in prompts, Discord attachments) without letting bad input in.

Every URL passes, in order: https only; host on the allow-list (Discord's CDN by default); every address the host
resolves to is public (no private, loopback, link-local, multicast, reserved or unspecified address: no SSRF); the
connection goes to the address that was checked (no DNS rebinding between check and connect); redirects are not
trusted (each target is checked again, at most ``IMAGE_FETCH_MAX_REDIRECTS``); the body is capped in bytes and the
whole download in seconds; the content type must be an image type and agree with what Pillow decodes; the pixel count
is checked from the header before decoding, and Pillow's decompression-bomb guard is an error, not a warning.

Each refusal raises ``FetchRefused`` (a ``ValueError``) with a sentence a member can act on.

``unsafe_test_only_allow_http_loopback`` (settings) lets tests fetch ``http://127.0.0.1:<port>/...``; it is off by
default and must never be set in production.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from PIL import Image

from shared import defaults, errors
from shared.settings import Settings

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; injectable so tests can make a name resolve to a private address."""

_FORMAT_OF_TYPE = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
_LOOPBACK_TEST_HOST = "127.0.0.1"
_BOMB = "it is a decompression bomb (far more pixels than its file size suggests)"


class FetchRefused(errors.FetchRefused):
    """An image prompt that is not fetched or not used; ``str()`` is the member-facing reason, ``url`` and ``reason``
    its parts."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"image {shown_url(url)} was not used: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    """The limits one fetch runs under (``from_settings`` builds the configured one)."""

    allowed_hosts: tuple[str, ...] = defaults.IMAGE_FETCH_ALLOWED_HOSTS
    max_bytes: int = defaults.IMAGE_FETCH_MAX_BYTES
    timeout_s: float = defaults.IMAGE_FETCH_TIMEOUT_S
    max_pixels: int = defaults.IMAGE_FETCH_MAX_PIXELS
    max_redirects: int = defaults.IMAGE_FETCH_MAX_REDIRECTS
    content_types: tuple[str, ...] = defaults.IMAGE_FETCH_CONTENT_TYPES
    unsafe_test_only_allow_http_loopback: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            allowed_hosts=tuple(h.lower().strip() for h in settings.image_fetch_allowed_hosts if h.strip()),
            max_bytes=settings.image_fetch_max_bytes,
            timeout_s=settings.image_fetch_timeout_s,
            max_pixels=settings.image_fetch_max_pixels,
            unsafe_test_only_allow_http_loopback=settings.unsafe_test_only_allow_http_loopback,
        )


def shown_url(url: str, limit: int = 120) -> str:
    """``url`` cut for messages (members paste long signed CDN links)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(url))
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Exact match, or a ``.example.com`` entry admitting ``example.com`` and its subdomains."""
    host = host.lower().rstrip(".")
    for raw in allowed_hosts:
        entry = raw.lower()
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def address_refusal(address: str) -> str:
    """Why ``address`` may not be contacted, or ``""`` when it is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"it resolves to {address!r}, which is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for flag, what in (
        (ip.is_loopback, "loopback"),
        (ip.is_private, "private"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_unspecified, "unspecified"),
        (not ip.is_global, "non-public"),
    ):
        if flag:
            return f"its host resolves to a {what} address ({ip}), which image prompts may not reach"
    return ""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class CheckedTarget:
    """A URL that passed the checks, with the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str


def check_url(url: str, policy: FetchPolicy, resolver: Resolver = system_resolver) -> CheckedTarget:
    """Run every check that needs no connection (scheme, host, resolved addresses); ``FetchRefused`` on failure."""
    if not isinstance(url, str) or not url:
        raise FetchRefused(str(url), "the URL is empty")
    if len(url) > 2048:
        raise FetchRefused(url, "the URL is longer than 2048 characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise FetchRefused(url, "the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port_given = parts.port
    except ValueError as exc:
        raise FetchRefused(url, f"the URL is malformed ({exc})") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        raise FetchRefused(url, "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused(url, "URLs with a user name or password are not accepted")
    loopback_test = policy.unsafe_test_only_allow_http_loopback and host == _LOOPBACK_TEST_HOST
    if scheme != "https" and not (loopback_test and scheme == "http"):
        raise FetchRefused(url, f"only https:// image URLs are accepted, got {scheme or 'no'} scheme")
    if not loopback_test and not host_allowed(host, policy.allowed_hosts):
        allowed = ", ".join(policy.allowed_hosts) or "none"
        raise FetchRefused(url, f"images may only come from {allowed}; {host!r} is not on the list")
    port = port_given or (443 if scheme == "https" else 80)
    if loopback_test:
        return CheckedTarget(url, scheme, host, port, _LOOPBACK_TEST_HOST, _request_path(parts.path, parts.query))
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise FetchRefused(url, f"its host {host!r} could not be resolved ({exc})") from None
    if not addresses:
        raise FetchRefused(url, f"its host {host!r} resolves to no address")
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise FetchRefused(url, reason)
    return CheckedTarget(url, scheme, host, port, addresses[0], _request_path(parts.path, parts.query))


def _request_path(path: str, query: str) -> str:
    return (path or "/") + (f"?{query}" if query else "")


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with SNI and certificate verification for the URL's host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def fetch_bytes(url: str, policy: FetchPolicy, resolver: Resolver = system_resolver) -> tuple[bytes, str]:
    """Download ``url`` under ``policy``; returns ``(body, content_type)``. ``FetchRefused`` on any failed check."""
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for _ in range(policy.max_redirects + 1):
        target = check_url(current, policy, resolver)
        status, headers, body = _get(target, policy, deadline)
        if status in (301, 302, 303, 307, 308):
            location = headers.get("location", "")
            if not location:
                raise FetchRefused(url, f"the server answered {status} without a Location")
            current = urljoin(current, location)
            continue
        if status != 200:
            raise FetchRefused(url, f"the server answered HTTP {status}")
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in policy.content_types:
            allowed = ", ".join(policy.content_types)
            raise FetchRefused(url, f"its content type is {content_type or 'missing'!r}; allowed: {allowed}")
        return body, content_type
    raise FetchRefused(url, f"it redirects more than {policy.max_redirects} times")


def _get(target: CheckedTarget, policy: FetchPolicy, deadline: float) -> tuple[int, dict[str, str], bytes]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchRefused(target.url, f"the download took longer than {policy.timeout_s:g} s")
    factory = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = factory(target.host, target.address, target.port, remaining)
    try:
        connection.request("GET", target.path, headers={"User-Agent": "imagine-bot", "Accept": "image/*"})
        response = connection.getresponse()
        headers = {key.lower(): value for key, value in response.getheaders()}
        if response.status != 200:
            return response.status, headers, b""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise FetchRefused(target.url, f"it is {int(declared)} bytes; at most {policy.max_bytes} are accepted")
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchRefused(target.url, f"the download took longer than {policy.timeout_s:g} s")
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            size += len(chunk)
            if size > policy.max_bytes:
                raise FetchRefused(target.url, f"it is larger than {policy.max_bytes} bytes")
            chunks.append(chunk)
        return response.status, headers, b"".join(chunks)
    except FetchRefused:
        raise
    except TimeoutError:
        raise FetchRefused(target.url, f"the download took longer than {policy.timeout_s:g} s") from None
    except ssl.SSLError as exc:
        raise FetchRefused(target.url, f"its TLS certificate or handshake failed ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchRefused(target.url, f"the download failed ({type(exc).__name__})") from None
    finally:
        connection.close()


def decode_image(data: bytes, policy: FetchPolicy, *, url: str = "attachment", content_type: str = "") -> Image.Image:
    """Decode ``data`` as an RGB image within ``policy``'s pixel cap; the format must match ``content_type``."""
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning is a refusal here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise FetchRefused(
                url, "it is a decompression bomb (far more pixels than its file size suggests)"
            ) from None
        except Exception as exc:
            raise FetchRefused(url, f"it is not an image Pillow can read ({type(exc).__name__})") from None
        expected = _FORMAT_OF_TYPE.get(content_type)
        allowed_formats = {_FORMAT_OF_TYPE[t] for t in policy.content_types if t in _FORMAT_OF_TYPE}
        if image.format not in allowed_formats or (expected and image.format != expected):
            raise FetchRefused(url, f"its content is {image.format or 'unknown'} but it was sent as {content_type!r}")
        width, height = image.size
        if width * height > policy.max_pixels:
            raise FetchRefused(url, f"it is {width}x{height} pixels; at most {policy.max_pixels} pixels are accepted")
        try:
            image.load()
            return image.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise FetchRefused(
                url, "it is a decompression bomb (far more pixels than its file size suggests)"
            ) from None
        except Exception as exc:
            raise FetchRefused(url, f"it is a damaged image ({type(exc).__name__})") from None


def fetch_image(url: str, policy: FetchPolicy, resolver: Resolver = system_resolver) -> Image.Image:
    """Fetch and decode one image prompt under ``policy``; ``FetchRefused`` with a member-facing reason."""
    body, content_type = fetch_bytes(url, policy, resolver)
    image = decode_image(body, policy, url=url, content_type=content_type)
    log.info("fetched image prompt %s: %dx%d, %d bytes", shown_url(url), image.width, image.height, len(body))
    return image


__all__ = [
    "CheckedTarget",
    "FetchPolicy",
    "FetchRefused",
    "address_refusal",
    "check_url",
    "decode_image",
    "fetch_bytes",
    "fetch_image",
    "host_allowed",
    "system_resolver",
]
