"""The application factory: resources in ``cleanup_ctx``, routes, middlewares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial

from aiohttp import web

from ..auth import Authorizer
from ..cache import Clock, SystemClock, open_caching_store
from ..config import Config
from ..storage.base import Store
from ..storage.fs import open_fs_store
from ..storage.s3 import open_s3_store
from .appkeys import AUTH, CONFIG, IN_FLIGHT, METRICS, STORE, UPLOADS
from .cors import add_cors_headers, cors_middleware
from .errors import error_middleware
from .guards import upload_expect_handler
from .handlers import health, metrics, openapi, page, sign, videos
from .limits import InFlight, UploadSlots
from .metrics import Metrics
from .middlewares import auth_middleware, in_flight_middleware, metrics_middleware

# `.+` would stop at a newline and let the router answer 404; the key
# validator must see every key, the empty one included, to answer 400 invalid_key.
KEY = r"{key:[\s\S]*}"


def create_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    """The app for ``config``; ``clock`` times the cache's idle expiry and
    revalidation (the system's by default: tests pass one they move themselves)."""
    # Metrics see the final answer; errors from the inner middlewares become JSON;
    # CORS preflights are answered before access control (browsers send no token).
    app = web.Application(
        middlewares=[
            metrics_middleware,
            error_middleware,
            cors_middleware,
            in_flight_middleware,
            auth_middleware,
        ]
    )
    app[CONFIG] = config
    app[AUTH] = Authorizer.from_config(config.auth)
    uploads = app[UPLOADS] = UploadSlots(config.server.max_concurrent_uploads)
    app[METRICS] = Metrics(lambda: uploads.in_use)
    app[IN_FLIGHT] = InFlight()
    app.on_response_prepare.append(add_cors_headers)
    app.cleanup_ctx.append(partial(_store_context, clock=clock or SystemClock()))
    _add_routes(app)
    return app


def _open_store(config: Config) -> AbstractAsyncContextManager[Store]:
    if config.backend == "s3":
        return open_s3_store(config.s3)
    return open_fs_store(config.fs.dir)


async def _store_context(app: web.Application, clock: Clock) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with AsyncExitStack() as stack:
        store: Store = await stack.enter_async_context(_open_store(config))
        cache_figures = None
        if config.backend == "s3" and config.cache.enabled:
            origin = f"{config.s3.endpoint_url or 'aws'} {config.s3.bucket}"
            cached = await stack.enter_async_context(
                open_caching_store(store, config.cache, origin, clock)
            )
            store, cache_figures = cached, cached.figures
        app[METRICS].watch_store(store.stats, cache_figures)
        app[STORE] = store
        yield


def _add_routes(app: web.Application) -> None:
    router = app.router
    upload = {"expect_handler": upload_expect_handler}
    router.add_get("/", page.index)
    router.add_get("/favicon.ico", page.favicon)
    router.add_get("/healthz", health.healthz)
    router.add_get("/readyz", health.readyz)
    router.add_get("/metrics", metrics.metrics)
    router.add_get("/openapi.json", openapi.openapi)
    router.add_get("/videos", videos.list_videos)
    router.add_post("/videos", videos.create_video, **upload)
    router.add_get(f"/videos/{KEY}", videos.get_video)
    router.add_put(f"/videos/{KEY}", videos.put_video, **upload)
    router.add_delete(f"/videos/{KEY}", videos.delete_video)
    router.add_post("/sign", sign.sign)
    # Aliases kept for clients written against the original gin API.
    router.add_post("/upload", videos.create_video, **upload)
    router.add_post(f"/upload/{KEY}", videos.put_video, **upload)
    router.add_get(f"/download/{KEY}", videos.get_video)
