"""The dashboard's web application: pages, JSON endpoints, live events, recordings.

Starlette (ASGI) with Jinja2 templates (autoescaped: every caller-controlled value is text),
served by uvicorn in its own process (:mod:`.server`), so nothing it does can delay a call.
The store's API is blocking: every store call runs on one dedicated thread
(:class:`StoreReader`), which also keeps a SQLite connection on the thread that opened it.

Pages: ``/`` live calls (server-sent events from ``/events/live``), ``/calls`` history with
search, filters and pages, ``/calls/{uuid}`` detail, ``/stats`` charts, ``/login``. JSON:
``/api/live``, ``/api/calls``, ``/api/calls/{uuid}``, ``/api/stats``. Recordings:
``/recordings/{uuid}.wav`` (HTTP Range, for seeking), only files under the recordings
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from . import charts
from .auth import Auth, Guard, LoginThrottle, safe_next
from .live import LiveFeed
from .views import Filters, conversation, digits, pager

log = logging.getLogger("agi_voice.dashboard")

HERE = Path(__file__).parent
STATS_HOURS = (6, 24, 72, 168)


class StoreReader:
    """The store on one thread of its own: ``await reader.run(store.method, ...)``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dashboard-store")

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kw))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.submit(self.store.close).result(5)
        self._pool.shutdown(wait=False)


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    env = t.env
    env.autoescape = True  # every template, whatever its name
    env.filters.update(clock=charts.clock, duration=charts.duration, stamp=charts.stamp,
                       status_class=charts.status_class,
                       pretty=lambda v: json.dumps(v, indent=2, ensure_ascii=False))
    return t


