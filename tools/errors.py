"""The rsrag error tree, the kind of each error, and the one mapping from kind to what each interface shows.

Every error rsrag raises on purpose derives from :class:`RsragError`. Subclasses also inherit the builtin
they resemble, so callers that already catch ``OSError`` or ``ValueError`` keep working. Messages name the
thing at fault (a file, a spec, an argument) and say what to change.

Each class declares an :class:`ErrorKind` (class attribute ``kind``) that says who can fix it:

* ``argument``: a bad argument the caller can fix (a box outside the image, an empty question, an unknown id);
* ``input``: bad input data (a truncated image, a malformed knowledge file, a tampered trace);
* ``config``: configuration (a setting, an encoder or VLM spec, a checkpoint that does not fit);
* ``unavailable``: a resource that cannot be reached or is busy (weights, a server, a locked index);
* ``internal``: a bug in rsrag.

:data:`KIND_POLICIES` is the only place that turns a kind into what a user sees: the CLI's exit status and
message prefix (:func:`exit_status`, :func:`cli_message`), the HTTP status (:func:`http_status`; a class
may refine it with ``http_status``, e.g. 404 for an unknown id), the MCP tool error (:func:`mcp_message`)
and what the agent's tool node tells the model (:func:`model_message`).

The tree (kind in brackets; ``+`` the builtin also inherited)::

    RsragError [internal]
    ├── RasterError [input]
    │   ├── RasterNotFoundError [input] + FileNotFoundError
    │   ├── RasterOpenError [input] + OSError
    │   │   └── RangeRequestsUnsupportedError [input]
    │   ├── RasterReadError [input] + OSError
    │   ├── InvalidRasterError [input] + ValueError
    │   │   └── ImageTooSmallError [input]
    │   ├── SourceError [argument] + ValueError
    │   ├── RemoteAccessError [config] + PermissionError
    │   └── RemoteUnavailableError [unavailable] + ConnectionError
    │       └── RemoteTimeoutError [unavailable] + TimeoutError
    ├── SceneCacheError [unavailable] + OSError
    ├── WindowError [argument] + ValueError
    ├── TilingError [argument] + ValueError
    ├── GeoreferenceError [argument] + ValueError
    ├── AccessDeniedError [argument] + PermissionError
    ├── EncoderError [config]
    │   ├── UnknownEncoderError [config] + LookupError
    │   ├── WeightsUnavailableError [unavailable] + FileNotFoundError
    │   └── CheckpointMismatchError [config] + ValueError
    ├── StoreError [unavailable] + OSError
    │   ├── StoreUnavailableError [unavailable] + ConnectionError
    │   ├── IndexBusyError [unavailable] + BlockingIOError
    │   └── IndexNotFoundError [unavailable] + LookupError
    ├── QueryError [argument] + ValueError
    ├── ConfigError [config] + ValueError
    │   └── UnknownChatFamilyError [config] + LookupError
    ├── DataError [input] + ValueError
    ├── BudgetExceededError [argument] + ValueError
    ├── ModelUnavailableError [unavailable] + ConnectionError
    ├── VLMError [config]
    │   ├── VLMLoadError [config] + OSError
    │   └── VLMInputError [input] + ValueError
    ├── TraceError [input]
    │   ├── TraceNotFoundError [argument] + LookupError
    │   ├── TraceIntegrityError [input] + ValueError
    │   └── ReplayExhaustedError [input] + RuntimeError
    └── WebError [argument]
        ├── UnknownImageError [argument] + LookupError
        ├── UnknownEvidenceError [argument] + LookupError
        ├── TileNotFoundError [argument] + LookupError
        ├── BadRequestError [argument] + ValueError
        ├── RequestTooLargeError [argument] + ValueError
        ├── UploadTooLargeError [input] + ValueError
        ├── UnsupportedUploadError [input] + ValueError
        └── ThreadBusyError [unavailable] + RuntimeError

(``tests/unit/tools/test_errors.py`` checks this drawing against the classes.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar


class ErrorKind(str, Enum):
    """Who can fix an error (see the module docstring)."""

    ARGUMENT = "argument"
    INPUT = "input"
    CONFIG = "config"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


@dataclass(frozen=True)
class KindPolicy:
    """How every interface presents one kind of error.

    Attributes:
        exit_status: the CLI's exit status.
        label: the CLI's message prefix (``error: ...``).
        http_status: the HTTP status, unless the class names a more specific one.
        model_hint: appended to the message the model reads when a tool call fails.
        mcp_label: prefix of the MCP tool error.
    """

    exit_status: int
    label: str
    http_status: int
    model_hint: str
    mcp_label: str


KIND_POLICIES: dict[ErrorKind, KindPolicy] = {
    ErrorKind.ARGUMENT: KindPolicy(
        2, "error", 400, "Correct the arguments and call the tool again, or use another tool.", "bad argument"),
    ErrorKind.INPUT: KindPolicy(
        2, "error", 422, "The input data cannot be used as it is; other arguments will not help. Use other tools "
        "or answer with what you have, saying what could not be read.", "bad input"),
    ErrorKind.CONFIG: KindPolicy(
        2, "configuration error", 500, "This is a configuration problem of this run that you cannot fix; do not "
        "retry this tool. Use other tools or answer with what you have.", "configuration error"),
    ErrorKind.UNAVAILABLE: KindPolicy(
        2, "unavailable", 503, "This resource is unavailable in this run; do not retry at once. Use other tools "
        "or answer with what you have.", "unavailable"),
    ErrorKind.INTERNAL: KindPolicy(
        1, "internal error", 500, "The tool failed; do not retry it. Use other tools or answer with what you have.",
        "internal error"),
}
"""The one mapping from kind to exit status, message prefix, HTTP status, model hint and MCP label."""


class RsragError(Exception):
    """Root of all errors raised by rsrag."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    http_status: ClassVar[int | None] = None
    """A more specific HTTP status than the kind's (404 for an unknown id, 413 for a body too large)."""


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind of any exception: an rsrag error's own; a pydantic validation error of a tool's arguments is
    an ``argument``; anything else is ``internal``."""
    if isinstance(exc, RsragError):
        return exc.kind
    if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
        return ErrorKind.ARGUMENT
    return ErrorKind.INTERNAL


def policy(exc: BaseException) -> KindPolicy:
    """The :class:`KindPolicy` of an exception's kind."""
    return KIND_POLICIES[error_kind(exc)]


