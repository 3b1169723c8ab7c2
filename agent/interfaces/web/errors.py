"""Errors of the web workspace, and how every rsrag error maps to an HTTP status.

The classes live in the one error tree (:mod:`rsrag.tools.errors`, where their kinds and the kind -> status
mapping are declared); they are re-exported here for the web modules. The server turns every rsrag error
into a JSON body ``{"error": message, "type": name, "kind": kind}`` with :func:`http_status`'s status
instead of a traceback.
"""

from __future__ import annotations

from rsrag.tools.errors import (
    BadRequestError,
    RequestTooLargeError,
    ThreadBusyError,
    TileNotFoundError,
    UnknownEvidenceError,
    UnknownImageError,
    UnsupportedUploadError,
    UploadTooLargeError,
    WebError,
    http_status,
)

__all__ = [
    "BadRequestError", "RequestTooLargeError", "ThreadBusyError", "TileNotFoundError", "UnknownEvidenceError",
    "UnknownImageError", "UnsupportedUploadError", "UploadTooLargeError", "WebError", "http_status",
]
