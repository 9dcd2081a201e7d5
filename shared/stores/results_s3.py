"""The S3 result store (AWS S3 or an S3-compatible server such as SeaweedFS or MinIO) through boto3.

Objects: ``<S3_PREFIX><job_id[:2]>/<job_id>/image_<n>.png`` (n 0-based) and ``record.json``, the same layout as the
filesystem store. Retention is the bucket's: ``ensure_bucket`` (run once per store before the first write) creates the
bucket if it is missing and installs a lifecycle rule that expires objects under the prefix
``ceil(IMAGE_TTL_S / 1 day)`` days after they were written (S3 lifecycle rules count whole days), keeping the bucket's
other rules. ``image_url`` gives presigned GET URLs, so a front end can hand members a link without proxying bytes.
Path-style addressing (``S3_ADDRESSING_STYLE=path``) suits S3-compatible servers reached by one host name.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared import defaults
from shared.settings import Settings
from shared.stores.results import (
    Location,
    ResultStore,
    check_index,
    check_job_id,
    image_expired,
    record_expired,
)
from shared.stores.results_filesystem import RECORD_NAME, image_name

log = logging.getLogger(__name__)

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
"""Error codes S3 (and S3-compatible servers) answer for an object or bucket that is not there."""

CONNECT_TIMEOUT_S = 5.0
"""Seconds to open a connection to the S3 endpoint."""

READ_TIMEOUT_S = 30.0
"""Seconds one S3 answer may take (a few MB of PNG)."""

ATTEMPTS = 4
"""Tries of one S3 call (botocore's standard retry mode: throttling, 5xx and network errors)."""


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) in MISSING_CODES


def lifecycle_days(ttl_s: int) -> int:
    """Whole days an S3 lifecycle rule keeps objects for a lifetime of ``ttl_s`` (at least 1)."""
    return max(1, math.ceil(ttl_s / 86400))


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for ``settings``: endpoint, region, credentials (else boto3's chain), addressing style."""
    credentials: dict[str, str] = {}
    if settings.s3_access_key_id:
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        }
    config = Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        s3={"addressing_style": settings.s3_addressing_style},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
    )
    # A session of its own: boto3's default session is not thread-safe, and the bot calls stores from threads.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config, **credentials)


class S3ResultStore(ResultStore):
    """Results as objects in one bucket under one prefix (see the module doc)."""

    backend = "s3"

    def __init__(self, settings: Settings, *, bucket: str = "", prefix: str | None = None, client: Any = None) -> None:
        super().__init__(settings.image_ttl_s)
        self.bucket = bucket or settings.s3_bucket
        if not self.bucket:
            raise ValueError("S3_BUCKET must name the bucket of results, got ''")
        raw_prefix = settings.s3_prefix if prefix is None else prefix
        self.prefix = raw_prefix.strip("/") + "/" if raw_prefix.strip("/") else ""
        self.endpoint = settings.s3_endpoint_url.rstrip("/")
        self.client = client if client is not None else make_client(settings)
        self._ensured = False
        self._lock = threading.Lock()

    @property
    def location(self) -> Location:
        return Location("s3", endpoint=self.endpoint, bucket=self.bucket, prefix=self.prefix)

    def job_prefix(self, job_id: str) -> str:
        """``<prefix><job_id[:2]>/<job_id>/``."""
        check_job_id(job_id)
        return f"{self.prefix}{job_id[:2]}/{job_id}/"

    @property
    def rule_id(self) -> str:
        """ID of this store's lifecycle rule: one per prefix, so deployments sharing a bucket keep each other's."""
        return f"{defaults.S3_LIFECYCLE_RULE_ID}:{self.prefix}"[:255]

    def lifecycle_rule(self) -> dict[str, Any]:
        """The lifecycle rule that expires this store's objects (what ``ensure_bucket`` installs)."""
        return {
            "ID": self.rule_id,
            "Filter": {"Prefix": self.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": lifecycle_days(self.ttl_s)},
        }

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing and install (or replace) the expiry rule, keeping other rules.

        A server that refuses lifecycle rules is logged as an error, not raised: results still store, but nothing
        removes them (the admin must set retention on the bucket another way).
        """
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _missing(exc):
                raise
            log.info("creating S3 bucket %s", self.bucket)
            create: dict[str, Any] = {"Bucket": self.bucket}
            region = self.client.meta.region_name
            if region and region != "us-east-1":  # us-east-1 is the one region that refuses a LocationConstraint
                create["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.client.create_bucket(**create)
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        rules = [rule for rule in rules if rule.get("ID") != self.rule_id] + [self.lifecycle_rule()]
        try:
            self.client.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": rules})
        except ClientError:
            log.exception(
                "could not install the expiry rule on S3 bucket %s: results under %r will not expire by themselves",
                self.bucket,
                self.prefix,
            )

    def _ensure_once(self) -> None:
        with self._lock:
            if not self._ensured:
                self.ensure_bucket()
                self._ensured = True

    def put_images(self, job_id: str, pngs: Sequence[bytes]) -> None:
        self._ensure_once()
        base = self.job_prefix(job_id)
        for index, png in enumerate(pngs):
            self.client.put_object(Bucket=self.bucket, Key=base + image_name(index), Body=png, ContentType="image/png")
        wanted = {base + image_name(index) for index in range(len(pngs))}
        stale = [key for key in self._keys(base) if key.rsplit("/", 1)[-1].startswith("image_") and key not in wanted]
        self._delete_keys(stale)

    def get_image(self, job_id: str, index: int) -> bytes:
        key = self.job_prefix(job_id) + image_name(check_index(index))
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _missing(exc):
                raise image_expired(job_id, index, self.ttl_s) from None
            raise

    def put_record(self, job_id: str, record: dict[str, Any]) -> None:
        self._ensure_once()
        key = self.job_prefix(job_id) + RECORD_NAME
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=self.encode_record(record), ContentType="application/json"
        )

    def get_record(self, job_id: str) -> dict[str, Any]:
        key = self.job_prefix(job_id) + RECORD_NAME
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise record_expired(job_id, self.ttl_s) from None
            raise
        return self.decode_record(job_id, data)

    def image_url(self, job_id: str, index: int, expires_s: int = defaults.RESULT_URL_EXPIRES_S) -> str | None:
        """A presigned GET URL valid ``expires_s``; the object is checked first (``ResultExpired`` if gone)."""
        if expires_s <= 0:
            raise ValueError(f"expires_s must be > 0 seconds, got {expires_s}")
        key = self.job_prefix(job_id) + image_name(check_index(index))
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                raise image_expired(job_id, index, self.ttl_s) from None
            raise
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
        return str(url)

    def delete(self, job_id: str) -> None:
        self._delete_keys(self._keys(self.job_prefix(job_id)))

    def sweep(self, now: float) -> int:
        """0: the bucket's lifecycle rule expires results (installed by ``ensure_bucket``)."""
        return 0

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                raise RuntimeError(
                    f"S3 refused to delete some result objects of bucket {self.bucket}: {answer['Errors']}"
                )
