"""Image prompt fetching against a real HTTP server on 127.0.0.1 that counts every request it gets."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shared.safety.safe_fetch import FetchPolicy, FetchRefused, address_refusal, check_url, fetch_image

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LocalServer:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (what a decompression bomb looks like before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def send(handler: BaseHTTPRequestHandler, body: bytes, content_type: str = "image/png", status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    state = LocalServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path.split("?", 1)[0])
            if route is None:
                send(self, b"not found", "text/plain", 404)
            else:
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


TEST_POLICY = FetchPolicy(unsafe_test_only_allow_http_loopback=True, timeout_s=2.0, max_bytes=64 * 1024)


def test_happy_path_fetches_and_decodes_a_png_over_the_test_only_loopback_override(server: LocalServer) -> None:
    server.routes["/a.png"] = lambda h: send(h, png_bytes((8, 6)))
    image = fetch_image(server.url("/a.png?ex=1"), TEST_POLICY)
    assert image.size == (8, 6) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == (200, 10, 10)
    assert server.requests == ["/a.png?ex=1"]


def test_default_policy_never_contacts_loopback_http(server: LocalServer) -> None:
    server.routes["/a.png"] = lambda h: send(h, png_bytes())
    with pytest.raises(FetchRefused, match="only https"):
        fetch_image(server.url("/a.png"), FetchPolicy())
    with pytest.raises(FetchRefused, match="not on the list"):
        fetch_image(f"https://127.0.0.1:{server.port}/a.png", FetchPolicy())
    assert server.requests == []


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.5", "169.254.169.254", "::1", "fe80::1",
                "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1", "224.0.0.1", "fc00::5"],
)  # fmt: skip
def test_allow_listed_host_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    with pytest.raises(FetchRefused, match="address") as caught:
        check_url("https://cdn.discordapp.com/attachments/1/2/a.png", FetchPolicy(), lambda host, port: [address])
    assert "cdn.discordapp.com" in str(caught.value)


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(FetchRefused, match="private"):
        check_url("https://cdn.discordapp.com/a.png", FetchPolicy(), lambda host, port: ["162.159.1.1", "10.0.0.1"])
    assert address_refusal("162.159.1.1") == ""


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://cdn.discordapp.com/a.png", "only https"),
        ("file:///etc/passwd", "no host"),
        ("https://evil.example/a.png", "not on the list"),
        ("https://cdn.discordapp.com.evil.example/a.png", "not on the list"),
        ("https://user:pw@cdn.discordapp.com/a.png", "user name"),
        ("https://cdn.discordapp.com:99999/a.png", "malformed"),
        ("https://cdn.discordapp.com/a b.png", "spaces"),
        ("", "empty"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_reason(url: str, reason: str) -> None:
    with pytest.raises(FetchRefused, match=reason):
        check_url(url, FetchPolicy(), lambda host, port: ["162.159.1.1"])


def test_subdomain_entries_admit_subdomains_only_when_written_with_a_dot() -> None:
    policy = FetchPolicy(allowed_hosts=(".example.org",))
    resolve = lambda host, port: ["93.184.216.34"]  # noqa: E731
    assert check_url("https://img.example.org/a.png", policy, resolve).host == "img.example.org"
    with pytest.raises(FetchRefused, match="not on the list"):
        check_url("https://img.example.org/a.png", FetchPolicy(allowed_hosts=("example.org",)), resolve)


def test_size_cap_by_header_and_by_streamed_body(server: LocalServer) -> None:
    big = b"\0" * (TEST_POLICY.max_bytes + 1)
    server.routes["/big.png"] = lambda h: send(h, big)

    def unsized(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        h.wfile.write(big)
        h.close_connection = True

    server.routes["/unsized.png"] = unsized
    with pytest.raises(FetchRefused, match="at most 65536"):
        fetch_image(server.url("/big.png"), TEST_POLICY)
    with pytest.raises(FetchRefused, match="larger than 65536"):
        fetch_image(server.url("/unsized.png"), TEST_POLICY)


def test_time_cap_refuses_a_server_that_stalls(server: LocalServer) -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        send(h, png_bytes())

    server.routes["/slow.png"] = stall
    with pytest.raises(FetchRefused, match=r"longer than 0\.3 s"):
        fetch_image(server.url("/slow.png"), replace(TEST_POLICY, timeout_s=0.3))


def test_content_type_must_be_an_image_and_agree_with_the_content(server: LocalServer) -> None:
    server.routes["/page"] = lambda h: send(h, b"<html></html>", "text/html")
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    server.routes["/lie.png"] = lambda h: send(h, gif.getvalue(), "image/png")
    server.routes["/junk.png"] = lambda h: send(h, b"not an image at all", "image/png")
    with pytest.raises(FetchRefused, match="content type is 'text/html'"):
        fetch_image(server.url("/page"), TEST_POLICY)
    with pytest.raises(FetchRefused, match="content is GIF"):
        fetch_image(server.url("/lie.png"), TEST_POLICY)
    with pytest.raises(FetchRefused, match="not an image"):
        fetch_image(server.url("/junk.png"), TEST_POLICY)


def test_pixel_cap_and_decompression_bomb_are_refused_before_decoding(server: LocalServer) -> None:
    server.routes["/wide.png"] = lambda h: send(h, png_header_only(5000, 5000))
    server.routes["/bomb.png"] = lambda h: send(h, png_header_only(20000, 20000))
    with pytest.raises(FetchRefused, match="5000x5000 pixels"):
        fetch_image(server.url("/wide.png"), TEST_POLICY)
    with pytest.raises(FetchRefused, match="decompression bomb"):
        fetch_image(server.url("/bomb.png"), replace(TEST_POLICY, max_pixels=10**12))


def test_redirects_are_checked_again_and_capped(server: LocalServer) -> None:
    def to(location: str) -> Route:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        return route

    server.routes["/a.png"] = lambda h: send(h, png_bytes())
    server.routes["/hop"] = to("/a.png")
    server.routes["/away"] = to("http://169.254.169.254/latest/meta-data/")
    server.routes["/loop"] = to("/loop")
    assert fetch_image(server.url("/hop"), TEST_POLICY).size == (8, 6)
    with pytest.raises(FetchRefused, match="only https"):
        fetch_image(server.url("/away"), TEST_POLICY)
    with pytest.raises(FetchRefused, match="redirects more than 3"):
        fetch_image(server.url("/loop"), TEST_POLICY)
    assert server.requests.count("/loop") == 4


# Pieces of URLs glued at random: schemes, allow-listed and foreign hosts, the local server's address in many
# spellings, ports, userinfo, and junk. Every name resolves to a non-public address, so nothing may be fetched.
URL_PIECES = [
    "https://", "http://", "HTTPS://", "ftp://", "//", "cdn.discordapp.com", "media.discordapp.net", "127.0.0.1",
    "localhost", "[::1]", "0x7f000001", "2130706433", "127.1", "0", "[::ffff:127.0.0.1]", "169.254.169.254",
    "evil.example", ".", ":", "@", "#", "?", "/", "%2e", "%00", "\\", "a.png", "attachments/1/2/", "user:pw@",
]  # fmt: skip
NON_PUBLIC = ["127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "192.168.1.1", "::ffff:127.0.0.1", "0.0.0.0"]


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pieces=st.lists(st.sampled_from(URL_PIECES) | st.text(max_size=4), max_size=12),
    port_mode=st.sampled_from(["server", "none", "other"]),
    resolved=st.lists(st.sampled_from(NON_PUBLIC), min_size=1, max_size=3),
)
def test_fuzzed_urls_never_reach_the_local_server(
    server: LocalServer, pieces: list[str], port_mode: str, resolved: list[str]
) -> None:
    text = "".join(pieces)
    if port_mode == "server":
        text = text.replace("127.0.0.1", f"127.0.0.1:{server.port}").replace("localhost", f"localhost:{server.port}")
    policy = FetchPolicy(allowed_hosts=("cdn.discordapp.com", "media.discordapp.net", "127.0.0.1", "localhost"))
    with contextlib.suppress(FetchRefused):
        fetch_image(text, policy, lambda host, port: list(resolved))
    assert server.requests == []
