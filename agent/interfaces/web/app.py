"""The web workspace's HTTP application (Starlette): images, tiles, questions, evidence and traces.

Routes (all JSON unless noted; errors are ``{"error": message, "type": name, "kind": kind}`` with the status
:func:`rsrag.tools.errors.http_status` gives their kind, never a traceback):

``GET  /``                                           the analyst page (``/static/*``: its scripts, styles and the
                                                     bundled viewer library; ``/favicon.ico``)
``GET  /api/images``                                 registered images
``POST /api/images?name=FILE``                       upload (raw body; size-limited; GeoTIFF/COG, JPEG, PNG)
``GET  /api/images/{id}``                            one image: size, pyramid, CRS, geotransform
``GET  /api/images/{id}/tiles/{level}/{col}_{row}.jpg``  a 256 px deep-zoom tile, cut on demand (JPEG)
``GET  /api/catalog``                                the served catalog's scenes (id, image id, source, lon/lat
                                                     footprint, time), for the page's scene list and overview map
``POST /api/ask``                                    ``{"image", "question", "thread"?, "catalog"?}`` -> JSON lines
                                                     stream (``"catalog": true``: across the served catalog's
                                                     scenes; ``image`` may then be null)
``GET  /api/threads/{thread}/evidence``              the thread's evidence ledger
``GET  /api/threads/{thread}/evidence/{id}/crop``    the evidence's crop (PNG; cut from the scene if unsaved)
``GET  /api/threads/{thread}/trace``                 the thread's messages and streamed steps

Threads are visible to a server only for the images it serves: a thread that was ever asked about an image
this server does not serve (other servers and the CLI share the sessions file) answers exactly like a
thread that does not exist (no evidence, no messages, no crop). ``POST /api/ask`` refuses a body larger
than :data:`MAX_ASK_BODY_BYTES` before reading it (413).
"""

from __future__ import annotations

import json
import logging
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.evidence import Evidence
from rsrag.agent.interfaces.web.assets import static_routes
from rsrag.agent.interfaces.web.errors import BadRequestError, RequestTooLargeError, UnknownEvidenceError, http_status
from rsrag.agent.interfaces.web.registry import DEFAULT_MAX_UPLOAD_BYTES, ImageRegistry
from rsrag.agent.interfaces.web.streaming import (
    MAX_QUESTION_CHARS,
    ThreadLocks,
    check_thread_id,
    evidence_json,
    message_json,
    question_stream,
)
from rsrag.agent.interfaces.web.tiles import TileCache, encode_image, render_tile
from rsrag.tools.errors import AccessDeniedError, RsragError, error_kind
from rsrag.tools.raster import Scene
from rsrag.tools.region import PixelBox
from rsrag.tools.sandbox import Sandbox
from rsrag.tools.sources import source_key

log = logging.getLogger(__name__)

CROP_SIDE = 512
MAX_RECORDED_STEPS = 2000
MAX_ASK_BODY_BYTES = 64 * 1024
"""The largest ``POST /api/ask`` body: a 4,000-character question, JSON-escaped, with room to spare."""


class WebState:
    """The server's state: the agent, the image registry, the tile cache and the per-thread records."""

    def __init__(self, analyst: Analyst, registry: ImageRegistry, tile_cache: TileCache | None = None,
                 catalog: str | None = None) -> None:
        self.analyst = analyst
        self.registry = registry
        self.catalog = catalog
        """The catalog served (its scenes are registered images), if any."""
        self.tiles = tile_cache or TileCache()
        self.locks = ThreadLocks()
        self.steps: dict[str, list[dict[str, Any]]] = {}


def create_app(
    analyst: Analyst,
    images: list[str | Path] | None = None,
    *,
    upload_dir: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    catalog: str | None = None,
) -> Starlette:
    """Build the web application around an :class:`~rsrag.agent.interfaces.api.Analyst`.

    Args:
        analyst: the configured agent (its workspace also opens the scenes the tiles are cut from).
        images: image files to register now; the page can open only these and uploads.
        upload_dir: where uploads go (default: ``uploads`` next to the analyst's crops).
        max_upload_bytes: the largest upload accepted.
        catalog: a catalog in the analyst's store to serve: its scenes are registered (the page lists them
            with their footprints on an overview map) and questions can go across them.

    Raises:
        RasterError: one of ``images`` (or of the catalog's scenes) cannot be opened.
        QueryError: the catalog has no scenes.
    """
    folder = Path(upload_dir) if upload_dir else analyst.context.crop_dir.parent / "uploads"
    registry = ImageRegistry(folder, max_upload_bytes, opener=analyst.workspace.scene)
    for image in images or []:
        registry.register(image)
    for scene in analyst.catalog_scenes(catalog) if catalog else []:
        registry.register(scene.source, name=scene.id)
    ws = WebState(analyst, registry, catalog=catalog)
    routes = [
        Route("/", _page),
        *static_routes(),
        Route("/api/images", _list_images, methods=["GET"]),
        Route("/api/images", _upload, methods=["POST"]),
        Route("/api/images/{image_id}", _image),
        Route("/api/images/{image_id}/tiles/{level:int}/{col:int}_{row:int}.jpg", _tile),
        Route("/api/catalog", _catalog),
        Route("/api/ask", _ask, methods=["POST"]),
        Route("/api/threads/{thread}/evidence", _evidence),
        Route("/api/threads/{thread}/evidence/{evidence_id}/crop", _crop),
        Route("/api/threads/{thread}/trace", _trace),
    ]
    app = Starlette(routes=routes, exception_handlers={RsragError: _error_response})
    app.state.web = ws
    return app


