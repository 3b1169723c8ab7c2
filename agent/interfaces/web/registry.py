"""The images a server may show: registered by path at start-up or uploaded, addressed only by id.

Clients never name a file: every request carries an image id, looked up in this registry, so no request
can reach a path the operator did not register (no path traversal). Uploads are streamed to the upload
folder under a generated name, with a byte limit, and kept only if :class:`~rsrag.tools.sandbox.Sandbox`
finds a self-contained raster format in their first bytes (a VRT, which can point at any file on disk, is
refused whatever the upload is called) and GDAL then opens them with one of :data:`UPLOAD_DRIVERS`. Error
messages name the upload by its display name, never by its path on the server.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsrag.agent.interfaces.web.errors import UnknownImageError, UnsupportedUploadError, UploadTooLargeError
from rsrag.agent.interfaces.web.tiles import Pyramid
from rsrag.tools.errors import RsragError
from rsrag.tools.georef import map_box_to_lonlat
from rsrag.tools.raster import Scene, open_scene
from rsrag.tools.sandbox import Sandbox
from rsrag.tools.sources import is_remote, source_key

#: Upload suffixes accepted, and the GDAL drivers an upload must open with.
UPLOAD_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2")
UPLOAD_DRIVERS = ("GTiff", "COG", "JPEG", "PNG", "JP2OpenJPEG")
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30


@dataclass(frozen=True)
class ImageEntry:
    """A registered image: its id, display name, resolved path and open scene."""

    id: str
    name: str
    path: Path
    scene: Scene
    uploaded: bool = False

    @property
    def pyramid(self) -> Pyramid:
        return Pyramid(self.scene.width, self.scene.height)

    def to_json(self) -> dict[str, Any]:
        """What the page needs: size, pyramid, CRS, geotransform and lon/lat bounds where georeferenced."""
        scene, pyramid = self.scene, self.pyramid
        out: dict[str, Any] = {
            "id": self.id, "name": self.name, "fingerprint": scene.fingerprint, "width": scene.width, "height": scene.height, "bands": scene.count,
            "driver": scene.info.driver, "overviews": list(scene.info.overviews), "crs": scene.crs,
            "transform": list(scene.info.transform) if scene.georeferenced else None,
            "gsd": list(scene.info.gsd) if scene.info.gsd else None, "uploaded": self.uploaded,
            "tile_size": pyramid.tile_size, "max_level": pyramid.max_level, "lonlat_bounds": None,
        }
        if scene.georeferenced:
            try:
                out["lonlat_bounds"] = list(map_box_to_lonlat(scene.region(scene.full_box).map_box))  # type: ignore[arg-type]
            except RsragError:
                pass  # a CRS without a lon/lat conversion: map coordinates are still shown in the scene's CRS
        return out


class ImageRegistry:
    """The images a server knows, by id.

    Args:
        upload_dir: where uploads are written (created on the first upload).
        max_upload_bytes: the largest upload accepted.
        opener: opens a path as a :class:`Scene` (the server passes the agent workspace's, so the agent and
            the tile endpoint share one open scene per file).
    """

    def __init__(
        self,
        upload_dir: str | os.PathLike[str],
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        opener: Callable[[Path], Scene] = open_scene,
    ) -> None:
        self.upload_dir = Path(upload_dir)
        self.max_upload_bytes = max_upload_bytes
        self._opener = opener
        self._entries: dict[str, ImageEntry] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[ImageEntry]:
        with self._lock:
            return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, path: str | os.PathLike[str], name: str | None = None, uploaded: bool = False) -> ImageEntry:
        """Open and register an image file; registering the same file again returns its entry.

        Raises:
            RasterError: the file is missing or not a raster (see :func:`rsrag.tools.raster.open_scene`).
        """
        key = source_key(path)  # a local file's real path, or a URL (remote images are registered by URL)
        image_id = hashlib.blake2s(key.encode(), digest_size=6).hexdigest()
        with self._lock:
            if image_id in self._entries:
                return self._entries[image_id]
        scene = self._opener(Path(key) if not is_remote(key) else key)  # type: ignore[arg-type]
        entry = ImageEntry(id=image_id, name=name or scene.path.name, path=scene.path, scene=scene,  # type: ignore[arg-type]
                           uploaded=uploaded)
        with self._lock:
            return self._entries.setdefault(image_id, entry)

    def get(self, image_id: str) -> ImageEntry:
        """The entry for an id.

        Raises:
            UnknownImageError: no image with that id is registered.
        """
        with self._lock:
            entry = self._entries.get(image_id)
        if entry is None:
            raise UnknownImageError(f"no image with id {image_id[:40]!r} is registered with this server; "
                                    "list the images with GET /api/images or upload one")
        return entry

    def by_fingerprint(self, fingerprint: str) -> ImageEntry | None:
        """The registered image whose scene has this content fingerprint (evidence regions carry it)."""
        with self._lock:
            entries = list(self._entries.values())
        return next((e for e in entries if e.scene.fingerprint == fingerprint), None)

    async def upload(self, name: str, chunks: AsyncIterator[bytes], declared_size: int | None = None) -> ImageEntry:
        """Stream an upload to disk under a generated name, enforcing the size limit, and register it.

        Args:
            name: the client's file name (used for display and its suffix only, never as a path).
            chunks: the request body.
            declared_size: the ``Content-Length`` the client sent, checked before reading anything.

        Raises:
            UploadTooLargeError: the body exceeds :attr:`max_upload_bytes` (nothing is kept).
            UnsupportedUploadError: the suffix or the file's format is not accepted (nothing is kept).
        """
        display = Path(name.replace("\\", "/")).name[:120] or "upload"
        suffix = Path(display).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise UnsupportedUploadError(
                f"{display!r}: uploads must be one of {', '.join(UPLOAD_SUFFIXES)} (GeoTIFF/COG, JPEG, PNG, JPEG 2000)")
        if declared_size is not None and declared_size > self.max_upload_bytes:
            raise self._too_large(declared_size)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        target = self.upload_dir / f"upload-{uuid.uuid4().hex[:16]}{suffix}"
        received = 0
        try:
            with open(target, "wb") as fh:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > self.max_upload_bytes:
                        raise self._too_large(received, at_least=True)
                    fh.write(chunk)
            if received == 0:
                raise UnsupportedUploadError(f"{display!r}: the upload is empty")
            Sandbox.of([self.upload_dir], allow_vrt=False).resolve(target)  # content, not name, decides
            with open_scene(target) as probe:  # checked before the server's shared opener caches the scene
                driver = probe.info.driver
            if driver not in UPLOAD_DRIVERS:
                raise UnsupportedUploadError(f"{display!r} opened as a {driver} raster; uploads must be "
                                             "GeoTIFF/COG, JPEG, PNG or JPEG 2000")
            return self.register(target, name=display, uploaded=True)
        except RsragError as exc:
            target.unlink(missing_ok=True)
            if isinstance(exc, (UploadTooLargeError, UnsupportedUploadError)):
                raise
            reason = str(exc).replace(str(target), display).replace(str(self.upload_dir), "the upload folder")
            raise UnsupportedUploadError(f"{display!r} is not an image rsrag can read: {reason}") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _too_large(self, size: int, at_least: bool = False) -> UploadTooLargeError:
        limit_mb = self.max_upload_bytes / (1 << 20)
        got = f"more than {limit_mb:.1f} MiB" if at_least else f"{size / (1 << 20):.1f} MiB"
        return UploadTooLargeError(f"upload too large: {got}; this server accepts at most {limit_mb:.1f} MiB "
                                   "(start it with a larger --max-upload-mb, or register the file on the command line)")
