"""Running a question for the page: the agent's steps as JSON events, one thread at a time.

:func:`ask_events` runs :meth:`rsrag.agent.interfaces.api.Analyst.stream` in a worker thread and yields one JSON line
per event (``start``, ``step``, then ``answer`` or ``error``; ``progress`` while the scene's index is being
encoded: the windows a search visits, a background fill). If the client goes away, the async generator
is closed; the worker then stops the graph between two steps and releases the thread, so the session stays
usable. :class:`ThreadLocks` lets only one question run per chat thread at a time (two browser tabs on the
same thread get a clear 409 instead of interleaved checkpoints).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.evidence import Answer, Evidence
from rsrag.agent.interfaces.web.errors import BadRequestError, ThreadBusyError, http_status
from rsrag.tools.errors import RsragError, error_kind
from rsrag.tools.georef import map_box_to_lonlat
from rsrag.tools.indexing import IndexProgress

log = logging.getLogger(__name__)

THREAD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_QUESTION_CHARS = 4000
PROGRESS_EVERY_S = 0.25
"""Least interval between two indexing progress events of one stage and level (the last one always goes)."""


def check_thread_id(thread: str) -> str:
    """Return ``thread`` if it is a valid thread id (letters, digits, ``_.:-``; 1 to 64 characters)."""
    if not isinstance(thread, str) or not THREAD_ID.match(thread):
        raise BadRequestError("thread must be 1 to 64 letters, digits or _ . : - characters")
    return thread


class Lease:
    """A held thread lock, released exactly once: by the worker that ran the question, or, if no worker
    ever claimed it (the client left before the stream started), by whoever drops the stream."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._state = "held"
        self._guard = threading.Lock()

    def claim(self) -> None:
        """Hand the lease to the worker; only :meth:`release` frees it from now on."""
        with self._guard:
            if self._state == "held":
                self._state = "claimed"

    def release(self) -> None:
        with self._guard:
            if self._state != "released":
                self._state = "released"
                self._lock.release()

    def release_unclaimed(self) -> None:
        with self._guard:
            unclaimed = self._state == "held"
        if unclaimed:
            self.release()


class ThreadLocks:
    """One lock per chat thread; :meth:`acquire` refuses, rather than waits, when the thread is busy."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def acquire(self, thread: str) -> Lease:
        """Take the thread's lock, or raise :class:`ThreadBusyError` if a question is running on it."""
        with self._guard:
            lock = self._locks.setdefault(thread, threading.Lock())
        if not lock.acquire(blocking=False):
            raise ThreadBusyError(f"thread {thread!r} is already answering a question (another tab?); "
                                  "wait for it to finish or start a new thread")
        return Lease(lock)

    def busy(self, thread: str) -> bool:
        with self._guard:
            lock = self._locks.get(thread)
        return bool(lock and lock.locked())


def evidence_json(ev: Evidence) -> dict[str, Any]:
    """Evidence for the page: :meth:`Evidence.to_json` plus the knowledge snippet and lon/lat bounds."""
    out = ev.to_json()
    if ev.snippet:
        out["snippet"] = ev.snippet
    out["has_crop"] = ev.region is not None or bool(ev.crop)
    out.pop("crop", None)  # a server path: the page fetches crops by evidence id instead
    if ev.region is not None and ev.region.map_box is not None:
        try:
            out["lonlat"] = list(map_box_to_lonlat(ev.region.map_box))
        except RsragError:
            pass
    return out


def answer_json(answer: Answer) -> dict[str, Any]:
    """The answer for the page: :meth:`Answer.to_json` with evidence as :func:`evidence_json`."""
    out = answer.to_json()
    out["evidence"] = [evidence_json(e) for e in answer.evidence]
    return out


def message_json(message: Any) -> dict[str, Any]:
    """A chat message for the trace view (images replaced by a marker; never base64 pixels)."""
    content = message.content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                parts.append("[image]")
        text = "\n".join(parts)
    else:
        text = str(content)
    out: dict[str, Any] = {"type": message.type, "text": text}
    for key in ("name", "tool_call_id", "status"):
        value = getattr(message, key, None)
        if value:
            out[key] = value
    calls = getattr(message, "tool_calls", None)
    if calls:
        out["tool_calls"] = [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in calls]
    extra = getattr(message, "additional_kwargs", {}) or {}
    if extra.get("rsrag_visual"):
        out["visual"] = True
    return out


def step_event(node: str, text: str, update: dict[str, Any], started: float) -> dict[str, Any]:
    """The JSON event for one streamed step; new evidence records travel with it so boxes appear at once."""
    event: dict[str, Any] = {"type": "step", "node": node, "text": text, "t": round(time.monotonic() - started, 3)}
    ledger = update.get("evidence")
    if isinstance(ledger, dict) and ledger:
        event["evidence"] = [evidence_json(e) for e in ledger.values()]
    if text == node:  # a bookkeeping update with no message: say what it recorded
        if event.get("evidence"):
            event["text"] = "evidence " + ", ".join(e["id"] for e in event["evidence"])
        elif isinstance(update.get("zoomed_pixels"), int) and update["zoomed_pixels"] > 0:
            event["text"] = f"zoom budget: {update['zoomed_pixels']:,} px read"
        elif node == "prepare":
            event["text"] = "new question"
    return event


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, default=str) + "\n").encode()


