"""Prometheus metrics, on a registry of the app's own (no global state).

Request metrics are recorded by ``metrics_middleware``; the stores keep plain
counters (``StoreStats``, the cache's own figures) that ``_StoreCollector``
reads at scrape time, so storage code does not depend on prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..cache import CachingStore
from .appkeys import METRICS, STORE, UPLOADS
from .errors import Handler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ("route", "method", "status")
        self.requests = Counter(
            "vidproxy_requests", "HTTP requests answered", labels, registry=self.registry
        )
        self.latency = Histogram(
            "vidproxy_request_duration_seconds",
            "Time to handle a request, streaming included",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "vidproxy_received_bytes", "Request body bytes received", registry=self.registry
        )
        self.bytes_out = Counter(
            "vidproxy_sent_bytes", "Video bytes sent (GET bodies)", registry=self.registry
        )
        self.cache_answers = Counter(
            "vidproxy_cache_answers",
            "GET/HEAD answers by cache result",
            ("result",),
            registry=self.registry,
        )
        uploads = Gauge(
            "vidproxy_uploads_in_flight", "Uploads being received", registry=self.registry
        )
        uploads.set_function(lambda: app[UPLOADS].in_use)
        self.registry.register(_StoreCollector(app))

    def observe(self, request: web.Request, response: web.StreamResponse, took: float) -> None:
        route = _route_label(request)
        self.requests.labels(route, request.method, str(response.status)).inc()
        self.latency.labels(route, request.method).observe(took)
        self.bytes_in.inc(request.content.total_bytes)
        if (
            request.method == "GET"
            and response.status in (200, 206)
            and "key" in request.match_info
        ):
            self.bytes_out.inc(response.content_length or 0)
        cache = response.headers.get("X-Cache")
        if cache:
            self.cache_answers.labels(cache.lower()).inc()


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class _StoreCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        store = self._app.get(STORE)
        if store is None:
            return
        stats = store.stats
        requests = CounterMetricFamily(
            "vidproxy_s3_requests", "Requests to S3 by operation", labels=["operation"]
        )
        errors = CounterMetricFamily(
            "vidproxy_s3_errors", "Failed S3 requests by operation", labels=["operation"]
        )
        for operation, count in sorted(stats.requests.items()):
            requests.add_metric([operation], count)
        for operation, count in sorted(stats.errors.items()):
            errors.add_metric([operation], count)
        yield requests
        yield errors
        yield CounterMetricFamily(
            "vidproxy_multipart_parts", "Multipart parts uploaded", value=stats.parts_sent
        )
        if isinstance(store, CachingStore):
            yield from _cache_metrics(store)


def _cache_metrics(store: CachingStore) -> Iterator[Metric]:
    figures = store.figures()
    yield CounterMetricFamily(
        "vidproxy_cache_evictions", "Entries evicted or expired", value=figures.evictions
    )
    yield GaugeMetricFamily(
        "vidproxy_cache_bytes", "Bytes held by cache entries", figures.used_bytes
    )
    yield GaugeMetricFamily("vidproxy_cache_entries", "Complete cache entries", figures.entries)
    yield GaugeMetricFamily("vidproxy_cache_fills_in_flight", "Fills running", figures.fills)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    request.app[METRICS].observe(request, response, time.perf_counter() - started)
    return response


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
