"""Prove that the service fixtures start real servers and count the requests they receive."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from email.message import Message
from typing import Any

import pytest

from tests.support.services import FileServer, MotoS3Server, RequestRecorder, S3Bucket

pytestmark = pytest.mark.services


def _pid(_: int = 0) -> int:
    """Run in a worker: module-level, so it also proves workers can import the test modules."""
    return os.getpid()


def _fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.status, response.read()


def _exchange(url: str, headers: dict[str, str], method: str = "GET") -> tuple[int, Message, bytes]:
    """Return the status, headers and body of one request, error statuses included."""
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            request, timeout=10
        ) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def test_s3_put_and_ranged_get_are_counted(s3: S3Bucket, s3_requests: RequestRecorder) -> None:
    fs, bucket = s3
    fs.pipe_file(f"{bucket}/dir/key.bin", b"0123456789")
    assert s3_requests.count(method="PUT") == 1
    assert s3_requests.count(method="PUT", path_contains=f"/{bucket}/dir/key.bin") == 1

    s3_requests.clear()
    assert fs.cat_file(f"{bucket}/dir/key.bin", start=2, end=6) == b"2345"
    assert s3_requests.count(method="GET", ranged=True) == 1
    assert s3_requests.count(method="GET", ranged=False) == 0
    (get,) = [r for r in s3_requests.log if r.method == "GET"]
    assert get.range == "bytes=2-5"
    assert get.status == 206


def test_s3_whole_get_is_not_ranged(s3: S3Bucket, s3_requests: RequestRecorder) -> None:
    s3.fs.pipe_file(f"{s3.bucket}/k", b"abc")
    s3_requests.clear()
    assert s3.fs.cat_file(f"{s3.bucket}/k") == b"abc"
    assert s3_requests.count(method="GET", ranged=False) == 1
    assert s3_requests.count(ranged=True) == 0


def test_s3_buckets_are_fresh_and_unique(s3: S3Bucket, s3_server: MotoS3Server) -> None:
    assert s3.fs.ls(s3.bucket) == []
    assert s3.url == f"s3://{s3.bucket}"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert s3_server.new_bucket_name() != s3_server.new_bucket_name()


def test_http_server_answers_a_range_request_with_206(http_server: FileServer) -> None:
    (http_server.root / "range.bin").write_bytes(b"0123456789")
    http_server.clear()

    status, body = _fetch(http_server.url_for("range.bin"), {"Range": "bytes=2-5"})
    assert (status, body) == (206, b"2345")

    (entry,) = http_server.requests(at_least=1)
    assert (entry.method, entry.path, entry.status) == ("GET", "/range.bin", 206)
    assert entry.range == "bytes=2-5"
    assert entry.body_bytes == 4
    assert http_server.count(method="GET", ranged=True, path_contains="range.bin") == 1


def test_http_server_serves_through_fsspec_http(http_server: FileServer) -> None:
    fsspec = pytest.importorskip("fsspec")
    (http_server.root / "whole.bin").write_bytes(bytes(range(100)))
    http_server.clear()

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    assert fs.cat_file(http_server.url_for("whole.bin"), start=10, end=14) == bytes(range(10, 14))
    entries = http_server.requests(at_least=1)
    ranged = [e for e in entries if e.ranged]
    assert [(e.status, e.range) for e in ranged] == [(206, "bytes=10-13")]


def test_http_server_clear_forgets_earlier_requests(http_server: FileServer) -> None:
    (http_server.root / "a.txt").write_bytes(b"a")
    http_server.clear()
    _fetch(http_server.url_for("a.txt"), {})
    http_server.requests(at_least=1)
    http_server.clear()
    assert http_server.requests() == []
    with pytest.raises(urllib.error.HTTPError):
        _fetch(http_server.url_for("missing.txt"), {})
    (entry,) = http_server.requests(at_least=1)
    assert (entry.status, entry.ranged) == (404, False)


def test_http_server_honours_ranges_and_etag_preconditions(http_server: FileServer) -> None:
    """What the HTTP reads rely on (RFC 9110): ranges, HEAD, and strong ETags.

    ``If-Match`` compares strongly and is evaluated before ``Range``: a chunk GET carrying the
    ETag of a replaced shard gets 412, never bytes of the new shard cut at the old offsets.
    """
    data = bytes(range(100))
    path = http_server.root / "conditional.bin"
    path.write_bytes(data)
    url = http_server.url_for("conditional.bin")
    http_server.clear()

    status, headers, body = _exchange(url, {}, method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "100", b"")
    etag = headers["ETag"]
    assert etag.startswith('"')  # a strong ETag
    ranges = {"bytes=10-13": (10, 14), "bytes=-10": (90, 100), "bytes=95-": (95, 100)}
    for range_, (start, end) in ranges.items():
        status, headers, body = _exchange(url, {"Range": range_, "If-Match": etag})
        assert (status, body) == (206, data[start:end])
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/100"
        assert headers["Content-Length"] == str(end - start)
    for other in ('"0-0"', f"W/{etag}"):  # another ETag; the weak form never matches strongly
        status, _, _ = _exchange(url, {"Range": "bytes=-10", "If-Match": other})
        assert status == 412
    assert _exchange(url, {"If-None-Match": etag})[::2] == (304, b"")
    assert _exchange(url, {"If-None-Match": '"0-0"'})[::2] == (200, data)

    path.write_bytes(data + b"!")  # another size: nginx's ETag has a one-second mtime
    status, _, _ = _exchange(url, {"Range": "bytes=0-0", "If-Match": etag})
    assert status == 412
    entries = http_server.requests(at_least=9)
    assert [(e.method, e.status) for e in entries] == [
        ("HEAD", 200),
        *[("GET", 206)] * 3,
        *[("GET", 412)] * 2,
        ("GET", 304),
        ("GET", 200),
        ("GET", 412),
    ]
    assert [e.body_bytes for e in entries[:4]] == [0, 4, 10, 5]


def test_dask_cluster_runs_in_worker_processes(dask_client: Any) -> None:
    futures = dask_client.map(_pid, range(8), pure=False)
    pids = set(dask_client.gather(futures))
    assert os.getpid() not in pids
    worker_pids = set(dask_client.run(os.getpid).values())
    assert len(worker_pids) == 2
    assert pids <= worker_pids
    assert dask_client.submit(sum, [1, 2, 3]).result() == 6
