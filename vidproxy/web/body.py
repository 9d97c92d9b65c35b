"""A request body as an ``UploadSource``: read in pieces, counted, hashed, verified."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass

from aiohttp import web

from ..errors import (
    ChecksumMismatch,
    IncompleteBody,
    InvalidChecksum,
    LengthRequired,
    RequestTimeout,
    TooLarge,
    UploadChecksumMismatch,
    VidproxyError,
)
from ..hashing import BackgroundHash
from ..uploads.headers import Checksum
from .protocol import forgive_finished_body

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class MinRate:
    """The slowest a body may arrive on average, judged after ``grace`` seconds.

    Only time spent waiting on the client counts (not time the store made us
    wait), so each byte received buys ``1 / bytes_per_second`` more seconds of
    waiting: a trickling client is cut off, one that stalls briefly is not."""

    bytes_per_second: int
    grace: float

    def allowance(self, received: int) -> float:
        """Seconds of waiting that ``received`` bytes have paid for."""
        return max(self.grace, received / self.bytes_per_second)


class RequestBody:
    """Implements ``storage.base.UploadSource`` over an aiohttp request."""

    def __init__(
        self,
        request: web.Request,
        max_bytes: int,
        read_timeout: float,
        min_rate: MinRate | None = None,
    ) -> None:
        self._content = request.content
        self._max_bytes = max_bytes
        self._read_timeout = read_timeout
        self._min_rate = min_rate if min_rate and min_rate.bytes_per_second > 0 else None
        self._waited = 0.0  # seconds spent waiting on the client for body bytes
        self.content_length = _declared_length(request)
        self.expected_sha256 = _expected_sha256(request)
        if self.content_length is not None and self.content_length > max_bytes:
            raise TooLarge(f"the body is larger than the {max_bytes}-byte limit")
        # Received but not yet handed out: what peek() saw, or the tail of a piece
        # that did not fit the last buffer (a view, so no copy).
        self._pending = memoryview(b"")
        self._copied = 0  # bytes of the buffer _copy_into is filling
        self._received = 0
        self._sha256 = BackgroundHash("sha256")
        self._digest: str | None = None

    async def peek(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if the body is shorter), without consuming them."""
        while len(self._pending) < n:
            piece = await self._read_some()
            if not piece:
                break
            self._pending = memoryview(bytes(self._pending) + piece)
        return bytes(self._pending[:n])

    async def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer``; fewer bytes only at the end of the body, 0 once it is
        complete. Each byte is copied once, from aiohttp's piece into ``buffer``."""
        # The caller may hand back a buffer it gave before: its hash must be done.
        await self._sha256.wait()
        filled = await self._copy_into(buffer)
        # Hashed while the caller sends the part; the next readinto waits for it,
        # so a reused buffer is never overwritten while it is being hashed.
        self._sha256.feed(buffer[:filled])
        if filled < len(buffer) and self._digest is None:
            await self._finish()
        return filled

    async def _copy_into(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from the body until it is full or the body ends.
        ``_copied`` counts as it goes, so a caller that catches a cut mid-way
        still knows how many bytes of ``buffer`` hold the body."""
        self._copied = 0
        while self._copied < len(buffer):
            piece = self._pending or memoryview(await self._read_some())
            if not piece:
                break
            n = min(len(piece), len(buffer) - self._copied)
            buffer[self._copied : self._copied + n] = piece[:n]
            self._pending = piece[n:]
            self._copied += n
        return self._copied

    def sha256(self) -> str:
        if self._digest is None:
            raise RuntimeError("the body has not been read to the end")
        return self._digest

    async def _read_some(self) -> bytes:
        timeout, too_slow = self._read_deadline()
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                chunk = await self._next_piece()
        except ConnectionResetError:
            chunk = self._salvage_complete_body()
        except TimeoutError:
            stalled = f"no body bytes for {self._read_timeout:g} s"
            raise RequestTimeout(too_slow or stalled) from None
        finally:
            self._waited += time.monotonic() - started
        self._received += len(chunk)
        if self._received > self._max_bytes:
            raise TooLarge(f"the body is larger than the {self._max_bytes}-byte limit")
        return chunk

    def _read_deadline(self) -> tuple[float, str | None]:
        """How long the next read may wait, and the message if it is the minimum
        rate (not ``read_timeout``) that runs out first."""
        rate = self._min_rate
        if rate is None:
            return self._read_timeout, None
        left = rate.allowance(self._received) - self._waited
        if left >= self._read_timeout:
            return self._read_timeout, None
        message = (
            f"the body arrived slower than the minimum of {rate.bytes_per_second} "
            f"bytes/s (server.min_upload_rate)"
        )
        return max(left, 0.0), message

    async def _next_piece(self) -> bytes:
        # readchunk() hands over aiohttp's pieces as they came; read(n) and
        # readany() join whatever is buffered, one more copy of every byte.
        while not self._content.at_eof():
            piece, end_of_http_chunk = await self._content.readchunk()
            if piece or not end_of_http_chunk:
                return piece  # b"" without a chunk end: the body is complete
        return b""

    def _salvage_complete_body(self) -> bytes:
        # ffmpeg sends a whole chunked body, terminator included, then closes its
        # side; aiohttp then poisons the stream with ConnectionResetError although
        # every byte arrived. is_eof() is set only by a complete message, so it
        # tells a finished body from a cut one; the buffered rest is still ours.
        if not self._content.is_eof():
            raise IncompleteBody("the client closed the connection before the body ended")
        forgive_finished_body(self._content)
        return self._content.read_nowait()

    async def _finish(self) -> None:
        if self.content_length is not None and self._received != self.content_length:
            raise IncompleteBody(
                f"received {self._received} of {self.content_length} declared bytes"
            )
        digest = await self._sha256.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise ChecksumMismatch("the body does not match X-Content-SHA256")
        self._digest = digest


def _declared_length(request: web.Request) -> int | None:
    if request.headers.get("Transfer-Encoding", "").lower().endswith("chunked"):
        return None
    if request.content_length is None:
        raise LengthRequired("send Content-Length or Transfer-Encoding: chunked")
    return request.content_length


def _expected_sha256(request: web.Request) -> str | None:
    value = request.headers.get("X-Content-SHA256")
    if value is None:
        return None
    if not _SHA256_RE.fullmatch(value.strip()):
        raise InvalidChecksum("X-Content-SHA256 must be 64 hex digits")
    return value.strip().lower()


class PatchBody(RequestBody):
    """A tus PATCH body: implements ``storage.base.AppendSource``.

    "An offset is a promise": when the client goes away or stalls, ``readinto``
    hands over what did arrive and ends, so the store keeps those bytes; the cut
    is raised afterwards (``raise_failure``). With ``Upload-Checksum`` no byte can
    count before the whole body matched, so a cut or a mismatch raises at once."""

    def __init__(
        self,
        request: web.Request,
        max_bytes: int,
        read_timeout: float,
        min_rate: MinRate | None,
        checksum: Checksum | None,
    ) -> None:
        super().__init__(request, max_bytes, read_timeout, min_rate)
        self._checksum = checksum
        self._checksum_hash = hashlib.new(checksum.algorithm) if checksum else None
        self.verified_at_end = checksum is not None
        self.failure: VidproxyError | None = None
        self._ended = False
        self._lost: IncompleteBody | None = None

    async def _read_some(self) -> bytes:
        if self._lost is not None:
            raise self._lost
        return await super()._read_some()

    def _salvage_complete_body(self) -> bytes:
        if self._content.is_eof():
            return super()._salvage_complete_body()
        # Cut off: aiohttp raises the loss before the bytes it still holds, which
        # did arrive and belong to the upload; hand them over, then the cut.
        self._lost = IncompleteBody("the client closed the connection before the body ended")
        forgive_finished_body(self._content)  # the loss is raised after these bytes
        rest = self._content.read_nowait()
        if not rest:
            raise self._lost
        return rest

    @property
    def received(self) -> int:
        return self._received

    async def readinto(self, buffer: memoryview) -> int:
        if self._ended:
            return 0
        try:
            filled = await self._copy_into(buffer)
        except (IncompleteBody, RequestTimeout) as exc:
            filled = self._copied  # what arrived before the cut is the upload's
            self._cut(exc)
        if self._checksum_hash is not None and filled:
            await asyncio.to_thread(self._checksum_hash.update, buffer[:filled])
        if filled < len(buffer) and not self._ended:
            self._end()
        return filled

    def _cut(self, exc: VidproxyError) -> None:
        if self._checksum is not None:
            raise exc  # bytes that cannot be checked are not kept
        self.failure = exc
        self._ended = True

    def _end(self) -> None:
        self._ended = True
        if self.content_length is not None and self._received != self.content_length:
            self._cut(IncompleteBody(f"received {self._received} of {self.content_length} bytes"))
        checksum, hashed = self._checksum, self._checksum_hash
        if checksum is not None and hashed is not None and hashed.digest() != checksum.digest:
            raise UploadChecksumMismatch(
                f"the body does not match its Upload-Checksum ({checksum.algorithm})"
            )

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure
