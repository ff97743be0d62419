"""A real S3-API server on loopback (moto) whose requests are counted.

Why a WSGI middleware: moto's ``ThreadedMotoServer`` builds its app in ``_server_entry``
(``DomainDispatcherApplication(create_backend_app)``) and hands it to werkzeug's
``make_server``; werkzeug's request handler calls ``server.app`` for every request, so replacing
that attribute after ``start()`` sees every request the clients send, with method, path, query
and ``Range`` header.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from _common import MARK_PREFIX, METADATA_NAMES
from moto.server import ThreadedMotoServer

KEY: Final = "testing"
REGION: Final = "us-east-1"
BUCKET: Final = "bench"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Request:
    """One request seen by the server."""

    method: str
    path: str
    query: str
    ranged: bool


@dataclass
class CountingMiddleware:
    """Record every request, then pass it on to the wrapped WSGI app."""

    app: WSGIApp
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(
            environ.get("REQUEST_METHOD", "?"),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            "HTTP_RANGE" in environ,
        )
        if request.path.startswith(MARK_PREFIX):  # a worker's phase boundary, not S3
            request = Request("MARK", request.path[len(MARK_PREFIX) :], "", False)
            with self.lock:
                self.requests.append(request)
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        with self.lock:
            self.requests.append(request)
        return self.app(environ, start_response)

    def take(self) -> list[Request]:
        """Return the requests recorded since the last call and forget them."""
        with self.lock:
            taken, self.requests = self.requests, []
        return taken


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class CountingS3Server:
    """Moto's threaded S3 server on 127.0.0.1 with a request counter and one bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.counter: CountingMiddleware | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()
        wsgi = self.server._server  # set by start(); see the module docstring
        if wsgi is None:
            raise RuntimeError("moto server did not start")
        self.counter = CountingMiddleware(wsgi.app)
        wsgi.app = self.counter
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
            region_name=REGION,
        )
        client.create_bucket(Bucket=BUCKET)
        self.take()

    def stop(self) -> None:
        self.server.stop()

    def config(self) -> dict[str, str]:
        """Return what a worker needs to reach the bucket."""
        return {
            "endpoint": self.endpoint,
            "bucket": BUCKET,
            "key": KEY,
            "secret": KEY,
            "region": REGION,
        }

    def take(self) -> list[Request]:
        if self.counter is None:
            raise RuntimeError("server not started")
        return self.counter.take()


def split_phases(requests: list[Request]) -> dict[str, list[Request]]:
    """Group requests by the phase mark that precedes them (``"setup"`` before any mark)."""
    phases: dict[str, list[Request]] = {}
    label = "setup"
    for request in requests:
        if request.method == "MARK":
            label = request.path
            phases.setdefault(label, [])
        else:
            phases.setdefault(label, []).append(request)
    return phases


def object_key(request: Request) -> str:
    """Return the object key of a path-style request ('' for bucket-level requests)."""
    parts = request.path.lstrip("/").split("/", 1)
    return parts[1] if len(parts) == 2 else ""


def classify(requests: list[Request]) -> dict[str, int]:
    """Count requests by kind: data/metadata PUT and GET, ranged GET, HEAD, LIST, other."""
    counts: Counter[str] = Counter()
    for request in requests:
        key = object_key(request)
        is_meta = key.rsplit("/", 1)[-1] in METADATA_NAMES
        if request.method == "GET" and (not key or "list-type" in request.query):
            kind = "LIST"
        elif request.method in ("GET", "PUT"):
            kind = request.method + ("_meta" if is_meta else "_data")
            if request.method == "GET" and request.ranged and not is_meta:
                counts["GET_data_ranged"] += 1
        elif request.method in ("HEAD", "DELETE", "POST"):
            kind = request.method
        else:
            kind = "other"
        counts[kind] += 1
    counts["total"] = len(requests)
    counts["data_objects_got"] = len(
        {object_key(r) for r in requests if r.method == "GET" and object_key(r)}
        - {object_key(r) for r in requests if object_key(r).rsplit("/", 1)[-1] in METADATA_NAMES}
    )
    return dict(counts)
