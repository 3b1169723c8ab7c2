"""Errors of the web workspace, and how every rsrag error maps to an HTTP status.

The web errors derive from :class:`~rsrag.tools.errors.RsragError` (and the builtin they resemble), so the
server turns them, like every other rsrag error, into a JSON body ``{"error": message, "type": name}`` with
a fitting status instead of a traceback.
"""

from __future__ import annotations

from rsrag.tools.errors import (
    BudgetExceededError,
    ConfigError,
    GeoreferenceError,
    IndexBusyError,
    QueryError,
    RasterError,
    RasterNotFoundError,
    RsragError,
    StoreUnavailableError,
    WeightsUnavailableError,
    WindowError,
)


class WebError(RsragError):
    """Root of the errors raised by the web workspace."""


class UnknownImageError(WebError, LookupError):
    """The image id is not registered with this server."""


class UnknownEvidenceError(WebError, LookupError):
    """The thread has no evidence with that id (or no crop for it)."""


class TileNotFoundError(WebError, LookupError):
    """The tile lies outside the image's pyramid."""


class BadRequestError(WebError, ValueError):
    """The request is malformed: invalid JSON, a missing or invalid field."""


class UploadTooLargeError(WebError, ValueError):
    """An upload exceeds the server's size limit."""


class UnsupportedUploadError(WebError, ValueError):
    """An upload is not an image type the server accepts."""


class ThreadBusyError(WebError, RuntimeError):
    """The chat thread is already answering a question (for example in another browser tab)."""


#: Most specific first: the first class an error is an instance of gives its status.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownImageError, 404),
    (UnknownEvidenceError, 404),
    (TileNotFoundError, 404),
    (UploadTooLargeError, 413),
    (UnsupportedUploadError, 415),
    (ThreadBusyError, 409),
    (IndexBusyError, 409),
    (RasterNotFoundError, 404),
    (WeightsUnavailableError, 503),
    (StoreUnavailableError, 503),
    (BudgetExceededError, 422),
    (BadRequestError, 400),
    (QueryError, 400),
    (WindowError, 400),
    (GeoreferenceError, 400),
    (ConfigError, 400),
    (RasterError, 422),
)


def http_status(exc: BaseException) -> int:
    """The HTTP status for an error: 4xx for what the client can fix, 503 for missing resources, else 500."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500