async def _error_response(request: Request, exc: Exception) -> JSONResponse:
    status = http_status(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": str(exc), "type": type(exc).__name__, "kind": error_kind(exc).value},
                        status_code=status)


def _state(request: Request) -> WebState:
    return request.app.state.web  # type: ignore[no-any-return]


# --- page -----------------------------------------------------------------------------------------------


async def _page(request: Request) -> Response:
    html = resources.files("rsrag.agent.interfaces.web").joinpath("index.html").read_text(encoding="utf-8")
    return Response(html, media_type="text/html", headers={"Cache-Control": "no-cache"})


# --- images and tiles -----------------------------------------------------------------------------------


async def _list_images(request: Request) -> JSONResponse:
    ws = _state(request)
    return JSONResponse({"images": [e.to_json() for e in ws.registry], "max_upload_bytes": ws.registry.max_upload_bytes})


async def _upload(request: Request) -> Response:
    from starlette.requests import ClientDisconnect

    name = request.query_params.get("name") or request.headers.get("x-filename") or ""
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else None
    try:
        entry = await _state(request).registry.upload(name, request.stream(), declared_size=size)
    except ClientDisconnect:  # the client went away mid-upload: nothing was kept, nobody to answer
        log.info("upload of %r aborted by the client; nothing kept", name[:120])
        return Response(status_code=400)
    return JSONResponse(entry.to_json(), status_code=201)


async def _image(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).registry.get(request.path_params["image_id"]).to_json())


async def _tile(request: Request) -> Response:
    ws = _state(request)
    entry = ws.registry.get(request.path_params["image_id"])
    key = (entry.id, request.path_params["level"], request.path_params["col"], request.path_params["row"])
    data = ws.tiles.get(key)
    if data is None:
        data = await run_in_threadpool(render_tile, entry.scene, entry.pyramid, *key[1:])
        ws.tiles.put(key, data)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def _catalog(request: Request) -> JSONResponse:
    ws = _state(request)
    if ws.catalog is None:
        return JSONResponse({"name": None, "scenes": []})
    scenes = await run_in_threadpool(ws.analyst.catalog_scenes, ws.catalog)
    by_fingerprint = {e.scene.fingerprint: e.id for e in ws.registry}
    return JSONResponse({"name": ws.catalog, "scenes": [
        {"id": s.id, "image": by_fingerprint.get(s.fingerprint), "source": s.source, "fingerprint": s.fingerprint,
         "size": [s.width, s.height], "bbox": list(s.bbox) if s.bbox else None, "footprint": s.footprint,
         "datetime": s.datetime} for s in scenes]})


# --- questions --------------------------------------------------------------------------------------------