def exit_status(exc: BaseException) -> int:
    """The CLI exit status for an exception (2 for everything a user can fix, 1 for a bug)."""
    return policy(exc).exit_status


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (newlines folded), never empty."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def cli_message(exc: BaseException) -> str:
    """The line the CLI prints on standard error: ``error: message`` (or ``configuration error: ...``...)."""
    if error_kind(exc) is ErrorKind.INTERNAL and not isinstance(exc, RsragError):
        return (f"internal error: {type(exc).__name__}: {one_line(exc)} (this is a bug in rsrag; "
                "run again with --debug for the traceback)")
    return f"{policy(exc).label}: {one_line(exc)}"


def http_status(exc: BaseException) -> int:
    """The HTTP status for an exception: the class's own when it names one, else its kind's."""
    if isinstance(exc, RsragError) and exc.http_status is not None:
        return exc.http_status
    return policy(exc).http_status


def mcp_message(exc: BaseException) -> str:
    """The text of the MCP tool error for an exception: ``bad argument: message`` and so on."""
    return f"{policy(exc).mcp_label}: {one_line(exc)}"


def model_message(exc: BaseException) -> str:
    """What the model reads when a tool call fails: the reason, and whether other arguments can fix it."""
    return f"Error ({error_kind(exc).value}): {one_line(exc)}. {policy(exc).model_hint}"


# --- rasters -------------------------------------------------------------------------------------------


class RasterError(RsragError):
    """A raster could not be opened or read."""

    kind = ErrorKind.INPUT


class RasterNotFoundError(RasterError, FileNotFoundError):
    """The path does not exist."""

    http_status = 404


class RasterOpenError(RasterError, OSError):
    """The path exists but is not a raster rsrag can open (a directory, not an image, corrupt header)."""


class RasterReadError(RasterError, OSError):
    """Pixels could not be read (truncated or corrupt file)."""


class InvalidRasterError(RasterError, ValueError):
    """The raster opened but cannot be used (zero size, unsupported band layout)."""


class ImageTooSmallError(InvalidRasterError):
    """The image is too small to be cut into even one patch of the tiling in use, so it cannot be indexed."""


class RangeRequestsUnsupportedError(RasterOpenError):
    """A remote server sends whole files instead of the byte ranges asked for, so it cannot serve windowed reads."""


class SourceError(RasterError, ValueError):
    """A source string is malformed (a URL without a host or object key, an unknown scheme)."""

    kind = ErrorKind.ARGUMENT


class RemoteAccessError(RasterError, PermissionError):
    """A remote server refused access (401/403): credentials are missing or wrong."""

    kind = ErrorKind.CONFIG
    http_status = 502


class RemoteUnavailableError(RasterError, ConnectionError):
    """A remote source cannot be reached (unknown host, refused connection, server error)."""

    kind = ErrorKind.UNAVAILABLE
    http_status = 502


class RemoteTimeoutError(RemoteUnavailableError, TimeoutError):
    """A remote server did not answer in time."""

    http_status = 504


class SceneCacheError(RsragError, OSError):
    """The scene cache could not be written (read-only or full disk) or is inconsistent."""

    kind = ErrorKind.UNAVAILABLE


class WindowError(RsragError, ValueError):
    """A requested window or box is invalid or outside the scene."""

    kind = ErrorKind.ARGUMENT


