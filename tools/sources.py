"""Where a scene comes from: a local path or a remote object, and how GDAL reads it.

:func:`parse_source` turns what a user typed into a :class:`Source`: its normalised text (an absolute local
path, or a URL), its kind, and the path GDAL opens (``/vsicurl/`` for ``http(s)://``, ``/vsis3/`` for
``s3://``, ``/vsigs/`` for ``gs://``, ``/vsiaz/`` for ``az://``). Restricted contexts use :func:`is_remote`
and :func:`normalise_source` to apply their allow-lists to exactly what will be opened.

Remote objects are read by byte ranges through GDAL's virtual file systems. :func:`apply_remote_defaults`
sets retries, timeouts and cache sizes (:data:`REMOTE_DEFAULTS`) for every remote read of the process, each
only where the user has not set the same GDAL variable in the environment; :func:`open_options` are the
options in force while a remote dataset opens (no directory listing, no side-car probing). Credentials come
from GDAL's usual environment: ``AWS_*`` / ``~/.aws`` for S3, ``GOOGLE_APPLICATION_CREDENTIALS`` or
``GS_*`` for Google Cloud Storage, ``AZURE_STORAGE_*`` for Azure, and ``GDAL_HTTP_HEADERS``,
``GDAL_HTTP_USERPWD``, ``GDAL_HTTP_BEARER`` for plain HTTP servers.

:func:`probe_remote` checks a remote object before GDAL opens it and fingerprints it (size, ETag or
Last-Modified, first and last 64 KiB): an unreachable host, a timeout, 401/403, 404 and a server that
ignores ``Range`` each get their own clear error (:mod:`rsrag.tools.errors`) instead of GDAL's generic one.
HTTP(S) objects are probed with the standard library; cloud objects through GDAL's own VSI C functions
(the library rasterio loaded), so they use exactly the credentials and endpoints GDAL reads with.

Example:
    >>> parse_source("https://data.example.org/scene.tif").gdal_path
    '/vsicurl/https://data.example.org/scene.tif'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import email.utils
import glob
import hashlib
import os
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import (
    RangeRequestsUnsupportedError,
    RasterNotFoundError,
    RasterOpenError,
    RasterReadError,
    RemoteAccessError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    RsragError,
    SourceError,
)

SourceKind = Literal["local", "http", "s3", "gs", "az"]

#: URL scheme -> (kind, GDAL virtual file system prefix).
SCHEMES: dict[str, tuple[SourceKind, str]] = {
    "http": ("http", "/vsicurl/"), "https": ("http", "/vsicurl/"),
    "s3": ("s3", "/vsis3/"), "gs": ("gs", "/vsigs/"), "az": ("az", "/vsiaz/"),
}
_VSI_PREFIXES = {"/vsis3/": "s3", "/vsigs/": "gs", "/vsiaz/": "az"}

#: GDAL settings for remote reads, applied once per process where the environment does not set them.
REMOTE_DEFAULTS: dict[str, str] = {
    "GDAL_HTTP_TIMEOUT": "30",                    # seconds for one request
    "GDAL_HTTP_CONNECTTIMEOUT": "10",             # seconds to connect
    "GDAL_HTTP_MAX_RETRY": "3",                   # retries on 429 / 5xx / connection resets
    "GDAL_HTTP_RETRY_DELAY": "0.5",               # seconds before the first retry (then doubled)
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # one request for adjacent tiles
    "GDAL_HTTP_MULTIRANGE": "SERIAL",             # ranges through the download cache: the parallel default
                                                  # re-downloaded overlapping tiles, 5.6x the bytes (BENCHMARKS.md)
    "GDAL_HTTP_MULTIPLEX": "YES",                 # HTTP/2 multiplexing where the server offers it
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",       # a COG's header and tile index in the first request
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),    # bytes of downloaded blocks kept per process
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(16 << 20),              # bytes per open remote file
}
#: Raster file suffixes: a remote path ending with one makes GDAL fetch no other file beside it; a folder's
#: files with one are its images (catalogs, the advice for a folder given as an image).
RASTER_SUFFIXES = (".tif", ".tiff", ".gtiff", ".cog", ".png", ".jpg", ".jpeg", ".jp2", ".j2k", ".gif", ".bmp",
                   ".webp", ".vrt", ".img")
PROBE_BYTES = 65536
"""Bytes read from the start and from the end of a remote object for its fingerprint."""

_defaults_applied = False
_defaults_lock = threading.Lock()


class Source(BaseModel):
    """A parsed source.

    Attributes:
        text: the normalised source: an absolute local path, or a URL (``https://host/path``, ``s3://bucket/key``).
        kind: ``local``, ``http`` (http and https), ``s3``, ``gs`` or ``az``.
        gdal_path: what GDAL opens.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    kind: SourceKind
    gdal_path: str

    @property
    def is_remote(self) -> bool:
        return self.kind != "local"

    @property
    def local_path(self) -> Path | None:
        """The local file, or ``None`` for a remote source."""
        return Path(self.text) if self.kind == "local" else None

    @property
    def name(self) -> str:
        """The last path component (``scene.tif``)."""
        if self.kind == "local":
            return Path(self.text).name
        return urlsplit(self.text).path.rstrip("/").rsplit("/", 1)[-1] or self.text

    @property
    def suffix(self) -> str:
        """The lower-case suffix of :attr:`name` (``.tif``), or ``""``."""
        name = self.name
        return name[name.rfind("."):].lower() if "." in name else ""

    def __str__(self) -> str:
        return self.text


class RemotePath(str):
    """A remote scene's location where a local scene has a :class:`~pathlib.Path`: ``str()`` is the URL, and
    ``name``, ``suffix`` and ``stem`` are those of its last path component."""

    @property
    def name(self) -> str:
        return urlsplit(str(self)).path.rstrip("/").rsplit("/", 1)[-1] or str(self)

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rfind("."):] if "." in name else ""

    @property
    def stem(self) -> str:
        name = self.name
        return name[:name.rfind(".")] if "." in name else name


