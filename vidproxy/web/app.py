"""The application factory: resources in ``cleanup_ctx``, routes, middlewares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial

from aiohttp import web

from ..auth import Authorizer
from ..cache import Clock, SystemClock, open_caching_store
from ..config import Config
from ..storage.base import ResumableStore, Store, StoredObject
from ..storage.fs import FsStore, open_fs_store
from ..storage.fs_resumable import FsResumable
from ..storage.resumable_sweeper import sweep_expired_forever
from ..storage.s3 import S3Store, open_s3_store
from ..storage.s3_resumable import S3Resumable
from ..uploads.locks import UploadLocks
from .appkeys import AUTH, CONFIG, IN_FLIGHT, METRICS, RESUMABLE, STORE, TUS_LOCKS, UPLOADS
from .cors import add_cors_headers, cors_middleware
from .errors import error_middleware
from .guards import upload_expect_handler
from .handlers import health, metrics, openapi, page, sign, videos
from .handlers import uploads as tus
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
    app[TUS_LOCKS] = UploadLocks()
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(tus.add_tus_headers)
    app.cleanup_ctx.append(partial(_store_context, clock=clock or SystemClock()))
    app.cleanup_ctx.append(_expiry_sweep)
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
        backend = store
        cache_figures = None
        invalidate = None
        if config.backend == "s3" and config.cache.enabled:
            origin = f"{config.s3.endpoint_url or 'aws'} {config.s3.bucket}"
            cached = await stack.enter_async_context(
                open_caching_store(store, config.cache, origin, clock)
            )
            store, cache_figures, invalidate = cached, cached.figures, cached.invalidate
        app[METRICS].watch_store(store.stats, cache_figures)
        app[STORE] = store
        app[RESUMABLE] = _resumable(backend, config, invalidate)
        yield


def _resumable(
    backend: Store, config: Config, invalidate: Callable[[str], None] | None
) -> ResumableStore:
    """The tus store beside the backend; a finished upload drops its cache entry."""

    async def on_stored(stored: StoredObject) -> None:
        if invalidate is not None:
            invalidate(stored.key)

    expire_after = config.uploads.expire_after
    if isinstance(backend, S3Store):
        resumable = S3Resumable(backend, expire_after, on_stored)
        backend.keep_uploads = resumable.live_multipart_ids
        return resumable
    assert isinstance(backend, FsStore)
    return FsResumable(backend, expire_after, on_stored)


async def _expiry_sweep(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    sweep = sweep_expired_forever(
        app[RESUMABLE],
        app[CONFIG].uploads.expire_after,
        app[CONFIG].uploads.sweep_every,
        app[TUS_LOCKS].is_held,
        lambda: metrics.tus_event("expired"),
    )
    task = asyncio.ensure_future(sweep)
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _add_routes(app: web.Application) -> None:
    router = app.router
    upload = {"expect_handler": upload_expect_handler}
    router.add_get("/", page.index)
    router.add_get("/favicon.ico", page.favicon)
    router.add_get("/tus.min.js", page.tus_script)
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
    tus_upload = {"expect_handler": tus.tus_expect_handler}
    router.add_route("OPTIONS", "/uploads", tus.options)
    router.add_post("/uploads", tus.create, **tus_upload)
    router.add_route("OPTIONS", "/uploads/{upload_id}", tus.options)
    router.add_route("HEAD", "/uploads/{upload_id}", tus.head)
    router.add_patch("/uploads/{upload_id}", tus.patch, **tus_upload)
    router.add_delete("/uploads/{upload_id}", tus.delete)
    router.add_post("/uploads/{upload_id}", tus.override, **tus_upload)
    # Aliases kept for clients written against the original gin API.
    router.add_post("/upload", videos.create_video, **upload)
    router.add_post(f"/upload/{KEY}", videos.put_video, **upload)
    router.add_get(f"/download/{KEY}", videos.get_video)
