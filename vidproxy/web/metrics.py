"""Prometheus metrics, on a registry of the app's own (no global state).

Request metrics are recorded by ``middlewares.metrics_middleware``; the stores
keep plain counters (``StoreStats``, the cache's own figures) that
``_StoreCollector`` reads at scrape time, so storage code does not depend on
prometheus. The app factory says what to watch once the store is open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..cache import CacheFigures
from ..storage.base import StoreStats
from .responses import body_bytes_sent

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, uploads_in_flight: Callable[[], int]) -> None:
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
            "vidproxy_sent_bytes",
            "Object body bytes the socket took (GET answers), not their declared length",
            registry=self.registry,
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
        uploads.set_function(uploads_in_flight)
        self._tus_uploads = Counter(
            "vidproxy_tus_uploads",
            "tus uploads by event: created, resumed (a HEAD finding bytes to continue"
            " after), completed, expired, terminated",
            ("event",),
            registry=self.registry,
        )
        self._tus_bytes = Counter(
            "vidproxy_tus_stored_bytes",
            "Bytes tus PATCHes stored durably",
            registry=self.registry,
        )
        self._store = _StoreCollector()
        self.registry.register(self._store)

    def tus_event(self, event: str) -> None:
        self._tus_uploads.labels(event).inc()

    def tus_bytes(self, count: int) -> None:
        self._tus_bytes.inc(count)

    def watch_store(
        self, stats: StoreStats, cache_figures: Callable[[], CacheFigures] | None
    ) -> None:
        """Report the open store's counters (and its cache's, if it has one)."""
        self._store.stats, self._store.cache_figures = stats, cache_figures

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
            self.bytes_out.inc(body_bytes_sent(response))
        cache = response.headers.get("X-Cache")
        if cache:
            self.cache_answers.labels(cache.lower()).inc()


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class _StoreCollector(Collector):
    def __init__(self) -> None:
        self.stats: StoreStats | None = None  # until the store is open
        self.cache_figures: Callable[[], CacheFigures] | None = None

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        if stats is None:
            return
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
        if stats.create_only_enforced is not None:
            yield GaugeMetricFamily(
                "vidproxy_s3_create_only_enforced",
                "1 if S3 itself refuses a second If-None-Match: * write of a key "
                "(PutObject and CompleteMultipartUpload), 0 if it lets both through",
                int(stats.create_only_enforced),
            )
        if self.cache_figures is not None:
            yield from _cache_metrics(self.cache_figures())


def _cache_metrics(figures: CacheFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "vidproxy_cache_evictions", "Entries evicted or expired", value=figures.evictions
    )
    yield GaugeMetricFamily(
        "vidproxy_cache_bytes", "Bytes held by cache entries", figures.used_bytes
    )
    yield GaugeMetricFamily("vidproxy_cache_entries", "Complete cache entries", figures.entries)
    yield GaugeMetricFamily("vidproxy_cache_fills_in_flight", "Fills running", figures.fills)
