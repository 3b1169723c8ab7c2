"""A real HTTP file server on 127.0.0.1 for the remote-input tests and benchmark.

It serves the files of one folder over HTTP/1.1 the way object stores and web servers do: ``HEAD`` and
``GET``, single and multiple byte ranges (``206 Partial Content``, ``multipart/byteranges``), ``ETag`` and
``Last-Modified``, ``416`` for a range past the end. Other modes behave like the servers users meet:
``"norange"`` ignores ``Range`` and always sends the whole file with ``200`` (as some static servers and
proxies do), ``"404"`` / ``"403"`` answer every request with that status, ``"slow"`` waits ``delay_s`` before
answering (to exercise timeouts). It counts requests and body bytes sent (``GET /__stats`` returns them as JSON, ``GET /__reset`` zeroes
them), so a benchmark can report the bytes a remote read fetched.

The server runs in its own process (:func:`serve_folder` starts ``python -m tests.range_server``): rasterio
holds the GIL while GDAL opens a dataset, so a server thread inside the reading process would never answer.

Example:
    >>> with serve_folder(folder) as server:                                      # doctest: +SKIP
    ...     url = server.url("scene.tif")
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

Mode = Literal["range", "norange", "404", "403", "slow"]

_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class FileServer(ThreadingHTTPServer):
    """The server object: its folder, mode and counters (thread-safe)."""

    daemon_threads = True

    def __init__(self, folder: Path, mode: Mode = "range", delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder = folder.resolve()
        self.mode: Mode = mode
        self.delay_s = delay_s
        self.requests = 0
        self.bytes_sent = 0
        self.range_requests = 0
        self._count_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        """The URL of a file of the served folder."""
        return f"{self.base_url}/{name}"

    def count(self, nbytes: int, ranged: bool) -> None:
        with self._count_lock:
            self.requests += 1
            self.bytes_sent += nbytes
            self.range_requests += int(ranged)

    def reset_counters(self) -> None:
        with self._count_lock:
            self.requests = self.bytes_sent = self.range_requests = 0


class _Handler(BaseHTTPRequestHandler):
    server: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        srv = self.server
        if self.path in ("/__stats", "/__reset"):
            if self.path == "/__reset":
                srv.reset_counters()
            payload = json.dumps({"requests": srv.requests, "bytes_sent": srv.bytes_sent,
                                  "range_requests": srv.range_requests}).encode()
            self._send(200, {"Content-Type": "application/json"}, len(payload), body)
            if body:
                self.wfile.write(payload)
            return
        if srv.mode == "slow" and srv.delay_s:
            time.sleep(srv.delay_s)
        if srv.mode in ("404", "403"):
            self._status_only(int(srv.mode), "not found" if srv.mode == "404" else "forbidden", body)
            return
        path = (srv.folder / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        if not path.is_relative_to(srv.folder) or not path.is_file():
            self._status_only(404, "not found", body)
            return
        size = path.stat().st_size
        stat = path.stat()
        etag = '"' + hashlib.blake2s(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=8).hexdigest() + '"'
        common = {"ETag": etag, "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True)}
        header = self.headers.get("Range")
        ranges = None if srv.mode == "norange" or not header else _parse_ranges(header, size)
        if ranges == []:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            srv.count(0, True)
            return
        if srv.mode != "norange":
            common["Accept-Ranges"] = "bytes"
        with open(path, "rb") as fh:
            if ranges is None:
                self._send(200, {**common, "Content-Type": "application/octet-stream"}, size, body)
                if body:
                    self._copy(fh, 0, size)
                srv.count(size if body else 0, False)
            elif len(ranges) == 1:
                start, end = ranges[0]
                self._send(206, {**common, "Content-Type": "application/octet-stream",
                                 "Content-Range": f"bytes {start}-{end}/{size}"}, end - start + 1, body)
                if body:
                    self._copy(fh, start, end - start + 1)
                srv.count(end - start + 1 if body else 0, True)
            else:
                boundary = "rsrag" + os.urandom(8).hex()
                parts = [(f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Range: bytes {s}-{e}/{size}\r\n\r\n").encode() for s, e in ranges]
                tail = f"\r\n--{boundary}--\r\n".encode()
                length = sum(len(p) + (e - s + 1) for p, (s, e) in zip(parts, ranges)) + 2 * (len(ranges) - 1) + len(tail)
                self._send(206, {**common, "Content-Type": f"multipart/byteranges; boundary={boundary}"}, length, body)
                if body:
                    for i, (part, (s, e)) in enumerate(zip(parts, ranges)):
                        if i:
                            self.wfile.write(b"\r\n")
                        self.wfile.write(part)
                        self._copy(fh, s, e - s + 1)
                    self.wfile.write(tail)
                srv.count(sum(e - s + 1 for s, e in ranges) if body else 0, True)

    def _send(self, status: int, headers: dict[str, str], length: int, body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _copy(self, fh, start: int, length: int) -> None:  # type: ignore[no-untyped-def]
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(length, 1 << 20))
            if not chunk:
                break
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            length -= len(chunk)

    def _status_only(self, status: int, text: str, body: bool) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)
        self.server.count(0, False)


def _parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Inclusive byte ranges of a ``Range`` header; ``None`` when it is not a bytes range, ``[]`` when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    out: list[tuple[int, int]] = []
    for item in spec.split(","):
        match = _RANGE.match(item)
        if match is None:
            return None
        first, last = match.groups()
        if not first and not last:
            return None
        if not first:  # suffix range: the last N bytes
            n = int(last)
            if n == 0:
                continue
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if start >= size or end < start:
                continue
        out.append((start, end))
    return out


@dataclass(frozen=True)
class RunningServer:
    """A server running in a child process: its base URL, and its counters over HTTP."""

    base_url: str

    def url(self, name: str) -> str:
        """The URL of a file of the served folder."""
        return f"{self.base_url}/{name}"

    def stats(self) -> dict[str, Any]:
        """Requests, range requests and body bytes served since the start (or the last :meth:`reset`)."""
        with urllib.request.urlopen(self.base_url + "/__stats", timeout=10) as response:
            return dict(json.load(response))

    def reset(self) -> None:
        """Zero the counters."""
        urllib.request.urlopen(self.base_url + "/__reset", timeout=10).close()


@contextmanager
def serve_folder(folder: str | os.PathLike[str], mode: Mode = "range", delay_s: float = 0.0) -> Iterator[RunningServer]:
    """Serve ``folder`` on a free loopback port from a child process for the duration of the block."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "tests.range_server", str(folder), "--mode", mode, "--delay", str(delay_s)]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"the test HTTP server did not start (exit status {proc.poll()})")
        yield RunningServer(line)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--mode", default="range", choices=["range", "norange", "404", "403", "slow"])
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = FileServer(Path(args.folder), args.mode, args.delay)
    print(server.base_url, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
