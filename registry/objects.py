"""Blob stores for the registry: the embedded directory (persona.blobs.LocalBlobStore) or an
S3-compatible object store (AWS S3, SeaweedFS, MinIO), chosen by ``registry.object_store``.

Keys are content addresses (``sha256/<hex>``, the ref itself), so a put of bytes that are
already there is a no-op and a key never changes meaning: objects are immutable.
"""

from __future__ import annotations

import os
from pathlib import Path

from persona.blobs import LocalBlobStore, check_ref, ref_of
from registry.errors import ConfigError

#: Seconds a request to the object store may take before it counts as failed.
S3_TIMEOUT_S = 30
S3_RETRIES = 3


class S3BlobStore:
    """persona.blobs.BlobStore over one S3 bucket (created when missing)."""

    def __init__(self, endpoint_url: str | None, bucket: str, access_key: str | None = None,
                 secret_key: str | None = None, region: str = "us-east-1"):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        config = Config(
            s3={"addressing_style": "path"},  # S3-compatible servers rarely resolve bucket subdomains
            signature_version="s3v4",  # presigned URLs in SigV4 (boto3's default for them is still V2)
            connect_timeout=S3_TIMEOUT_S, read_timeout=S3_TIMEOUT_S, retries={"max_attempts": S3_RETRIES},
            # Only what S3 itself requires: newer botocore adds CRC checksums some servers reject.
            request_checksum_calculation="when_required", response_checksum_validation="when_required")
        # None for the keys lets boto3 use its usual chain (environment, ~/.aws, instance role).
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1",
            aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None, config=config)
        self.ensure_bucket()

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if self._status(exc) != 404:
                raise
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:  # another process created it first
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    @staticmethod
    def _status(exc) -> int:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

    def put(self, data: bytes) -> str:
        ref = ref_of(data)
        if not self.exists(ref):  # content-addressed: an existing object already holds these bytes
            self.client.put_object(Bucket=self.bucket, Key=ref, Body=data, ContentType="application/octet-stream")
        return ref

    def get(self, ref: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            data = self.client.get_object(Bucket=self.bucket, Key=check_ref(ref))["Body"].read()
        except ClientError as exc:
            if self._status(exc) == 404:
                raise KeyError(f"no blob {ref}") from None
            raise
        if ref_of(data) != ref:  # a damaged object must not pass as the blob
            raise KeyError(f"blob {ref} is corrupt in s3://{self.bucket}")
        return data

    def exists(self, ref: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=check_ref(ref))
            return True
        except ClientError as exc:
            if self._status(exc) == 404:
                return False
            raise

    def presign(self, ref: str, expires_s: int) -> str:
        """A URL anyone can GET for ``expires_s`` seconds (SigV4 query signature)."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_ref(ref)}, ExpiresIn=int(expires_s))

    def close(self) -> None:
        self.client.close()


def default_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "personas" / "registry"


def registry_root(section: dict) -> Path:
    """``registry.root``, or the per-user default, created if missing."""
    root = Path(section.get("root") or default_root()).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def open_blob_store(section: dict) -> LocalBlobStore | S3BlobStore:
    """The blob store ``registry.object_store`` names: "" = files under the registry root,
    "file:///DIR" = files under DIR, "s3://BUCKET" = that bucket (``s3_*`` keys)."""
    where = str(section.get("object_store") or "")
    if not where:
        return LocalBlobStore(registry_root(section) / "blobs")
    if where.startswith("file://"):
        return LocalBlobStore(where.removeprefix("file://"))
    if where.startswith("s3://"):
        bucket = where.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise ConfigError(f"registry.object_store {where!r}: expected s3://BUCKET")
        return S3BlobStore(section.get("s3_endpoint_url") or None, bucket, section.get("s3_access_key") or None,
                           section.get("s3_secret_key") or None, section.get("s3_region") or "us-east-1")
    raise ConfigError(f"registry.object_store {where!r}: expected \"\", file:///DIR or s3://BUCKET")
