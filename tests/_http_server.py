"""A local HTTP file server with faults on demand, for the download tests.

Serves byte strings registered under paths, honours ``Range: bytes=N-`` (206 with
``Content-Range``; 416 past the end) and HEAD, and logs every request. Faults queued for a
path are used one per request:

- ``"404"``, ``"500"``: answer with that status;
- ``"truncate"``: announce the full Content-Length, send half of the body, close;
- ``"ignore-range"``: answer ``200`` with the whole file even when a range was asked;
- ``"wrong-range"``: answer a range with ``206`` but from another offset (the middle);
- ``"html"``: answer ``200`` with an HTML error page (``Content-Type: text/html``);
- ``"html-as-binary"``: the same page, announced as ``application/octet-stream``;
- ``"unsized"``: the whole file without ``Content-Length`` (the end is the connection's close);
- ``"unsized-truncate"``: half the file without ``Content-Length``, then close;
- ``"endless"``: an endless body of zeros without ``Content-Length``;
- ``"trickle"``: announce the full ``Content-Length``, then send one byte every 20 ms.

The streaming faults stop as soon as the client hangs up.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque] = defaultdict(deque)
        self.log: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` and return its full URL."""
        self.files[path] = data
        return self.url + path

    def fail(self, path: str, *faults: str) -> None:
        self.faults[path].extend(faults)

    def requests(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(owner: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _status(self, code: int, headers: dict | None = None) -> None:
            owner.log.append(Request(self.command, self.path, self.headers.get("Range"), code))
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)

        def _serve(self, body: bool) -> None:
            faults = owner.faults[self.path]
            fault = faults.popleft() if faults else None
            data = owner.files.get(self.path)
            if data is not None and fault in _STREAMING:
                self._stream(fault, data)
                return
            if fault in ("404", "500") or data is None:
                code = int(fault) if fault else 404
                message = b"error\n"
                self._status(code, {"Content-Length": str(len(message)), "Connection": "close"})
                self.end_headers()
                if body:
                    self.wfile.write(message)
                self.close_connection = True
                return
            start = 0
            requested = self.headers.get("Range")
            if requested and fault != "ignore-range":
                start = int(requested.removeprefix("bytes=").split("-")[0])
                if fault == "wrong-range":
                    start = len(data) // 2 if start != len(data) // 2 else 1
                if start >= len(data):
                    self._status(416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
                    self.end_headers()
                    return
                self._status(206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
            else:
                self._status(200)
            payload = data[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            if fault == "truncate":
                self.send_header("Connection", "close")
                payload = payload[: len(payload) // 2]
                self.close_connection = True
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _stream(self, fault: str, data: bytes) -> None:
            html = fault.startswith("html")
            self._status(
                200,
                {"Content-Type": "text/html" if fault == "html" else "application/octet-stream", "Connection": "close"},
            )
            if html:
                data = HTML_PAGE
            if html or fault == "trickle":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.close_connection = True
            try:
                if fault == "endless":
                    while True:
                        self.wfile.write(bytes(1 << 16))
                elif fault == "trickle":
                    for index in range(len(data)):
                        self.wfile.write(data[index : index + 1])
                        self.wfile.flush()
                        time.sleep(0.02)
                else:
                    self.wfile.write(data[: len(data) // 2] if fault == "unsized-truncate" else data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

    return Handler


HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in.</body></html>\n"
_STREAMING = frozenset({"html", "html-as-binary", "unsized", "unsized-truncate", "endless", "trickle"})