class RemoteInfo(BaseModel):
    """What a probe learned about a remote object."""

    model_config = ConfigDict(frozen=True)

    url: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    fingerprint: str
    """Content identity (hex, 32 chars): size, ETag or Last-Modified, the first and last 64 KiB."""


# --- parsing --------------------------------------------------------------------------------------------

_MANGLED = re.compile(r"^(https?|s3|gs|az):/(?!/)", re.IGNORECASE)


def parse_source(source: str | os.PathLike[str] | Source) -> Source:
    """Parse a local path or a URL.

    Accepted: a local path (``~`` expanded, made absolute; ``file://`` URLs too), ``http(s)://host/path``,
    ``s3://bucket/key``, ``gs://bucket/key``, ``az://container/blob``, and GDAL's own ``/vsicurl/URL``,
    ``/vsis3/``, ``/vsigs/``, ``/vsiaz/`` paths. A URL that went through :class:`~pathlib.Path` (which
    folds ``https://`` into ``https:/``) is recognised when no such local file exists.

    Raises:
        SourceError: a URL without a host, bucket or object key, or with a scheme GDAL cannot read.
    """
    if isinstance(source, Source):
        return source
    text = os.fspath(source).strip()
    if not text:
        raise SourceError("the image source is empty; give a file path or an http(s)://, s3://, gs:// or az:// URL")
    if text.startswith("/vsicurl/"):
        text = text[len("/vsicurl/"):]
    for prefix, scheme in _VSI_PREFIXES.items():
        if text.startswith(prefix):
            text = f"{scheme}://{text[len(prefix):]}"
    if text.startswith("/vsi") and not Path(text).exists():  # /vsizip/, /vsitar/, /vsimem/, /vsistdin/, ...
        prefix = text.split("/")[1]
        raise SourceError(f"{text}: GDAL's /{prefix}/ paths are not accepted; give the image as a file (extract it "
                          "from an archive first) or as an http(s)://, s3://, gs:// or az:// URL")
    if _MANGLED.match(text) and not Path(text).exists():
        text = re.sub(r"^([A-Za-z0-9]+):/", r"\1://", text)
    if text.lower().startswith("file://"):
        text = urlsplit(text).path
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match is None:
        path = Path(text).expanduser().absolute()
        return Source(text=os.path.normpath(path), kind="local", gdal_path=os.path.normpath(path))
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise SourceError(f"{text}: rsrag cannot read {scheme}:// sources; use a local path or one of {known}")
    kind, vsi = SCHEMES[scheme]
    parts = urlsplit(text)
    if kind == "http":
        if not parts.hostname:
            raise SourceError(f"{text}: the URL has no host; write it as {scheme}://host/path/scene.tif")
        netloc = parts.netloc.lower() if "@" not in parts.netloc else parts.netloc
        normal = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
        return Source(text=normal, kind=kind, gdal_path=vsi + normal)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key or key.endswith("/"):
        raise SourceError(f"{text}: give the object as {scheme}://{'container' if kind == 'az' else 'bucket'}/path/scene.tif")
    normal = f"{scheme}://{bucket}/{key}"
    return Source(text=normal, kind=kind, gdal_path=f"{vsi}{bucket}/{key}")


