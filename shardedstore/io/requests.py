"""The requests of the fsspec backend on S3 and HTTP: suffix and range GETs, conditional writes.

s3fs and fsspec's HTTP file system are driven directly (their coroutines), since their file
interfaces neither return the ETag of what they read nor send a precondition with a PUT.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from shardedstore.errors import StaleIndexError
from shardedstore.io.base import (
    Replacement,
)

__all__ = [
    "CONFLICT",
    "CONFLICT_CODES",
    "REMOTE",
    "Conflict",
    "Suffix",
    "has_conditional_writes",
    "precondition_failed",
    "total_size",
]


#: S3 error codes of a failed or conflicting precondition (412, 409)
CONFLICT_CODES: Final = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "OperationAborted"}
)


Suffix = tuple[bytes, int | None, str | None]  # (bytes, object size, ETag)


async def _s3_get(fs: Any, path: str, **kw: Any) -> tuple[bytes, dict[str, Any]]:
    from s3fs.core import _error_wrapper, version_id_kw

    bucket, key, version = fs.split_path(path)

    async def call() -> tuple[bytes, dict[str, Any]]:
        resp = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, **version_id_kw(version), **kw
        )
        try:
            data = await resp["Body"].read()
        finally:
            resp["Body"].close()
        return data, resp

    try:
        return await _error_wrapper(call, retries=fs.retries)  # type: ignore[no-any-return]
    except Exception as err:
        if precondition_failed(err):
            raise StaleIndexError(path) from err
        raise


@functools.cache
def _botocore_sends_conditions() -> bool:
    """Tell whether botocore knows ``IfMatch``/``IfNoneMatch`` of PutObject and DeleteObject.

    Why: s3fs drops the arguments an operation's model lacks, so with an older botocore
    a conditional PUT would silently go out unconditional.
    """
    try:
        import botocore.session
    except ImportError:
        return False
    model = botocore.session.get_session().get_service_model("s3")
    put = model.operation_model("PutObject").input_shape
    delete = model.operation_model("DeleteObject").input_shape
    return (
        put is not None
        and delete is not None
        and {"IfMatch", "IfNoneMatch"} <= set(put.members)
        and "IfMatch" in delete.members
    )


def has_conditional_writes(fs: Any) -> bool:
    """Tell whether shard writes through ``fs`` can be conditional (s3fs, recent botocore)."""
    is_s3 = any(cls.__name__ == "S3FileSystem" for cls in type(fs).__mro__)
    return is_s3 and _botocore_sends_conditions()


class Conflict:
    """The result of a conditional request whose condition failed."""


CONFLICT: Final = Conflict()


async def s3_read_versioned(fs: Any, path: str) -> tuple[bytes | None, str | None]:
    try:
        data, resp = await _s3_get(fs, path)
    except FileNotFoundError:
        return None, None
    return data, resp.get("ETag")


async def s3_replace(fs: Any, path: str, item: Replacement) -> str | Conflict | None:
    """Write or delete one shard as ``item`` says; return its new ETag or ``CONFLICT``."""
    bucket, key, _ = fs.split_path(path)
    condition: dict[str, str] = {}
    if item.conditional:
        condition = {"IfMatch": item.etag} if item.etag is not None else {"IfNoneMatch": "*"}
    try:
        if item.data is None:
            if item.conditional and item.etag is None:
                return None  # read as absent, and to stay absent: nothing to do
            await fs._call_s3("delete_object", Bucket=bucket, Key=key, **condition)
            return None
        resp = await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=item.data, **condition)
    except FileNotFoundError:
        if "IfMatch" not in condition:
            raise  # no object was named by the condition: the bucket is missing
        if item.data is None:
            return None  # deleted meanwhile: absent, as asked
        return CONFLICT  # If-Match on a shard deleted since it was read
    except Exception as err:
        if precondition_failed(err, CONFLICT_CODES):
            return CONFLICT
        raise
    return resp.get("ETag")  # type: ignore[no-any-return]


def precondition_failed(
    err: BaseException | None, codes: frozenset[str] = frozenset({"PreconditionFailed"})
) -> bool:
    """Tell whether an s3fs error (or its cause) is S3's 412, or has an error code in ``codes``."""
    seen = 0
    while err is not None and seen < 8:
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in codes or status == 412:
                return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


async def _s3_suffix(fs: Any, path: str, n: int) -> Suffix:
    data, resp = await _s3_get(fs, path, Range=f"bytes=-{n}")
    status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 206)
    return data, total_size(resp.get("ContentRange"), status, len(data)), resp.get("ETag")


async def _s3_range(fs: Any, path: str, start: int, end: int, etag: str | None) -> bytes:
    kw: dict[str, Any] = {"Range": f"bytes={start}-{end - 1}"}
    if etag:
        kw["IfMatch"] = etag
    data, _ = await _s3_get(fs, path, **kw)
    return data


async def _http_get(fs: Any, url: str, extra: dict[str, str]) -> tuple[bytes, int, Any]:
    session = await fs.set_session()
    kw = fs.kwargs.copy()
    headers = dict(kw.pop("headers", {}) or {})
    headers.update(extra)
    async with session.get(fs.encode_url(url), headers=headers, **kw) as r:
        data = await r.read()
        if r.status == 412:
            raise StaleIndexError(url)
        fs._raise_not_found_for_status(r, url)
        return data, r.status, r.headers


async def _http_suffix(fs: Any, url: str, n: int) -> Suffix:
    data, status, headers = await _http_get(fs, url, {"Range": f"bytes=-{n}"})
    return data, total_size(headers.get("Content-Range"), status, len(data)), headers.get("ETag")


async def _http_range(fs: Any, url: str, start: int, end: int, etag: str | None) -> bytes:
    extra = {"Range": f"bytes={start}-{end - 1}"}
    if etag:
        extra["If-Match"] = etag
    data, _, _ = await _http_get(fs, url, extra)
    return data


REMOTE: dict[str, tuple[Any, Any]] = {
    "S3FileSystem": (_s3_suffix, _s3_range),
    "HTTPFileSystem": (_http_suffix, _http_range),
}


def total_size(content_range: str | None, status: int, length: int) -> int | None:
    """Return the object size from a suffix response (``None`` if it does not say).

    >>> total_size("bytes 100-199/1234", 206, 100)
    1234
    >>> total_size(None, 200, 57)  # the whole object came back
    57
    """
    if status == 200:
        return length
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    return None
