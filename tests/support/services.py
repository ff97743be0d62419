"""Real loopback services for the tests: a moto S3 server and HTTP file servers, counting requests.

The HTTP file server is nginx when it is installed and, always, aiohttp's static file handler (a
dependency of the test extra), so a fresh machine runs every HTTP test. The fixtures in
``conftest.py`` are thin wrappers around the classes here, so a benchmark or a script can start
the same services without pytest.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, NamedTuple

LOOPBACK: Final = "127.0.0.1"
AWS_ENV: Final[dict[str, str]] = {
    "AWS_ACCESS_KEY_ID": "foo",
    "AWS_SECRET_ACCESS_KEY": "bar",
    "AWS_DEFAULT_REGION": "us-east-1",
}
AWS_ENV_UNSET: Final = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE")
NGINX_CANDIDATES: Final = (
    "/usr/sbin/nginx",
    "/usr/local/sbin/nginx",
    "/usr/local/nginx/sbin/nginx",
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def free_port() -> int:
    """Return a TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """Return whether ``127.0.0.1:port`` accepted a connection within ``timeout`` seconds.

    Gives up early if ``process`` (the server meant to listen there) has exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def no_proxy_env() -> dict[str, str]:
    """Return ``NO_PROXY``/``no_proxy`` values that keep loopback traffic off any proxy."""
    current = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    hosts = ",".join(h for h in (current, "127.0.0.1", "localhost") if h)
    return {"NO_PROXY": hosts, "no_proxy": hosts}


# --- request counting -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """One request a service received."""

    method: str
    path: str
    query: str
    range: str | None  # the Range header, if any
    status: int | None = None  # None while the response has not started

    @property
    def ranged(self) -> bool:
        return self.range is not None


def matches(
    request: Request, method: str | None, ranged: bool | None, path_contains: str | None
) -> bool:
    """Return whether ``request`` passes every filter that is not ``None``."""
    return (
        (method is None or request.method == method.upper())
        and (ranged is None or request.ranged == ranged)
        and (path_contains is None or path_contains in request.path)
    )


class RequestRecorder:
    """Thread-safe log of the requests a WSGI application received.

    Examples
    --------
    >>> recorder = RequestRecorder()
    >>> recorder.record(Request("GET", "/b/k", "", "bytes=0-3"))
    >>> recorder.count(method="GET", ranged=True), recorder.count(method="PUT")
    (1, 0)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: list[Request] = []

    @property
    def log(self) -> list[Request]:
        """Return a copy of the requests recorded since the last ``clear()``, oldest first."""
        with self._lock:
            return list(self._log)

    def record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def count(
        self,
        method: str | None = None,
        ranged: bool | None = None,
        path_contains: str | None = None,
    ) -> int:
        """Return how many recorded requests match every filter given."""
        return sum(matches(r, method, ranged, path_contains) for r in self.log)

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """Return a WSGI application that records each request, then calls ``app``."""

        def counting_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            request = Request(
                method=str(environ.get("REQUEST_METHOD", "")).upper(),
                path=str(environ.get("PATH_INFO", "")),
                query=str(environ.get("QUERY_STRING", "")),
                range=environ.get("HTTP_RANGE"),
            )
            recorded = False

            def recording_start_response(status: str, *args: Any) -> Any:
                # Recorded here, before the client can see any response byte, so a test that
                # got its response always finds its request in the log.
                nonlocal recorded
                if not recorded:
                    recorded = True
                    self.record(dataclasses.replace(request, status=int(status.split()[0])))
                return start_response(status, *args)

            try:
                return app(environ, recording_start_response)
            except BaseException:
                if not recorded:
                    self.record(request)
                raise

        return counting_app


# --- moto S3 ----------------------------------------------------------------------------------


def one_at_a_time(app: WSGIApp) -> WSGIApp:
    """Return a WSGI application that handles one request at a time, body included.

    Why: moto checks a PUT's or DELETE's ``If-Match`` and then writes, with no lock spanning
    both, so two conditional requests handled at once can both pass their check; a real object
    store decides each conditional request atomically. Serialising the requests gives moto that
    atomicity (the response body is built inside the lock as well).
    """
    lock = threading.Lock()

    def serialised_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with lock:
            result = app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    return serialised_app