def is_remote(source: str | os.PathLike[str] | Source) -> bool:
    """Whether ``source`` names a remote object (``http(s)://``, ``s3://``, ``gs://``, ``az://`` or their
    GDAL ``/vsi...`` forms). A malformed URL counts as remote (it is not a local path either)."""
    try:
        return parse_source(source).is_remote
    except SourceError:
        return True


def source_key(source: str | os.PathLike[str] | Source) -> str:
    """The one text a scene source is known by: a local file's real path (symlinks followed), or the
    normalised URL. Two spellings of one source, or a link and its target, give one key.

    Raises:
        SourceError: see :func:`parse_source`.
    """
    src = parse_source(source)
    return str(Path(src.text).resolve()) if src.local_path is not None else src.text


def normalise_source(source: str | os.PathLike[str] | Source) -> str:
    """The canonical text of a source: the absolute local path, or the URL with lower-case scheme and host
    (``s3://bucket/key`` for GDAL's ``/vsis3/bucket/key``). Two spellings of one source give one text.

    Raises:
        SourceError: see :func:`parse_source`.
    """
    return parse_source(source).text


# --- GDAL configuration ---------------------------------------------------------------------------------


def apply_remote_defaults() -> None:
    """Set :data:`REMOTE_DEFAULTS` in GDAL's process-wide configuration, each unless the environment sets it.

    They only affect network reads (GDAL reads them at each request, from any thread). Idempotent.
    """
    global _defaults_applied
    with _defaults_lock:
        if _defaults_applied:
            return
        from rasterio.env import set_gdal_config

        for key, value in REMOTE_DEFAULTS.items():
            if key not in os.environ:
                set_gdal_config(key, value)
        _defaults_applied = True


def open_options(source: Source) -> dict[str, str]:
    """GDAL options for opening ``source`` (thread-local, in a ``rasterio.Env`` around the open).

    Remote: no directory listing or side-car probing (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``), and
    when the path ends in a raster suffix, only that suffix is fetched (``CPL_VSIL_CURL_ALLOWED_EXTENSIONS``).
    Local sources need none (their world files and ``.ovr`` side-cars are read as usual).
    """
    if not source.is_remote:
        return {}
    options = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    if source.suffix in RASTER_SUFFIXES:
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = source.suffix
    return options


