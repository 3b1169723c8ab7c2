"""Importing lancedb without paying for its REST namespace client.

``import lancedb`` (0.40) imports ``lance_namespace``, whose generated REST client
(``lance_namespace_urllib3_client``) decorates a few hundred API methods with :func:`pydantic.validate_call`.
Pydantic builds each method's validator when the decorator runs, so the import spends 0.5-0.9 s of a 1.2-1.8 s
``import lancedb`` on these 2 cores building validators for HTTP calls an embedded store never makes
(BENCHMARKS.md, "The store's import"). Every command that opens a store pays it: ``rsrag ask``, ``index``,
``serve``.

:func:`import_lancedb` imports lancedb with ``pydantic.validate_call`` replaced, for the duration of that import
only, by a decorator that builds the same validator on the method's first call. The methods validate exactly
as before when they are called (``tests/unit/tools/test_store_import.py`` checks one); only when the work is
done changes. Anything that is not a plain function is decorated at once, as pydantic would.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_LOCK = threading.Lock()


def _deferred(original: Callable[..., Any]) -> Callable[..., Any]:
    """A ``validate_call`` with the signature of ``original`` that builds its validator on first call."""

    def validate_call(func: Any = None, /, *, config: Any = None, validate_return: bool = False) -> Any:
        def decorate(fn: Any) -> Any:
            if not inspect.isfunction(fn):
                return original(config=config, validate_return=validate_return)(fn)
            built: Callable[..., Any] | None = None
            build_lock = threading.Lock()

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal built
                if built is None:
                    with build_lock:
                        if built is None:
                            built = original(config=config, validate_return=validate_return)(fn)
                return built(*args, **kwargs)

            return call

        return decorate if func is None else decorate(func)

    return validate_call


_MODULE: ModuleType | None = None
"""The imported module, set once its import has finished (``sys.modules`` holds it from the moment its import
*starts*: a second thread that took it from there would get a half-initialised module without ``connect``)."""


def import_lancedb() -> ModuleType:
    """Import :mod:`lancedb` (once per process) with the REST client's validators built on first use.

    Safe from several threads at once (the agent runs a question's searches in parallel): every caller waits
    until the import has finished.

    Returns:
        The :mod:`lancedb` module.
    """
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    with _LOCK:
        if _MODULE is None:
            if "lancedb" in sys.modules:  # imported, or being imported, outside this function: Python's lock waits
                import lancedb
            else:
                import pydantic

                original = pydantic.validate_call
                pydantic.validate_call = _deferred(original)
                try:
                    import lancedb
                finally:
                    pydantic.validate_call = original
            _MODULE = lancedb
    return _MODULE
