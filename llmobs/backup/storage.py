"""Where backup files are kept: a local directory, and S3 (any S3-compatible endpoint).

Both stores speak in keys relative to their root (``<backup id>/<file>``, ``wal/<segment>``), so
the repository above them treats them alike. S3 uploads are multipart above BACKUP_S3_MULTIPART_MB,
retried by botocore, and server-side encrypted when BACKUP_S3_SSE says so. Credentials come from
the standard AWS variables and files, read by boto3 itself.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmobs.errors import LlmobsError

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Store(Protocol):
    name: str

    def describe(self) -> str: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def list(self, prefix: str = "") -> list[StoredObject]: ...

    def delete(self, keys: Iterable[str]) -> None: ...


class LocalStore:
    """A directory. Writes go to a temporary name and are renamed into place."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def put_file(self, key: str, path: Path) -> None:
        dest = self.path(key)
        if dest.exists() and dest.samefile(path):
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def get_file(self, key: str, dest: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise LlmobsError(f"{src} does not exist")
        shutil.copyfile(src, dest)

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise LlmobsError(f"cannot read {self.path(key)}: {exc.strerror}") from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = self.path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                try:
                    st = full.stat()
                except FileNotFoundError:  # removed while we looked (WAL being pruned)
                    continue
                found.append(
                    StoredObject(str(full.relative_to(self.root)), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
                )
        return sorted(found, key=lambda o: o.key)

    def delete(self, keys: Iterable[str]) -> None:
        parents = set()
        for key in keys:
            self.path(key).unlink(missing_ok=True)
            parents.add(self.path(key).parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            if parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


class S3Store:
    """A bucket and key prefix on S3 or an S3-compatible server (MinIO, Ceph, ...)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str = "",
        region: str = "",
        sse: str = "",
        sse_kms_key_id: str = "",
        multipart_mb: int = 64,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id
        self.multipart_bytes = multipart_mb * 1024 * 1024
        self._client: Any = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, bucket: str | None = None, prefix: str | None = None
    ) -> S3Store | None:
        """The backup bucket of the settings (None when BACKUP_S3_BUCKET is empty), or ``bucket``
        and ``prefix`` on the same endpoint with the same credentials and encryption."""
        bucket = bucket or settings.get_str("BACKUP_S3_BUCKET")
        if not bucket:
            return None
        return cls(
            bucket,
            settings.get_str("BACKUP_S3_PREFIX") if prefix is None else prefix,
            endpoint_url=settings.get_str("BACKUP_S3_ENDPOINT_URL"),
            region=settings.get_str("BACKUP_S3_REGION"),
            sse=settings.get_str("BACKUP_S3_SSE"),
            sse_kms_key_id=settings.get_str("BACKUP_S3_SSE_KMS_KEY_ID"),
            multipart_mb=settings.get_int("BACKUP_S3_MULTIPART_MB"),
        )

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": 10, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
                s3={"addressing_style": "path"} if self.endpoint_url else None,
            )
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _extra_args(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.sse_kms_key_id:
                extra["SSEKMSKeyId"] = self.sse_kms_key_id
        return extra

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.multipart_bytes, multipart_chunksize=self.multipart_bytes)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise LlmobsError(
                f"S3 {what} failed on {self.describe()}: {error.get('Code', '?')} {error.get('Message', '')}".rstrip(),
                hint="check BACKUP_S3_* and the AWS credentials",
            ) from None
        except BotoCoreError as exc:
            raise LlmobsError(
                f"S3 {what} failed on {self.describe()}: {exc}",
                hint="check BACKUP_S3_ENDPOINT_URL, the network and the AWS credentials",
            ) from None

    def put_file(self, key: str, path: Path) -> None:
        with self._errors(f"upload of {key}"):
            self.client.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs=self._extra_args(), Config=self._transfer_config()
            )

    def get_file(self, key: str, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.part")
        with self._errors(f"download of {key}"):
            self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self._transfer_config())
        os.replace(tmp, dest)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(f"upload of {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **self._extra_args())

    def get_bytes(self, key: str) -> bytes:
        with self._errors(f"download of {key}"):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def list(self, prefix: str = "") -> list[StoredObject]:
        found = []
        strip = len(self._key(""))
        with self._errors("listing"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    found.append(StoredObject(obj["Key"][strip:], obj["Size"], obj["LastModified"]))
        return sorted(found, key=lambda o: o.key)

    def delete(self, keys: Iterable[str]) -> None:
        batch = [self._key(k) for k in keys]
        with self._errors("delete"):
            for i in range(0, len(batch), 1000):
                chunk = batch[i : i + 1000]
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise LlmobsError(
                        f"S3 delete failed for {len(response['Errors'])} object(s), first "
                        f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}"
                    )