def _timeout() -> float:
    from rasterio.env import get_gdal_config

    value = os.environ.get("GDAL_HTTP_TIMEOUT") or get_gdal_config("GDAL_HTTP_TIMEOUT") or REMOTE_DEFAULTS["GDAL_HTTP_TIMEOUT"]
    try:
        return float(value)
    except ValueError:
        return float(REMOTE_DEFAULTS["GDAL_HTTP_TIMEOUT"])


# --- errors ---------------------------------------------------------------------------------------------

_CREDENTIALS = {
    "http": "set GDAL_HTTP_HEADERS (e.g. 'Authorization: Bearer ...'), GDAL_HTTP_USERPWD or GDAL_HTTP_BEARER, or use a signed URL",
    "s3": "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE (or AWS_NO_SIGN_REQUEST=YES for a public bucket)",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS or GS_ACCESS_KEY_ID / GS_SECRET_ACCESS_KEY (or GS_NO_SIGN_REQUEST=YES for a public bucket)",
    "az": "set AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN (or AZURE_NO_SIGN_REQUEST=YES)",
}


def status_error(url: str, kind: SourceKind, status: int, reason: str = "") -> RsragError:
    """The error for an HTTP status a remote server answered with."""
    said = f"{status} {reason}".strip()
    if status in (404, 410):
        return RasterNotFoundError(f"{url}: the server answered {said}: no such object; check the URL")
    if status in (401, 403):
        return RemoteAccessError(f"{url}: the server answered {said}: access denied; {_CREDENTIALS[kind]}")
    if status == 416:
        return RasterOpenError(f"{url}: the object is empty (the server answered 416 to the first byte range)")
    if status in (408, 504):
        return RemoteTimeoutError(f"{url}: the server answered {said}: it timed out; retry later")
    if status >= 500 or status == 429:
        return RemoteUnavailableError(f"{url}: the server answered {said}; retry later (GDAL retries "
                                      f"GDAL_HTTP_MAX_RETRY={REMOTE_DEFAULTS['GDAL_HTTP_MAX_RETRY']} times by default)")
    return RasterOpenError(f"{url}: the server answered {said}; rsrag needs 200/206 answers to byte-range requests")


def gdal_error(source: Source, message: str) -> RsragError | None:
    """A clear error for a GDAL message about a remote source, or ``None`` when it is not a network failure."""
    url, text = source.text, message.lower()
    code = re.search(r"http (?:response )?code:?\s*(\d{3})", text) or re.search(r"http error code\s*:?\s*(\d{3})", text)
    if code:
        return status_error(url, source.kind, int(code.group(1)))
    if "range downloading not supported" in text:
        return _no_ranges(url)
    if "timed out" in text or "timeout" in text:
        return RemoteTimeoutError(f"{url}: no answer within the timeout ({message.strip()}); check the network, or raise "
                                  "GDAL_HTTP_TIMEOUT / GDAL_HTTP_CONNECTTIMEOUT")
    if "resolve host" in text or "could not resolve" in text:
        return RemoteUnavailableError(f"{url}: the host name cannot be resolved; check the URL and the network")
    if "connection refused" in text or "failed to connect" in text or "couldn't connect" in text:
        return RemoteUnavailableError(f"{url}: the connection was refused; is the server running and reachable?")
    if any(word in text for word in ("accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch",
                                     "aws_secret_access_key", "credentials", "authorization")):
        return RemoteAccessError(f"{url}: access denied ({message.strip()}); {_CREDENTIALS[source.kind]}")
    if "nosuchkey" in text or "nosuchbucket" in text or "does not exist" in text:
        return RasterNotFoundError(f"{url}: no such object ({message.strip()}); check the URL")
    return None


def _no_ranges(url: str) -> RangeRequestsUnsupportedError:
    return RangeRequestsUnsupportedError(
        f"{url}: the server ignores byte-range requests (it sends the whole file), so rsrag cannot read windows "
        "of it; serve it from a server with range support (any object store, nginx, Apache), or download it and "
        "give the local path")


# --- probing --------------------------------------------------------------------------------------------


