"""Fixtures shared by the test suite: base stores and real loopback services.

Every service is started by the fixture that needs it, on 127.0.0.1 and a free port, and stopped
at the end of the session; nothing is expected to be running beforehand.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zarr.storage

from tests.support.services import (
    AWS_ENV,
    AWS_ENV_UNSET,
    AiohttpServer,
    FileServer,
    MotoS3Server,
    NginxServer,
    RequestRecorder,
    S3Bucket,
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


@contextlib.contextmanager
def running_moto(atomic: bool) -> Iterator[MotoS3Server]:
    """Run moto's S3 server, with the AWS environment it needs, until the block ends."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**AWS_ENV, **no_proxy_env()}.items():
            mp.setenv(name, value)
        for name in AWS_ENV_UNSET:
            mp.delenv(name, raising=False)
        server = MotoS3Server(atomic=atomic)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    """Run moto's S3 server for the session; yields it (``endpoint_url``, ``requests``, ...)."""
    with running_moto(atomic=False) as server:
        yield server


@pytest.fixture(scope="session")
def s3_atomic_server() -> Iterator[MotoS3Server]:
    """Run a moto S3 server that handles one request at a time, for the session.

    For concurrent writers: each conditional request is decided atomically, as S3 does (see
    ``tests.support.services.one_at_a_time``).
    """
    with running_moto(atomic=True) as server:
        yield server


def fresh_bucket(server: MotoS3Server) -> Iterator[S3Bucket]:
    """Create a uniquely named bucket on ``server``, clear its request log; remove it after."""
    fs = server.filesystem()
    bucket = server.new_bucket_name()
    fs.mkdir(bucket)
    server.requests.clear()
    yield S3Bucket(fs, bucket)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(bucket, recursive=True)


@pytest.fixture
def s3(s3_server: MotoS3Server) -> Iterator[S3Bucket]:
    """Create a uniquely named bucket; the request log is cleared after its creation."""
    yield from fresh_bucket(s3_server)


@pytest.fixture
def s3_atomic(s3_atomic_server: MotoS3Server) -> Iterator[S3Bucket]:
    """Create a uniquely named bucket on the one-request-at-a-time server."""
    yield from fresh_bucket(s3_atomic_server)


@pytest.fixture
def s3_requests(s3_server: MotoS3Server) -> RequestRecorder:
    """Return the S3 server's request recorder, cleared (``.log``, ``.count()``, ``.clear()``)."""
    s3_server.requests.clear()
    return s3_server.requests


# --- HTTP (aiohttp, and nginx where installed) ------------------------------------------------


def http_server_kinds() -> list[str]:
    """Return the HTTP servers to run the HTTP tests against.

    aiohttp comes with the test extra, so a fresh machine runs every HTTP test; nginx is added
    where it is installed, and in CI (where ``.ci/run`` installs it) its absence is a failure.
    """
    return ["aiohttp", "nginx"] if find_nginx() is not None or os.environ.get("CI") else ["aiohttp"]


@pytest.fixture(scope="session", params=http_server_kinds())
def http_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FileServer]:
    """Run an HTTP file server for the session, serving ``.root`` at ``.url``.

    It counts the requests it answered from its access log (``.requests()``, ``.count()``).
    """
    server: FileServer
    if request.param == "nginx":
        nginx = find_nginx()
        if nginx is None:
            pytest.fail("nginx is not installed; .ci/run should have installed it", pytrace=False)
        server = NginxServer(tmp_path_factory.mktemp("nginx"), nginx)
    else:
        server = AiohttpServer(tmp_path_factory.mktemp("aiohttp"))
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
