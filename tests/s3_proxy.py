"""A counting reverse proxy between vidproxy and moto: a real HTTP hop.

vidproxy's ``s3.endpoint_url`` points at the proxy. Every request goes on to
moto as it came (method, raw target, headers with ``Host`` and ``Authorization``
as signed, body streamed), the answer comes back streamed, and the proxy keeps
a list of what it saw. A test can also make the next full-object GET of a key
pause after some bytes until released (``hold``), break off there (``cut``)
or further on (``cut_at``), or arrive with one byte inverted (``corrupt``).
With ``ignore_if_match`` it drops ``If-Match``, as ``rclone serve s3`` does.

A test module gets the ``s3_proxy`` fixture with
``from s3_proxy import s3_proxy_fixture  # noqa: F401`` (the import's name differs
from the fixture's, so tests naming ``s3_proxy`` do not redefine it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import hdrs, web
from yarl import URL

# RFC 9110 §7.6.1: connection-specific fields are not forwarded. ``Expect`` is
# answered by this hop (aiohttp sends 100 Continue) and not asked again.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
        hdrs.EXPECT,
    )
)
# Headers aiohttp's client would add on its own; the proxy adds nothing.
NO_AUTO_HEADERS = (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE)
STREAM_CHUNK = 64 * 1024
BEFORE_HEADERS = -1  # a Hold that pauses before the answer's headers
NEVER = sys.maxsize  # a Hold that never pauses (one that only corrupts)


async def serve_every_path(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """Serve ``handler`` for every method and path on a free loopback port;
    the runner (to clean up) and the base URL."""
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@dataclass(frozen=True)
class Seen:
    """One request as it passed the proxy."""

    method: str
    path: str  # decoded, e.g. /bucket/key
    query: str
    range: str | None


@dataclass(eq=False)
class Hold:
    """Pauses one answer after ``after`` bytes of its body (or before its
    headers, ``BEFORE_HEADERS``) until ``release()``."""

    after: int
    cut: bool = False  # break the connection there instead of pausing
    flip_at: int | None = None  # invert the byte at this offset on its way
    cut_at: int | None = None  # break the connection at this offset (after any pause)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the body ended or was cut
    _go: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self._go.set()

    async def wait_reached(self, within: float = 10.0) -> None:
        await asyncio.wait_for(self.reached.wait(), within)


class S3Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self.url = ""
        self._holds: dict[str, Hold] = {}  # object path -> rule for its next full GET
        self._all_holds: list[Hold] = []
        self._runner: web.AppRunner | None = None
        self.ignore_if_match = False  # forward reads unconditioned, as rclone answers them
        self._session: aiohttp.ClientSession | None = None

    # ---- what the tests ask ------------------------------------------------

    def gets(self, bucket: str, key: str) -> list[Seen]:
        """GETs of the object ``key`` (not listings, not uploads)."""
        path = object_path(bucket, key)
        return [s for s in self.seen if s.method == "GET" and s.path == path and not _sub(s)]

    def full_gets(self, bucket: str, key: str, size: int | None = None) -> list[Seen]:
        """GETs of the whole object: no Range, or one from 0 that covers ``size`` bytes."""
        return [s for s in self.gets(bucket, key) if _covers_all(s.range, size)]

    def ranged_gets(self, bucket: str, key: str, size: int | None = None) -> list[Seen]:
        return [s for s in self.gets(bucket, key) if not _covers_all(s.range, size)]

    def hold(
        self, bucket: str, key: str, after: int, *, cut: bool = False, cut_at: int | None = None
    ) -> Hold:
        """The next GET of the whole object pauses (or, with ``cut``, breaks
        off) after ``after`` bytes of its body; with ``after=BEFORE_HEADERS``,
        once S3 has answered but before its answer goes on to vidproxy. With
        ``cut_at``, it breaks off there once released."""
        rule = Hold(after, cut=cut, cut_at=cut_at)
        self._holds[object_path(bucket, key)] = rule
        self._all_holds.append(rule)
        return rule

    def corrupt(self, bucket: str, key: str, at: int, hold_after: int = NEVER) -> Hold:
        """The next GET of the whole object arrives with byte ``at`` inverted, as
        a bad disk or a torn overwrite at the backend would send it; with
        ``hold_after``, it also pauses there until released."""
        rule = Hold(hold_after, flip_at=at)
        self._holds[object_path(bucket, key)] = rule
        self._all_holds.append(rule)
        return rule

    # ---- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._runner, self.url = await serve_every_path(self._forward)

    async def stop(self) -> None:
        for rule in self._all_holds:
            rule.release()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ---- forwarding --------------------------------------------------------

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        range_header = request.headers.get(hdrs.RANGE)
        self.seen.append(Seen(request.method, request.path, request.query_string, range_header))
        rule = None
        if request.method == "GET" and _covers_all(range_header, None):
            rule = self._holds.pop(request.path, None)
        dropped = HOP_BY_HOP | ({"if-match"} if self.ignore_if_match else set())
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in dropped]
        # The raw target, so the path and query moto checks the signature on are
        # the very bytes vidproxy signed.
        target = URL(str(self.upstream) + request.rel_url.raw_path_qs, encoded=True)
        async with self._session.request(
            request.method,
            target,
            headers=headers,
            data=request.content if request.can_read_body else None,
            skip_auto_headers=NO_AUTO_HEADERS,
            allow_redirects=False,
        ) as upstream:
            if rule is not None and rule.after == BEFORE_HEADERS:
                rule.reached.set()
                await rule._go.wait()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            await _relay(request, upstream, response, rule)
        return response


async def _relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    rule: Hold | None,
) -> None:
    sent = 0
    try:
        async for chunk in upstream.content.iter_chunked(STREAM_CHUNK):
            if rule is not None and rule.flip_at is not None:
                chunk = _flipped(chunk, rule.flip_at - sent)
            if rule is not None and rule.cut_at is not None and rule.cut_at < sent + len(chunk):
                await response.write(chunk[: rule.cut_at - sent])
                assert request.transport is not None
                request.transport.abort()
                return
            if rule is not None and sent <= rule.after < sent + len(chunk):
                head = rule.after - sent
                await response.write(chunk[:head])
                sent += head
                chunk = chunk[head:]
                rule.reached.set()
                if rule.cut:
                    assert request.transport is not None
                    request.transport.abort()
                    return
                await rule._go.wait()
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
    finally:
        if rule is not None:
            rule.done.set()


def _flipped(chunk: bytes, at: int) -> bytes:
    """``chunk`` with its byte ``at`` inverted, if it has one there."""
    if not 0 <= at < len(chunk):
        return chunk
    return chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1 :]


def object_path(bucket: str, key: str) -> str:
    return f"/{bucket}/{key}"


def _sub(seen: Seen) -> bool:
    """Requests on an object path that are not object reads (tagging, ACL, uploads)."""
    return bool(seen.query) and not seen.query.startswith("x-id=GetObject")


def _covers_all(range_header: str | None, size: int | None) -> bool:
    if range_header is None:
        return True
    spec = range_header.strip().removeprefix("bytes=")
    first, _, last = spec.partition("-")
    if first != "0" or "," in spec:
        return False
    return last == "" or (size is not None and last.isdigit() and int(last) >= size - 1)


@pytest.fixture(name="s3_proxy")
async def s3_proxy_fixture(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    """A counting proxy in front of moto on a free 127.0.0.1 port."""
    proxy = S3Proxy(moto_endpoint)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
