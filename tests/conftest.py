"""Fixtures shared by the test suite: base stores and real loopback services.

Every service is started by the fixture that needs it, on 127.0.0.1 and a free port, and stopped
at the end of the session; nothing is expected to be running beforehand.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import zarr.storage

from tests.services import (
    AWS_ENV,
    AWS_ENV_UNSET,
    MotoS3Server,
    NginxServer,
    RequestRecorder,
    find_nginx,
    no_proxy_env,
)


@pytest.fixture(params=["memory", "directory"])
def base_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Return an empty zarr v2 ``MemoryStore`` or ``DirectoryStore`` to shard into."""
    if request.param == "memory":
        return zarr.storage.MemoryStore()
    return zarr.storage.DirectoryStore(str(tmp_path / "base"))


# --- S3 (moto server) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    """Run moto's S3 server for the session; yields it (``endpoint_url``, ``requests``, ...)."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**AWS_ENV, **no_proxy_env()}.items():
            mp.setenv(name, value)
        for name in AWS_ENV_UNSET:
            mp.delenv(name, raising=False)
        server = MotoS3Server()
        server.start()
        try:
            yield server
        finally:
            server.stop()


class S3Bucket(NamedTuple):
    """A fresh, empty bucket and a filesystem to reach it (unpacks as ``fs, bucket``)."""

    fs: Any  # s3fs.S3FileSystem
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"


@pytest.fixture
def s3(s3_server: MotoS3Server) -> Iterator[S3Bucket]:
    """Create a uniquely named bucket; the request log is cleared after its creation."""
    fs = s3_server.filesystem()
    bucket = s3_server.new_bucket_name()
    fs.mkdir(bucket)
    s3_server.requests.clear()
    yield S3Bucket(fs, bucket)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(bucket, recursive=True)


@pytest.fixture
def s3_requests(s3_server: MotoS3Server) -> RequestRecorder:
    """Return the S3 server's request recorder, cleared (``.log``, ``.count()``, ``.clear()``)."""
    s3_server.requests.clear()
    return s3_server.requests


# --- HTTP (nginx) -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """Run nginx for the session, serving ``.root`` at ``.url``; counts requests from its log."""
    nginx = find_nginx()
    if nginx is None:
        reason = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run should have installed it", pytrace=False)
        pytest.skip(reason)
    server = NginxServer(tmp_path_factory.mktemp("nginx"), nginx)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- dask.distributed -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """Run a ``LocalCluster`` of two single-threaded worker processes on 127.0.0.1."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster


@pytest.fixture
def dask_client(dask_cluster: Any) -> Iterator[Any]:
    """Return a ``distributed.Client`` of the session's cluster, closed after the test."""
    import distributed

    with distributed.Client(dask_cluster) as client:
        yield client
