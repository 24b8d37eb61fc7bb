"""A real S3 API over HTTP for the tests, loaded as a pytest plugin (tests/conftest.py).

MinIO via testcontainers where a Docker engine answers, else moto's standalone server on
127.0.0.1 (``s3_server``); repositories over file:// and S3 (``repo_target`` runs a test
once per backend, ``s3_repo``, ``file_repo``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drkit.pg import chown_tree, cluster_os_user, free_port
from tests.fix_pg import docker_available

MINIO_IMAGE = os.environ.get("DRKIT_TEST_MINIO_IMAGE", "minio/minio:RELEASE.2024-10-13T13-34-11Z")


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "drkit-test",
    "AWS_SECRET_ACCESS_KEY": "drkit-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # fail fast in tests when an endpoint is down; the defaults are for production
    "DRKIT_S3_MAX_ATTEMPTS": "3",
    "DRKIT_S3_CONNECT_TIMEOUT": "5",
    "DRKIT_S3_READ_TIMEOUT": "30",
}


@dataclass
class S3Server:
    endpoint: str
    kind: str

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def create_bucket(self, name: str | None = None, *, object_lock: bool = False) -> str:
        """A new bucket; ``object_lock``: created with object lock enabled (and so
        versioned), as an immutable-backup bucket is."""
        bucket = name or f"drkit-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
        return bucket

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        found: dict[str, int] = {}
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback test server
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        if docker_available():
            from testcontainers.minio import MinioContainer

            with MinioContainer(
                MINIO_IMAGE,
                access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
                secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            ) as minio:
                host = minio.get_container_host_ip()
                port = minio.get_exposed_port(9000)
                yield S3Server(f"http://{host}:{port}", "minio")
            return
        port = free_port()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            pytest.fail(f"cannot start moto's S3 server: pip install 'moto[server]' ({exc})")
        endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_http(endpoint)
        except OSError:
            proc.kill()
            pytest.fail("moto's S3 server did not start: pip install 'moto[server]'")
        try:
            yield S3Server(endpoint, "moto")
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class RepoTarget:
    """Where a test's repository lives: url plus what the policy needs."""

    kind: str  # file | s3
    url: str
    endpoint_url: str | None = None
    bucket: str | None = None
    root: Path | None = None

    def policy_block(self) -> dict[str, Any]:
        block: dict[str, Any] = {"url": self.url}
        if self.endpoint_url:
            block["endpoint_url"] = self.endpoint_url
            block["region"] = "us-east-1"
        return block


@pytest.fixture(params=["file", "s3"])
def repo_target(request: pytest.FixtureRequest, tmp_path: Path) -> RepoTarget:
    """A fresh empty repository; tests using it run once per backend."""
    if request.param == "file":
        root = tmp_path / "repo"
        root.mkdir()
        chown_tree(root, cluster_os_user())
        return RepoTarget("file", f"file://{root}", root=root)
    s3_repo: RepoTarget = request.getfixturevalue("s3_repo")
    return s3_repo


@pytest.fixture
def s3_repo(s3_server: S3Server) -> RepoTarget:
    bucket = s3_server.create_bucket()
    return RepoTarget("s3", f"s3://{bucket}/drkit", endpoint_url=s3_server.endpoint, bucket=bucket)


@pytest.fixture
def file_repo(tmp_path: Path) -> RepoTarget:
    root = tmp_path / "repo"
    root.mkdir()
    chown_tree(root, cluster_os_user())
    return RepoTarget("file", f"file://{root}", root=root)