async def _json_body(request: Request, limit: int = MAX_ASK_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object, refusing a body over ``limit`` bytes before reading it (by its declared
    length) or as soon as it passes the limit (a chunked body)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
        raise RequestTooLargeError(f"the request body is {declared[:20]} bytes; this endpoint accepts at most "
                                   f"{limit:,} bytes (a question of at most {MAX_QUESTION_CHARS} characters)")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise RequestTooLargeError(f"the request body is over {limit:,} bytes; this endpoint accepts at most "
                                       f"{limit:,} bytes (a question of at most {MAX_QUESTION_CHARS} characters)")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BadRequestError('the request body must be a JSON object like {"image": ID, "question": TEXT}')
    return body


async def _ask(request: Request) -> StreamingResponse:
    ws = _state(request)
    body = await _json_body(request)
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRequestError("question must be a non-empty string")
    if len(question) > MAX_QUESTION_CHARS:
        raise BadRequestError(f"question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    across = body.get("catalog")
    if across not in (None, False, True):
        raise BadRequestError("catalog must be true (ask across the served catalog's scenes) or false")
    if across and ws.catalog is None:
        raise BadRequestError("this server serves no catalog: start it with `rsrag serve --catalog NAME`")
    image_id = body.get("image")
    if not (isinstance(image_id, str) or (across and image_id is None)):
        raise BadRequestError("image must be the id of a registered image (see GET /api/images)")
    entry = ws.registry.get(image_id) if image_id is not None else None
    thread = check_thread_id(body.get("thread") or uuid.uuid4().hex)
    if body.get("thread") and not await run_in_threadpool(_continuable, ws, thread):
        raise BadRequestError(f"thread {thread!r} cannot be continued on this server (it holds questions about "
                              "images this server does not serve); start a new thread")
    lease = ws.locks.acquire(thread)
    record = ws.steps.setdefault(thread, [])
    del record[: max(0, len(record) - MAX_RECORDED_STEPS)]
    events = question_stream(ws.analyst, entry.path if entry else None, entry.id if entry else None, question.strip(),
                             thread, lease, record, catalog=ws.catalog if across else None)
    return StreamingResponse(events, media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --- threads: evidence, crops, trace -------------------------------------------------------------------------


def _thread_state(ws: WebState, thread: str) -> dict[str, Any]:
    """The thread's checkpointed values, or ``{}`` when it is not visible to this server: it does not exist,
    or some question on it was about an image this server does not serve (the scene in the checkpoint, the
    scenes of its traced runs, the scenes of its region evidence)."""
    analyst = ws.analyst
    values = dict(analyst.graph.get_state(analyst._config(check_thread_id(thread))).values or {})
    if not values:
        return {}
    served = list(ws.registry)
    paths = {str(e.path) for e in served}
    fingerprints = {e.scene.fingerprint for e in served}
    scene = values.get("scene")
    if scene is None and (ws.catalog is None or values.get("catalog") != ws.catalog):
        return {}
    if scene is not None and source_key(scene) not in paths:
        return {}
    for ev in (values.get("evidence") or {}).values():
        if ev.region is not None and ev.region.scene not in fingerprints:
            return {}
    if analyst.tracer.settings.enabled:
        for run in analyst.tracer.store.runs(thread=thread):
            if (run.scene_fingerprint and run.scene_fingerprint not in fingerprints) or (
                    run.scene_path and run.scene_path not in paths and not run.scene_fingerprint):
                return {}
    return values


def _continuable(ws: WebState, thread: str) -> bool:
    """Whether a question may go on ``thread`` here: a new thread, or one visible to this server."""
    analyst = ws.analyst
    exists = bool(analyst.graph.get_state(analyst._config(thread)).values)
    return not exists or bool(_thread_state(ws, thread))


def _ledger(ws: WebState, thread: str) -> dict[str, Evidence]:
    return dict(_thread_state(ws, thread).get("evidence") or {})


async def _evidence(request: Request) -> JSONResponse:
    ledger = await run_in_threadpool(_ledger, _state(request), request.path_params["thread"])
    return JSONResponse({"evidence": [evidence_json(e) for e in ledger.values()]})


async def _crop(request: Request) -> Response:
    ws = _state(request)
    thread, eid = request.path_params["thread"], request.path_params["evidence_id"]
    ev = (await run_in_threadpool(_ledger, ws, thread)).get(eid)
    if ev is None:
        raise UnknownEvidenceError(f"thread {thread!r} has no evidence {eid[:20]!r}")
    cache = {"Cache-Control": "private, max-age=3600"}
    if ev.crop:
        try:  # the saved crop, if its real path lies inside the crop folder
            saved = Sandbox.of([ws.analyst.context.crop_dir]).check_inside(ev.crop)
        except (AccessDeniedError, RsragError):
            saved = None
        if saved is not None and saved.is_file():
            return FileResponse(saved, headers=cache)
    entry = ws.registry.by_fingerprint(ev.region.scene) if ev.region is not None else None
    if entry is None or ev.region is None:
        raise UnknownEvidenceError(f"evidence {eid} has no crop and no region in an image registered here")
    box = entry.scene.clip_box(ev.region.box)
    return Response(await run_in_threadpool(_cut_crop, entry.scene, box), media_type="image/png", headers=cache)


def _cut_crop(scene: Scene, box: PixelBox) -> bytes:
    return encode_image(scene.read_display(box, out_size=box.fit_within(CROP_SIDE)), fmt="PNG")


async def _trace(request: Request) -> JSONResponse:
    ws = _state(request)
    thread = check_thread_id(request.path_params["thread"])
    values = await run_in_threadpool(_thread_state, ws, thread)
    messages = list(values.get("messages") or [])
    return JSONResponse({"thread": thread, "busy": ws.locks.busy(thread),
                         "messages": [message_json(m) for m in messages],
                         "steps": list(ws.steps.get(thread, [])) if values else []})
