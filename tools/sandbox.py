"""What a restricted context (the web server, the MCP server) may open: one resolver for paths and URLs.

:meth:`Sandbox.resolve` is the only door: it takes what a client named (a path or a URL) and returns what
may be opened (the real path, symlinks resolved, or the URL), or raises
:class:`~rsrag.tools.errors.AccessDeniedError` naming what was refused and why. The rules:

* a local path is followed through every symbolic link to its real path, which must lie inside one of the
  allowed roots (themselves resolved the same way); a symlink loop or a dangling link is reported as such;
* the file's format is read from its first bytes, never from its name: only self-contained raster formats
  (TIFF/GeoTIFF/COG/BigTIFF, JPEG, PNG, JPEG 2000) are opened, plus GDAL VRTs whose every referenced file
  (``SourceFilename``, nested VRTs included) passes the same check; a VRT with a Python pixel function is
  refused, and so is every other format that can point at other files or at the network (GDAL's WMS/WMTS
  service XML, tile indexes, MRF, PDS/ISIS/VICAR labels, ENVI headers...);
* sidecar files GDAL reads beside an image (``.ovr``, ``.aux.xml``, ``.msk``, world files) must resolve
  inside the roots too, so a symlinked sidecar cannot pull in an outside file;
* GDAL virtual file systems (``/vsicurl/``, ``/vsizip/``...) and connection strings (``NETCDF:``,
  ``GPKG:``, ``PG:``, ``vrt://``, ``WMS:``...) are refused;
* a remote URL is allowed only when it starts with one of the explicitly allowed prefixes.

What this does not guarantee: it checks names and contents at the moment of the call; a local user who can
write inside an allowed folder can still swap a file between the check and the read (the resolver returns
the real path to open, which narrows but does not close that window). Without roots (``roots=None``) any
local file the process can read is allowed; the format, virtual file system and URL rules still apply.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rsrag.tools.errors import AccessDeniedError, RasterNotFoundError, RasterOpenError

#: Formats a restricted context opens directly, by their leading bytes.
SELF_CONTAINED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000 codestream"),
)
#: Sidecar suffixes GDAL may read next to an image.
SIDECARS = (".ovr", ".aux.xml", ".msk", ".aux", ".wld", ".tfw", ".tifw", ".jgw", ".pgw", ".j2w")
MAX_VRT_BYTES = 16 << 20
MAX_VRT_DEPTH = 8
_CONNECTION = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]+:")  # DRIVER:..., vrt://, but not C:\ (one letter)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(target: str) -> bool:
    """Whether ``target`` names a remote resource (``scheme://...``), by :mod:`rsrag.tools.sources` when it
    is installed, else by its scheme."""
    try:
        from rsrag.tools.sources import is_remote as sources_is_remote  # type: ignore[attr-defined]
    except ImportError:
        return bool(_URL.match(target)) and not target.lower().startswith("file://")
    return bool(sources_is_remote(target))


def sniff_format(path: Path) -> str:
    """The format of a file from its first bytes: a name from :data:`SELF_CONTAINED_MAGIC`, ``VRT``, or
    ``unknown`` (a description of what it looks like)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    for magic, name in SELF_CONTAINED_MAGIC:
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<?xml"):
        end = text.find(b"?>")
        text = text[end + 2:].lstrip() if end >= 0 else text
    if text.startswith(b"<VRTDataset"):
        return "VRT"
    if text.startswith(b"<"):
        tag = text[1:40].split(b">")[0].split()[0].decode("ascii", "replace") if len(text) > 1 else ""
        return f"XML <{tag}>"
    return "unknown"


@dataclass(frozen=True)
class Sandbox:
    """The allow-list of one restricted context.

    Args:
        roots: folders whose files may be opened (``None``: any local file; ``()``: none).
        url_prefixes: remote URLs allowed, by prefix (e.g. ``https://data.example.org/scenes/``).
        allow_vrt: open VRTs whose referenced files all pass (``False``: refuse every VRT, as uploads do).
    """

    roots: tuple[Path, ...] | None = None
    url_prefixes: tuple[str, ...] = ()
    allow_vrt: bool = True
    _real_roots: tuple[str, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if self.roots is not None:
            object.__setattr__(self, "roots", tuple(Path(r).expanduser() for r in self.roots))
            object.__setattr__(self, "_real_roots", tuple(os.path.realpath(r) for r in self.roots))
        object.__setattr__(self, "url_prefixes", tuple(p.strip() for p in self.url_prefixes if p.strip()))

    @classmethod
    def of(cls, roots: Sequence[str | os.PathLike[str]] | None, url_prefixes: Sequence[str] = (),
           allow_vrt: bool = True) -> Sandbox:
        """A sandbox from plain arguments (``roots=None`` or empty: no folder restriction)."""
        return cls(tuple(Path(r) for r in roots) if roots else None, tuple(url_prefixes), allow_vrt)

    def describe(self) -> str:
        """The allowed folders, for messages."""
        if self.roots is None:
            return "any local file"
        return ", ".join(self._real_roots) or "no folder"

    # --- the resolver ------------------------------------------------------------------------------------

    def resolve(self, target: str | os.PathLike[str]) -> str:
        """What may be opened for ``target``: its real path (or the URL), after every check.

        Raises:
            AccessDeniedError: outside the roots, a refused format or prefix, a VRT referencing an outside
                file, a GDAL virtual file system or connection string, a URL not allowed.
            RasterNotFoundError: an allowed path that does not exist (or a dangling symlink).
            RasterOpenError: a symlink loop, a directory, an unreadable file.
        """
        return self._resolve(os.fspath(target), depth=0, seen=frozenset())

    def check_inside(self, target: str | os.PathLike[str]) -> Path:
        """The real path of ``target`` if it lies inside the roots (any kind of file; no format check).

        Raises:
            AccessDeniedError: it resolves outside the roots.
        """
        real = self._real(os.fspath(target))
        self._require_inside(real, os.fspath(target))
        return Path(real)

    def _resolve(self, target: str, depth: int, seen: frozenset[str]) -> str:
        text = target.strip()
        shown = text[:200]
        if not text:
            raise AccessDeniedError("an empty path was given; name an image file")
        if is_remote(text):
            if any(text.startswith(prefix) for prefix in self.url_prefixes):
                return text
            allowed = ", ".join(self.url_prefixes) or "none"
            raise AccessDeniedError(f"URL {shown!r} is not allowed here (allowed URL prefixes: {allowed})")
        if text.lower().startswith("/vsi"):
            raise AccessDeniedError(f"{shown!r}: GDAL virtual file systems (/vsi...) are not allowed here; "
                                    "name a plain file inside the allowed folders")
        if text.lower().startswith("file://"):
            text = text[len("file://"):]
        if _CONNECTION.match(text):
            raise AccessDeniedError(f"{shown!r} looks like a GDAL connection string ({text.split(':')[0]}:...), "
                                    "which is not allowed here; name a plain file")
        real = self._real(text)
        self._require_inside(real, shown)
        path = Path(real)
        if not path.exists():
            raise RasterNotFoundError(f"{shown}: no such file")
        if path.is_dir():
            raise RasterOpenError(f"{shown} is a directory; name an image file inside it")
        try:
            kind = sniff_format(path)
        except OSError as exc:
            raise RasterOpenError(f"{shown} cannot be read ({exc.strerror or exc})") from None
        if kind == "VRT":
            if not self.allow_vrt:
                raise AccessDeniedError(f"{shown} is a GDAL VRT, which can point at any file; VRTs are not "
                                        "accepted here")
            self._check_vrt(path, depth, seen | {real})
        elif not any(kind == name for _, name in SELF_CONTAINED_MAGIC):
            raise AccessDeniedError(
                f"{shown} is not a format opened here ({kind}); restricted servers open only GeoTIFF/COG, "
                "JPEG, PNG and JPEG 2000 files" + (", and VRTs over them" if self.allow_vrt else ""))
        self._check_sidecars(path)
        return real

    def _real(self, text: str) -> str:
        path = Path(text).expanduser()
        try:
            return str(path.resolve(strict=False))
        except RuntimeError:  # Python 3.11 raises RuntimeError on a symlink loop
            raise RasterOpenError(f"{text[:200]} is a symbolic link that loops back on itself") from None
        except OSError as exc:
            if getattr(exc, "errno", None) == 40:  # ELOOP (newer Pythons raise OSError)
                raise RasterOpenError(f"{text[:200]} is a symbolic link that loops back on itself") from None
            raise RasterOpenError(f"{text[:200]} cannot be resolved ({exc.strerror or exc})") from None

    def _require_inside(self, real: str, shown: str) -> None:
        if self.roots is None:
            return
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self._real_roots):
            raise AccessDeniedError(f"{shown} is outside the image folders this server may open ({self.describe()})")

    def _check_sidecars(self, path: Path) -> None:
        for suffix in SIDECARS:
            for candidate in (Path(str(path) + suffix), path.with_suffix(suffix)):
                if candidate != path and os.path.lexists(candidate):
                    self._require_inside(self._real(str(candidate)), f"sidecar {candidate.name} of {path.name}")

    def _check_vrt(self, path: Path, depth: int, seen: frozenset[str]) -> None:
        if depth >= MAX_VRT_DEPTH:
            raise AccessDeniedError(f"{path.name}: VRTs nested more than {MAX_VRT_DEPTH} deep are not opened here")
        if path.stat().st_size > MAX_VRT_BYTES:
            raise AccessDeniedError(f"{path.name}: a VRT larger than {MAX_VRT_BYTES >> 20} MiB is not opened here")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise RasterOpenError(f"{path.name} is not a valid VRT (XML error: {exc})") from None
        for element in root.iter():
            if element.tag in ("PixelFunctionCode",) or (element.get("PixelFunctionLanguage") or "").lower() == "python":
                raise AccessDeniedError(f"{path.name}: VRTs with Python pixel functions are not opened here")
        for element in root.iter("SourceFilename"):
            name = (element.text or "").strip()
            if not name:
                raise RasterOpenError(f"{path.name}: a SourceFilename is empty")
            relative = any(k.lower() == "relativetovrt" and v.strip() == "1" for k, v in element.attrib.items())
            referenced = name
            if not is_remote(name) and not name.lower().startswith("/vsi") and not _CONNECTION.match(name):
                referenced = str(path.parent / name) if relative and not os.path.isabs(name) else name
            real = self._real(referenced) if not (is_remote(referenced) or referenced.lower().startswith("/vsi")
                                                  or _CONNECTION.match(referenced)) else referenced
            if real in seen:
                raise RasterOpenError(f"{path.name} references itself (through {name[:120]!r})")
            try:
                self._resolve(referenced, depth + 1, seen)
            except AccessDeniedError as exc:
                raise AccessDeniedError(f"{path.name} references {name[:120]!r}, which is refused: {exc}") from None
            except (RasterNotFoundError, RasterOpenError) as exc:
                raise RasterOpenError(f"{path.name} references {name[:120]!r}: {exc}") from None