def probe_remote(source: str | Source) -> RemoteInfo:
    """Check that a remote object exists, is readable by byte ranges, and fingerprint it.

    Raises:
        RasterNotFoundError: 404 / no such object.
        RemoteAccessError: 401 / 403 / missing credentials.
        RemoteTimeoutError: no answer within ``GDAL_HTTP_TIMEOUT`` seconds.
        RemoteUnavailableError: unknown host, refused connection, a server error.
        RangeRequestsUnsupportedError: the server answers range requests with the whole file.
        RasterOpenError: the object is empty.
    """
    src = parse_source(source)
    if not src.is_remote:
        raise SourceError(f"{src.text} is a local path, not a remote object")
    apply_remote_defaults()
    if src.kind == "http":
        return _probe_http(src)
    return _probe_vsi(src)


def _fingerprint(size: int, etag: str | None, modified: str | None, head: bytes, tail: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"remote:{size}:{etag or ''}:{modified or ''}".encode())
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()


def _http_request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": "rsrag", **(headers or {})})
    extra = os.environ.get("GDAL_HTTP_HEADERS", "")
    for line in re.split(r"\r?\n|\\r\\n", extra):
        if ":" in line:
            key, value = line.split(":", 1)
            request.add_header(key.strip(), value.strip())
    bearer = os.environ.get("GDAL_HTTP_BEARER", "").strip()
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    userpwd = os.environ.get("GDAL_HTTP_USERPWD", "")
    if userpwd and "Authorization" not in request.headers:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(userpwd.encode()).decode())
    return request