async def ask_events(
    analyst: Analyst, image: Path | None, image_id: str | None, question: str, thread: str, lease: Lease,
    record: list[dict[str, Any]] | None = None, catalog: str | None = None,
) -> AsyncIterator[bytes]:
    """Run one question and yield its events as JSON lines; releases ``lease`` when the run ends.

    Args:
        analyst: the agent.
        image: the scene's path (already resolved through the registry); ``None`` for a question across
            ``catalog`` with no scene open.
        image_id: the scene's id, echoed in the ``start`` event.
        question: the analyst's question.
        thread: the chat thread id.
        lease: the thread's lock, already held by the caller (see :class:`ThreadLocks`).
        record: where the step events are also appended (the server keeps them for the trace view).
        catalog: ask across the scenes of this catalog.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    cancel = threading.Event()
    started = time.monotonic()

    def emit(event: dict[str, Any] | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down): nothing to tell
            pass

    last_progress: dict[tuple[str, int | None], float] = {}

    def on_index(p: IndexProgress) -> None:
        """Indexing of this scene (a search encoding what it visits, a background fill) as progress events."""
        if fingerprint is not None and p.scene not in (None, fingerprint):
            return
        now = time.monotonic()
        key = (p.stage, p.level)
        if p.done < p.total and now - last_progress.get(key, 0.0) < PROGRESS_EVERY_S:
            return
        last_progress[key] = now
        emit({"type": "progress", "stage": p.stage, "level": p.level, "levels": p.levels, "done": p.done,
              "total": p.total, "rate": round(p.rate, 1), "text": p.describe(), "t": round(now - started, 3)})

    fingerprint: str | None = None
    try:
        fingerprint = analyst.workspace.scene(image).fingerprint if image is not None else None
    except RsragError:
        pass  # the run below reports the bad image
    remove_listener = analyst.workspace.add_index_listener(on_index)

    def work() -> None:
        try:
            steps = analyst.stream(image, question, thread_id=thread, catalog=catalog)
            try:
                for step in steps:
                    if cancel.is_set():
                        break
                    event = step_event(step.node, step.text, step.update, started)
                    if record is not None:
                        record.append({k: v for k, v in event.items() if k != "evidence"}
                                      | {"evidence_ids": [e["id"] for e in event.get("evidence", [])]})
                    emit(event)
                    answer = step.update.get("answer")
                    if isinstance(answer, Answer):
                        answer = answer.model_copy(update={"thread_id": thread})
                        emit({"type": "answer", "answer": answer_json(answer), "t": round(time.monotonic() - started, 3)})
            finally:
                _close(steps)
        except RsragError as exc:  # the same status and kind as a JSON error body (rsrag.tools.errors)
            emit({"type": "error", "error": str(exc), "status": http_status(exc), "kind": error_kind(exc).value,
                  "error_type": type(exc).__name__})
        except Exception as exc:  # a bug or a backend failure: report it on the stream, keep the server up
            log.exception("question on thread %s failed", thread)
            emit({"type": "error", "error": f"the agent failed: {type(exc).__name__}: {exc}", "status": 500,
                  "kind": "internal", "error_type": type(exc).__name__})
        finally:
            remove_listener()
            lease.release()
            emit(None)

    worker = threading.Thread(target=work, name=f"rsrag-ask-{thread}", daemon=True)
    try:
        start = {"type": "start", "thread": thread, "image": image_id, "question": question}
        yield _line(start | ({"catalog": catalog} if catalog else {}))
        lease.claim()
        worker.start()
        while (event := await queue.get()) is not None:
            yield _line(event)
    finally:
        cancel.set()  # the client left (or the run ended): the worker stops between two steps
        if not worker.is_alive():
            remove_listener()
        lease.release_unclaimed()  # closed before the worker started: it will never release the lock itself


def _close(steps: Iterable[Any]) -> None:
    close = getattr(steps, "close", None)
    if close is not None:
        close()


def question_stream(
    analyst: Analyst, image: Path | None, image_id: str | None, question: str, thread: str, lease: Lease,
    record: list[dict[str, Any]] | None = None, catalog: str | None = None,
) -> AsyncIterator[bytes]:
    """:func:`ask_events`, made safe to drop unstarted: if the stream is never iterated (the client left
    before the response began) and is garbage-collected, the thread's lock is released all the same."""
    events = ask_events(analyst, image, image_id, question, thread, lease, record, catalog)
    weakref.finalize(events, lease.release_unclaimed)
    return events