class TilingError(RsragError, ValueError):
    """A tiling scheme was given invalid parameters."""

    kind = ErrorKind.ARGUMENT


class GeoreferenceError(RsragError, ValueError):
    """A map-coordinate operation was asked of a scene that cannot support it."""

    kind = ErrorKind.ARGUMENT


class AccessDeniedError(RsragError, PermissionError):
    """A restricted context (the web server, the MCP server) may not open this path, URL or format."""

    kind = ErrorKind.ARGUMENT
    http_status = 403


# --- models and stores ---------------------------------------------------------------------------------


class EncoderError(RsragError):
    """An encoder could not be built or used."""

    kind = ErrorKind.CONFIG


class UnknownEncoderError(EncoderError, LookupError):
    """The encoder spec names no known model."""


class WeightsUnavailableError(EncoderError, FileNotFoundError):
    """The weights for an encoder are not available locally and cannot be downloaded."""

    kind = ErrorKind.UNAVAILABLE


class CheckpointMismatchError(EncoderError, ValueError):
    """A checkpoint does not fit the architecture it was loaded into."""


class StoreError(RsragError, OSError):
    """A vector store could not be opened, read or written."""

    kind = ErrorKind.UNAVAILABLE


class StoreUnavailableError(StoreError, ConnectionError):
    """A remote store could not be reached."""


class IndexBusyError(StoreError, BlockingIOError):
    """Another process is writing the same index."""

    http_status = 409


class QueryError(RsragError, ValueError):
    """A query (question, phrase, filter) is empty or malformed."""

    kind = ErrorKind.ARGUMENT


class ConfigError(RsragError, ValueError):
    """A setting is invalid."""

    kind = ErrorKind.CONFIG


class DataError(RsragError, ValueError):
    """An input data set (captions file, knowledge file) is malformed."""

    kind = ErrorKind.INPUT


class IndexNotFoundError(StoreError, LookupError):
    """No complete patch index exists for the scene, encoder and tiling asked for."""

    http_status = 404


class BudgetExceededError(RsragError, ValueError):
    """A request would exceed a budget (zoomed pixels, steps, time)."""

    kind = ErrorKind.ARGUMENT
    http_status = 422


class ModelUnavailableError(RsragError, ConnectionError):
    """The chat model's server cannot be reached (connection refused, timed out)."""

    kind = ErrorKind.UNAVAILABLE


# --- local vision-language models ----------------------------------------------------------------------


class VLMError(RsragError):
    """A local vision-language model could not be used."""

    kind = ErrorKind.CONFIG


class VLMLoadError(VLMError, OSError):
    """Weights exist but the model or its processor could not be built from them."""


class VLMInputError(VLMError, ValueError):
    """A message, image or tool schema given to the model cannot be rendered."""

    kind = ErrorKind.INPUT


class UnknownChatFamilyError(ConfigError, LookupError):
    """No chat family is registered under the requested name or for the checkpoint's model type."""


# --- traces --------------------------------------------------------------------------------------------


class TraceError(RsragError):
    """A run trace could not be recorded, read or replayed."""

    kind = ErrorKind.INPUT


class TraceNotFoundError(TraceError, LookupError):
    """No trace exists for the thread or run asked for."""

    kind = ErrorKind.ARGUMENT
    http_status = 404


class TraceIntegrityError(TraceError, ValueError):
    """A stored trace fails its hash-chain check (an event was edited, removed or reordered)."""


class ReplayExhaustedError(TraceError, RuntimeError):
    """A replayed run asked the model for more steps than the trace recorded."""


# --- the web workspace ---------------------------------------------------------------------------------


class WebError(RsragError):
    """Root of the errors raised by the web workspace."""

    kind = ErrorKind.ARGUMENT


class UnknownImageError(WebError, LookupError):
    """The image id is not registered with this server."""

    http_status = 404


class UnknownEvidenceError(WebError, LookupError):
    """The thread has no evidence with that id (or no crop for it)."""

    http_status = 404


class TileNotFoundError(WebError, LookupError):
    """The tile lies outside the image's pyramid."""

    http_status = 404


class BadRequestError(WebError, ValueError):
    """The request is malformed: invalid JSON, a missing or invalid field."""


class RequestTooLargeError(WebError, ValueError):
    """A request body (other than an upload) exceeds the server's limit."""

    http_status = 413


class UploadTooLargeError(WebError, ValueError):
    """An upload exceeds the server's size limit."""

    kind = ErrorKind.INPUT
    http_status = 413


class UnsupportedUploadError(WebError, ValueError):
    """An upload is not an image type the server accepts."""

    kind = ErrorKind.INPUT
    http_status = 415


class ThreadBusyError(WebError, RuntimeError):
    """The chat thread is already answering a question (for example in another browser tab)."""

    kind = ErrorKind.UNAVAILABLE
    http_status = 409