class MotoS3Server:
    """moto's ``ThreadedMotoServer`` on a free loopback port, counting requests by method.

    Why the counter sits where it does: ``ThreadedMotoServer`` builds its werkzeug server in a
    thread and serves ``server.app``, which werkzeug's request handler looks up per request, so
    replacing that attribute after ``start()`` puts the counting middleware in front of every
    request without copying moto's start-up code. With ``atomic``, requests are handled one at a
    time (:func:`one_at_a_time`), so conditional writes are decided atomically, as on S3.
    """

    def __init__(self, atomic: bool = False) -> None:
        self.requests = RequestRecorder()
        self.atomic = atomic
        self._server: Any = None
        self.endpoint_url = ""

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        server.start()
        wsgi_server = getattr(server, "_server", None)
        if wsgi_server is None or not callable(getattr(wsgi_server, "app", None)):
            server.stop()
            raise RuntimeError("ThreadedMotoServer has no _server.app: moto changed its internals")
        app = one_at_a_time(wsgi_server.app) if self.atomic else wsgi_server.app
        wsgi_server.app = self.requests.wrap(app)
        host, port = server.get_host_and_port()
        self._server = server
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def storage_options(self) -> dict[str, Any]:
        """Return fsspec ``storage_options`` for this server, usable in other processes too."""
        return {
            "anon": False,
            "key": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "secret": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            # no region_name: s3fs would send it as a LocationConstraint, which us-east-1 rejects
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    def filesystem(self) -> Any:
        """Return a fresh ``s3fs.S3FileSystem`` talking to this server (no instance cache)."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)
        fs.invalidate_cache()
        return fs

    @staticmethod
    def new_bucket_name() -> str:
        return f"test-{uuid.uuid4().hex[:16]}"


# --- HTTP file servers (nginx, aiohttp) -------------------------------------------------------

LOG_FORMAT: Final = r"$request_method\t$uri\t$args\t$status\t$http_range\t$body_bytes_sent"
TEMP_PATH_DIRECTIVES: Final = {
    "client-body": "client_body_temp_path",
    "proxy": "proxy_temp_path",
    "fastcgi": "fastcgi_temp_path",
    "uwsgi": "uwsgi_temp_path",
    "scgi": "scgi_temp_path",
}
KEEPALIVE_S: Final = 5


@dataclasses.dataclass(frozen=True)
class AccessLogEntry(Request):
    """One line of an access log written with ``LOG_FORMAT``."""

    body_bytes: int = 0


def find_nginx() -> Path | None:
    """Return the nginx executable, or ``None`` if it is not installed."""
    found = shutil.which("nginx")
    candidates = [found] if found else []
    candidates += [c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)]
    return Path(candidates[0]) if candidates else None


def _dash_to_none(value: str) -> str | None:
    return None if value == "-" else value


def parse_access_line(line: str) -> AccessLogEntry:
    """Parse one access-log line written with ``LOG_FORMAT``.

    Examples
    --------
    >>> parse_access_line("GET\\t/a.bin\\t-\\t206\\tbytes=2-5\\t4").range
    'bytes=2-5'
    """
    method, uri, args, status, range_, sent = line.rstrip("\n").split("\t")
    return AccessLogEntry(
        method=method,
        path=uri,
        query=_dash_to_none(args) or "",
        range=_dash_to_none(range_),
        status=int(status),
        body_bytes=int(sent),
    )


def nginx_config(workdir: Path, root: Path, port: int, nginx: Path) -> str:
    """Return an nginx.conf serving ``root`` on ``127.0.0.1:port`` with every path in ``workdir``.

    Why the temp-path directives are derived from ``nginx -V``: a directive of a module that the
    binary was built without is a fatal configuration error.
    """
    built = subprocess.run([str(nginx), "-V"], capture_output=True, text=True, check=False)
    temp_paths = [
        f"    {directive} {workdir / 'temp' / name};"
        for name, directive in TEMP_PATH_DIRECTIVES.items()
        if f"--http-{name}-temp-path" in built.stderr
    ]
    # As root, nginx workers would switch to "nobody", who cannot read pytest's 0700 tmp dirs.
    user = f"user {_user_and_group()};" if os.geteuid() == 0 else ""
    temp = "\n".join(temp_paths)
    return f"""\
daemon off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
{user}
events {{
    worker_connections 128;
}}
http {{
    default_type application/octet-stream;
    log_format counting "{LOG_FORMAT}";
    access_log {workdir / "access.log"} counting;
{temp}
    sendfile on;
    keepalive_timeout {KEEPALIVE_S};
    server {{
        listen {LOOPBACK}:{port};
        server_name localhost;
        root {root};
        autoindex on;
    }}
}}
"""


def _user_and_group() -> str:
    import grp
    import pwd

    return f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"


def format_access_line(
    method: str, path: str, query: str, status: int, range_: str | None, body_bytes: int
) -> str:
    """Return the access-log line nginx writes with ``LOG_FORMAT`` for this request.

    Examples
    --------
    >>> parse_access_line(format_access_line("GET", "/a.bin", "", 206, "bytes=-4", 4)).range
    'bytes=-4'
    """
    fields = (method, path, query or "-", str(status), range_ or "-", str(body_bytes))
    return "\t".join(fields) + "\n"


class FileServer:
    """A server process serving ``root`` over HTTP on a free loopback port, counting requests.

    Requests are counted from an access log in ``LOG_FORMAT``. The server writes a log line just
    after it sends the response, so a client can see the response a moment before its line
    exists: pass ``at_least`` to ``requests()`` to wait for the lines you expect. Subclasses say
    how to start the process (``command``) and stop it (``stop_signal``).
    """

    name = ""
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.access_log = workdir / "access.log"
        self.stderr_log = workdir / "stderr.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def url_for(self, relative: str) -> str:
        return f"{self.url}/{relative.lstrip('/')}"

    def command(self, port: int) -> list[str]:
        """Return the command that serves ``root`` on ``127.0.0.1:port`` in the foreground."""
        raise NotImplementedError

    def start(self, attempts: int = 3) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        errors = []
        for _ in range(attempts):  # another process may take the free port before ours does
            self.port = free_port()
            cmd = self.command(self.port)
            with self.stderr_log.open("wb") as stderr:  # a file: a full pipe would block it
                process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=stderr)
            if wait_for_port(self.port, 10.0, process):
                self._process = process
                return
            process.kill()
            process.wait()
            errors.append(self.stderr_log.read_text(errors="replace"))
        raise RuntimeError(f"{self.name} did not start on {LOOPBACK}:\n" + "\n".join(errors))

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(self.stop_signal)  # graceful: finish responses, flush the log
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read_entries(self) -> list[AccessLogEntry]:
        try:
            with self.access_log.open("rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1].decode()
        return [parse_access_line(line) for line in complete.splitlines() if line]

    def requests(self, at_least: int = 0, timeout: float = 5.0) -> list[AccessLogEntry]:
        """Return the requests logged since the last ``clear()``, oldest first.

        Waits up to ``timeout`` seconds for at least ``at_least`` of them to be logged.
        """
        deadline = time.monotonic() + timeout
        entries = self._read_entries()
        while len(entries) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
            entries = self._read_entries()
        return entries

    def count(
        self,
        method: str | None = None,
        ranged: bool | None = None,
        path_contains: str | None = None,
        at_least: int = 0,
    ) -> int:
        """Return how many logged requests match every filter given (see ``requests``)."""
        entries = self.requests(at_least=at_least)
        return sum(matches(e, method, ranged, path_contains) for e in entries)

    def clear(self) -> None:
        """Forget the requests logged so far (the log file itself is kept)."""
        try:
            self._log_offset = self.access_log.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0


class NginxServer(FileServer):
    """Debian's nginx serving ``root``: ranges, strong ETags (one-second mtime resolution)."""

    name = "nginx"
    stop_signal = signal.SIGQUIT

    def __init__(self, workdir: Path, nginx: Path) -> None:
        super().__init__(workdir)
        self.nginx = nginx

    def command(self, port: int) -> list[str]:
        for name in TEMP_PATH_DIRECTIVES:
            (self.workdir / "temp" / name).mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_config(self.workdir, self.root, port, self.nginx))
        return [str(self.nginx), "-p", str(self.workdir), "-e", "stderr", "-c", str(conf)]