def create_app(*, store: Any, auth: Auth, feed: LiveFeed, recordings_dir: Path,
               title: str = "agi-voice", throttle: LoginThrottle | None = None) -> Starlette:
    """The dashboard app over an open :class:`~media_sidecar.store.CallStore` (closed when
    the app stops). ``throttle``: failed logins per address (default: 5 in 15 minutes)."""
    throttle = throttle or LoginThrottle()
    reader = StoreReader(store)
    templates = _templates()
    recordings_root = recordings_dir.resolve()

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        ctx.update(title=title, login=auth.required, nav=name.split(".")[0])
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    # -- live -------------------------------------------------------------------------------

    async def live_page(request: Request) -> Response:
        snap = await feed.poll()
        return page(request, "live.html", snap=snap)

    async def live_api(request: Request) -> Response:
        return JSONResponse(await feed.poll())

    async def live_events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            async for snap in feed.subscribe():
                yield f"data: {json.dumps(snap, ensure_ascii=False)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    # -- history -----------------------------------------------------------------------------

    async def _list(request: Request) -> tuple[Filters, list[dict[str, Any]], int]:
        f = Filters.from_query(request.query_params)
        rows, total = await reader.run(store.list_calls, **f.store_args())
        return f, rows, total

    async def history_page(request: Request) -> Response:
        f, rows, total = await _list(request)
        assistants = await reader.run(store.assistants)
        return page(request, "history.html", filters=f, rows=rows, pager=pager(f, total),
                    assistants=assistants, statuses=charts.STATUS_ORDER)

    async def history_api(request: Request) -> Response:
        f, rows, total = await _list(request)
        return JSONResponse({"calls": rows, "total": total, "page": f.page,
                             "page_size": f.store_args()["limit"]})

    # -- detail ------------------------------------------------------------------------------

    async def _call(request: Request) -> dict[str, Any] | None:
        uuid = str(request.path_params["uuid"])[:64]
        call: dict[str, Any] | None = await reader.run(store.get_call, uuid)
        return call

    async def detail_page(request: Request) -> Response:
        call = await _call(request)
        if call is None:
            uuid = str(request.path_params["uuid"])[:64]
            live = any(c.get("uuid") == uuid for c in feed.latest.get("calls", []))
            return page(request, "missing.html", status=404, uuid=uuid, live=live)
        recording = call.get("recording") or {}
        return page(request, "detail.html", call=call, items=conversation(call),
                    waterfall=charts.waterfall(call.get("turns") or []),
                    stages=charts.STAGES, digits=digits(call),
                    audio=bool(recording.get("path")) and _recording_path(recording) is not None,
                    recording=recording)

    async def detail_api(request: Request) -> Response:
        call = await _call(request)
        if call is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        return JSONResponse(call)

    def _recording_path(recording: dict[str, Any]) -> Path | None:
        """The recording's file if it is under the recordings directory and exists."""
        try:
            path = Path(str(recording.get("path", ""))).resolve()
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(recordings_root) or not path.is_file():
            return None
        return path

    async def recording_file(request: Request) -> Response:
        call = await _call(request)
        path = _recording_path((call or {}).get("recording") or {})
        if path is None:
            return PlainTextResponse("no recording\n", status_code=404)
        return FileResponse(path, media_type="audio/wav",
                            headers={"cache-control": "private, no-store"})

    # -- stats ---------------------------------------------------------------------------------

    async def _stats(request: Request) -> dict[str, Any]:
        try:
            hours = int(request.query_params.get("hours", "24"))
        except ValueError:
            hours = 24
        hours = hours if hours in STATS_HOURS else 24
        now = dt.datetime.now(dt.UTC)
        until = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        since = until - dt.timedelta(hours=hours)
        span = {"since": since.isoformat(), "until": until.isoformat()}
        per_hour = await reader.run(store.calls_per_hour, **span)
        latency = await reader.run(store.latency_by_engine, **span)
        return {"hours": hours, **span, "per_hour": per_hour, "latency": latency,
                "bars": charts.calls_per_hour(per_hour, since, until),
                "latency_bars": charts.latency_bars(latency)}

    async def stats_page(request: Request) -> Response:
        stats = await _stats(request)
        return page(request, "stats.html", stats=stats, choices=STATS_HOURS)

    async def stats_api(request: Request) -> Response:
        stats = await _stats(request)
        return JSONResponse({k: stats[k] for k in ("since", "until", "per_hour", "latency")})

    # -- login ---------------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login.html", next=safe_next(request.query_params.get(
                "next", "/")), error="", user=auth.user)
        form = await request.form()
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        target = safe_next(str(form.get("next", "/")))
        address = request.client.host if request.client else "?"
        wait = throttle.retry_after(address)
        if wait > 0:
            resp = page(request, "login.html", status=429, next=target, user=user,
                        error=f"Too many failed logins: try again in {wait / 60:.0f} min.")
            resp.headers["retry-after"] = str(int(wait) + 1)
            return resp
        if not auth.required or not auth.check(user, password):
            throttle.failed(address)
            log.warning("dashboard: failed login for user %r from %s", user[:40], address)
            return page(request, "login.html", status=401, next=target,
                        error="Wrong user or password.", user=user)
        throttle.succeeded(address)
        resp = RedirectResponse(target, status_code=303)
        resp.headers.append("set-cookie", auth.cookie_header(auth.issue()))
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.headers.append("set-cookie", auth.cookie_header("", max_age=0))
        return resp

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            reader.close()

    routes = [
        Route("/", live_page),
        Route("/events/live", live_events),
        Route("/api/live", live_api),
        Route("/calls", history_page),
        Route("/api/calls", history_api),
        Route("/calls/{uuid}", detail_page),
        Route("/api/calls/{uuid}", detail_api),
        Route("/recordings/{uuid}.wav", recording_file),
        Route("/stats", stats_page),
        Route("/api/stats", stats_api),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def store_down(request: Request, exc: Exception) -> Response:
        log.error("dashboard: the call store cannot be read: %s", exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "the call store cannot be read"}, status_code=503)
        return page(request, "missing.html", status=503, uuid="", live=False, store_error=True)

    from media_sidecar.store import StoreError

    return Starlette(routes=routes, middleware=[Middleware(Guard, auth=auth)],
                     exception_handlers={StoreError: store_down}, lifespan=lifespan)