def _ssl_context() -> ssl.SSLContext | None:
    if os.environ.get("GDAL_HTTP_UNSAFESSL", "").upper() in ("YES", "TRUE", "ON", "1"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return None


def _http_get(url: str, kind: SourceKind, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """Open ``url`` with the given headers; every network failure becomes a clear rsrag error."""
    timeout = _timeout()
    try:
        return urllib.request.urlopen(_http_request(url, headers), timeout=timeout, context=_ssl_context())
    except urllib.error.HTTPError as exc:
        exc.close()
        raise status_error(url, kind, exc.code, str(exc.reason or "")) from None
    except urllib.error.URLError as exc:
        raise _network_error(url, exc.reason) from None
    except TimeoutError as exc:
        raise _network_error(url, exc) from None
    except ConnectionError as exc:
        raise _network_error(url, exc) from None


def _network_error(url: str, reason: object) -> RsragError:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return RemoteTimeoutError(f"{url}: no answer within {_timeout():g} s; check the network, or raise GDAL_HTTP_TIMEOUT")
    if isinstance(reason, socket.gaierror):
        host = urlsplit(url).hostname
        return RemoteUnavailableError(f"{url}: the host name {host!r} cannot be resolved; check the URL and the network")
    if isinstance(reason, ConnectionRefusedError):
        parts = urlsplit(url)
        return RemoteUnavailableError(f"{url}: connection refused by {parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}; "
                                      "is the server running?")
    if isinstance(reason, ssl.SSLError):
        return RemoteUnavailableError(f"{url}: TLS failed ({reason}); for a self-signed certificate set GDAL_HTTP_UNSAFESSL=YES")
    return RemoteUnavailableError(f"{url}: cannot be reached ({reason}); check the URL and the network")


def _read_body(response, url: str, limit: int) -> bytes:  # type: ignore[no-untyped-def]
    try:
        return bytes(response.read(limit))
    except TimeoutError as exc:
        raise _network_error(url, exc) from None
    except (ConnectionError, OSError) as exc:
        raise _network_error(url, exc) from None


def _probe_http(src: Source) -> RemoteInfo:
    url = src.text
    with _http_get(url, src.kind, {"Range": f"bytes=0-{PROBE_BYTES - 1}"}) as response:
        if response.status != 206:
            raise _no_ranges(url)
        total = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
        if total is None:
            raise RasterOpenError(f"{url}: the server's 206 answer has no total size (Content-Range); rsrag cannot "
                                  "read windows of it")
        size = int(total.group(1))
        etag = response.headers.get("ETag")
        modified = response.headers.get("Last-Modified")
        head = _read_body(response, url, PROBE_BYTES)
    if size == 0:
        raise RasterOpenError(f"{url}: the object is empty (0 bytes)")
    tail = b""
    if size > PROBE_BYTES:
        with _http_get(url, src.kind, {"Range": f"bytes={max(PROBE_BYTES, size - PROBE_BYTES)}-{size - 1}"}) as response:
            if response.status != 206:
                raise _no_ranges(url)
            tail = _read_body(response, url, PROBE_BYTES)
    return RemoteInfo(url=url, size=size, etag=etag, last_modified=_http_date(modified), fingerprint=_fingerprint(size, etag, modified, head, tail))


def _http_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError):
        return value


# GDAL's VSI functions, through the library rasterio loaded (for s3://, gs://, az://).


class _Vsi:
    """The few GDAL C functions used to stat and read cloud objects (``VSIFOpenExL`` ...)."""

    _instance: _Vsi | None = None
    _lock = threading.Lock()

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.VSIFOpenExL.restype = ctypes.c_void_p
        lib.VSIFOpenExL.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        lib.VSIFReadL.restype = ctypes.c_size_t
        lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        lib.VSIFSeekL.restype = ctypes.c_int
        lib.VSIFSeekL.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
        lib.VSIFTellL.restype = ctypes.c_uint64
        lib.VSIFTellL.argtypes = [ctypes.c_void_p]
        lib.VSIFCloseL.restype = ctypes.c_int
        lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
        lib.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        lib.CSLDestroy.restype = None
        lib.CSLDestroy.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.CPLGetLastErrorMsg.restype = ctypes.c_char_p
        lib.CPLErrorReset.restype = None

    @classmethod
    def get(cls) -> _Vsi:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(_load_gdal())
            return cls._instance

    def headers(self, path: str) -> dict[str, str]:
        items = self.lib.VSIGetFileMetadata(path.encode(), b"HEADERS", None)
        out: dict[str, str] = {}
        if items:
            i = 0
            while items[i]:
                key, _, value = items[i].decode("utf-8", "replace").partition("=")
                out[key.lower()] = value
                i += 1
            self.lib.CSLDestroy(items)
        return out

    def open(self, src: Source) -> int:
        self.lib.CPLErrorReset()
        handle = self.lib.VSIFOpenExL(src.gdal_path.encode(), b"rb", 1)
        if not handle:
            message = (self.lib.CPLGetLastErrorMsg() or b"").decode("utf-8", "replace")
            raise gdal_error(src, message) or RasterNotFoundError(
                f"{src.text}: GDAL cannot open the object ({message or 'no such object or no access'}); check the "
                f"URL, and {_CREDENTIALS[src.kind]}")
        return int(handle)

    def read(self, handle: int, offset: int, length: int) -> bytes:
        buffer = ctypes.create_string_buffer(length)
        self.lib.VSIFSeekL(handle, offset, 0)
        got = self.lib.VSIFReadL(buffer, 1, length, handle)
        return buffer.raw[:got]

    def size(self, handle: int) -> int:
        self.lib.VSIFSeekL(handle, 0, 2)
        return int(self.lib.VSIFTellL(handle))

    def close(self, handle: int) -> None:
        self.lib.VSIFCloseL(handle)


def _load_gdal() -> ctypes.CDLL:
    import rasterio

    package = Path(rasterio.__file__).resolve().parent
    candidates = sorted(glob.glob(str(package.parent / "rasterio.libs" / "libgdal*")))
    candidates += sorted(glob.glob(str(package / ".dylibs" / "libgdal*")))
    found = ctypes.util.find_library("gdal")
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
            lib.VSIFOpenExL  # noqa: B018 - the symbol must exist
            return lib
        except (OSError, AttributeError):
            continue
    raise RasterOpenError("GDAL's C library was not found beside rasterio, so rsrag cannot probe cloud objects; "
                          "use an https:// URL (a signed URL for private objects) instead")


def _probe_vsi(src: Source) -> RemoteInfo:
    import rasterio

    vsi = _Vsi.get()
    with rasterio.Env(**open_options(src)):
        handle = vsi.open(src)
        try:
            size = vsi.size(handle)
            head = vsi.read(handle, 0, min(PROBE_BYTES, size))
            tail = vsi.read(handle, max(PROBE_BYTES, size - PROBE_BYTES), PROBE_BYTES) if size > PROBE_BYTES else b""
        finally:
            vsi.close(handle)
        headers = vsi.headers(src.gdal_path)
    if size == 0:
        raise RasterOpenError(f"{src.text}: the object is empty (0 bytes)")
    etag, modified = headers.get("etag"), headers.get("last-modified")
    return RemoteInfo(url=src.text, size=size, etag=etag, last_modified=_http_date(modified),
                      fingerprint=_fingerprint(size, etag, modified, head, tail))


def iter_remote_bytes(source: str | Source, chunk: int = 1 << 22) -> Iterator[bytes]:
    """The bytes of a remote object, streamed in chunks (for a full SHA-256)."""
    src = parse_source(source)
    apply_remote_defaults()
    if src.kind == "http":
        with _http_get(src.text, src.kind, {}) as response:
            while True:
                data = _read_body(response, src.text, chunk)
                if not data:
                    return
                yield data
    import rasterio

    vsi = _Vsi.get()
    with rasterio.Env(**open_options(src)):
        handle = vsi.open(src)
    try:
        offset = 0
        while True:
            data = vsi.read(handle, offset, chunk)
            if not data:
                return
            offset += len(data)
            yield data
    finally:
        vsi.close(handle)


def read_error(source: Source, box: tuple[int, int, int, int], exc: BaseException) -> RsragError:
    """The error for a failed window read of ``source``: a network error where GDAL's message says so, else
    the raster engine's read error."""
    if source.is_remote:
        found = gdal_error(source, str(exc)) or gdal_error(source, str(exc.__cause__ or exc.__context__ or ""))
        if found is not None:
            return found
    detail = gdal_detail(exc)
    need = re.search(r"require libjpeg to allocate at least (\d+) bytes", detail)
    if need or "backing store not supported" in detail.lower():
        size = f"at least {int(need.group(1)) / (1 << 20):,.0f} MiB by GDAL's estimate (in practice about four " \
            "times that)" if need else "more than libjpeg may use"
        return RasterReadError(
            f"{source.text} is a progressive JPEG that is decoded whole: it needs {size}, above the JPEGMEM limit "
            f"in force ({os.environ.get('JPEGMEM', '500M')}; unless JPEGMEM is set, rsrag allows a quarter of the "
            "memory available when it first opened an image); "
            "re-save it as a tiled GeoTIFF (`gdal_translate -of COG IN.jpg OUT.tif`) or a baseline JPEG, or set "
            "JPEGMEM (e.g. JPEGMEM=8000M) if this machine has the memory")
    return RasterReadError(
        f"{source.text}: could not read window {box} ({detail}); the file may be truncated or corrupt: "
        "re-export or re-download it, and check it with `gdalinfo -checksum`")


def gdal_detail(exc: BaseException) -> str:
    """What GDAL said about a failure: rasterio's "Read failed. See previous exception for details." replaced
    by that previous exception's message (e.g. ``TIFFReadEncodedTile() failed``, ``libpng: Read Error``)."""
    text = str(exc).strip()
    if "see previous exception" in text.lower():
        cause = exc.__cause__ or exc.__context__
        if cause is not None and str(cause).strip():
            return gdal_detail(cause)
    return text or type(exc).__name__
