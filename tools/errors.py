"""The rsrag error tree.

Every error rsrag raises on purpose derives from :class:`RsragError`. Subclasses also inherit the builtin
they resemble, so callers that already catch ``OSError`` or ``ValueError`` keep working. Messages name the
thing at fault (a file, a spec, an argument) and say what to change. The CLI catches ``RsragError`` and
prints the message; it never shows a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class RsragError(Exception):
    """Root of all errors raised by rsrag."""


# --- rasters -------------------------------------------------------------------------------------------


class RasterError(RsragError):
    """A raster could not be opened or read."""


class RasterNotFoundError(RasterError, FileNotFoundError):
    """The path does not exist."""


class RasterOpenError(RasterError, OSError):
    """The path exists but is not a raster rsrag can open (a directory, not an image, corrupt header)."""


class RasterReadError(RasterError, OSError):
    """Pixels could not be read (truncated or corrupt file)."""


class InvalidRasterError(RasterError, ValueError):
    """The raster opened but cannot be used (zero size, unsupported band layout)."""


class WindowError(RsragError, ValueError):
    """A requested window or box is invalid or outside the scene."""


class TilingError(RsragError, ValueError):
    """A tiling scheme was given invalid parameters."""


class GeoreferenceError(RsragError, ValueError):
    """A map-coordinate operation was asked of a scene that cannot support it."""


# --- models and stores ---------------------------------------------------------------------------------


class EncoderError(RsragError):
    """An encoder could not be built or used."""


class UnknownEncoderError(EncoderError, LookupError):
    """The encoder spec names no known model."""


class WeightsUnavailableError(EncoderError, FileNotFoundError):
    """The weights for an encoder are not available locally and cannot be downloaded."""


class CheckpointMismatchError(EncoderError, ValueError):
    """A checkpoint does not fit the architecture it was loaded into."""


class StoreError(RsragError, OSError):
    """A vector store could not be opened, read or written."""


class StoreUnavailableError(StoreError, ConnectionError):
    """A remote store could not be reached."""


class IndexBusyError(StoreError, BlockingIOError):
    """Another process is writing the same index."""


class QueryError(RsragError, ValueError):
    """A query (question, phrase, filter) is empty or malformed."""


class ConfigError(RsragError, ValueError):
    """A setting is invalid."""


class DataError(RsragError, ValueError):
    """An input data set (captions file, knowledge file) is malformed."""


class IndexNotFoundError(StoreError, LookupError):
    """No complete patch index exists for the scene, encoder and tiling asked for."""


class BudgetExceededError(RsragError, ValueError):
    """A request would exceed a budget (zoomed pixels, steps, time)."""


# --- traces --------------------------------------------------------------------------------------------


class TraceError(RsragError):
    """A run trace could not be recorded, read or replayed."""


class TraceNotFoundError(TraceError, LookupError):
    """No trace exists for the thread or run asked for."""


class TraceIntegrityError(TraceError, ValueError):
    """A stored trace fails its hash-chain check (an event was edited, removed or reordered)."""


class ReplayExhaustedError(TraceError, RuntimeError):
    """A replayed run asked the model for more steps than the trace recorded."""