class AiohttpServer(FileServer):
    """aiohttp's static file handler serving ``root`` in a process of its own.

    Why aiohttp: it is installed with the test extra (fsspec's HTTP client is aiohttp), and its
    ``FileResponse`` does what the tests need from nginx: single byte ranges (``bytes=a-b``,
    ``bytes=a-``, suffix ``bytes=-n``) answered 206 with ``Content-Range``, ``HEAD``,
    ``Content-Length``, and strong ETags (nanosecond mtime and size) checked by ``If-Match``
    (412, strong comparison) and ``If-None-Match`` (304) before any range is applied, as RFC
    9110 section 13.2.2 orders. Only the access log is ours (``serve_directory``).
    """

    name = "aiohttp"

    def command(self, port: int) -> list[str]:
        # -P: this file's folder must not shadow anything the server imports
        script = [sys.executable, "-P", str(Path(__file__).resolve()), "serve"]
        return [*script, str(self.root), str(port), str(self.access_log)]


def serve_directory(root: Path, port: int, access_log: Path) -> None:
    """Serve ``root`` on ``127.0.0.1:port`` with aiohttp until SIGTERM, logging each request.

    Each response is logged to ``access_log`` in ``LOG_FORMAT`` just before its headers are sent,
    so, unlike nginx's, the line is there by the time the client sees the response. The body size
    logged is the response's ``Content-Length`` (0 for ``HEAD`` and 304), which is what nginx's
    ``$body_bytes_sent`` holds for a response sent in full.
    """
    from aiohttp import web

    log = access_log.open("a", encoding="utf-8")

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        empty = request.method == "HEAD" or response.status == 304
        body_bytes = 0 if empty else response.content_length or 0
        range_ = request.headers.get("Range")
        line = format_access_line(
            request.method, request.path, request.query_string, response.status, range_, body_bytes
        )
        log.write(line)
        log.flush()

    app = web.Application()
    app.on_response_prepare.append(record)
    app.router.add_static("/", root, show_index=True)
    web.run_app(
        app,
        host=LOOPBACK,
        port=port,
        access_log=None,
        keepalive_timeout=KEEPALIVE_S,
        shutdown_timeout=2.0,
        print=None,
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 5:
        sys.exit(f"usage: python -P {sys.argv[0]} serve ROOT PORT ACCESS_LOG")
    serve_directory(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))


class S3Bucket(NamedTuple):
    """A fresh, empty bucket and a filesystem to reach it (unpacks as ``fs, bucket``)."""

    fs: Any  # s3fs.S3FileSystem
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"
