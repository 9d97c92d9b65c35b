"""An S3 multipart upload as an async context manager: completed by the caller,
aborted on any exception (``CancelledError`` included), so a failed upload
leaves no object and no orphaned parts. While it runs, its upload id is in the
store's ``live`` set, which the stale-upload sweeper leaves alone; if S3 drops
it anyway (another replica's sweep), the client is told so (``UploadAborted``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import mmap
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from ..buffers import lazy_buffer
from ..errors import UploadAborted, UpstreamError, UpstreamUnavailable, VidproxyError
from ..units import KiB
from .s3api import S3API, WriteConditions

if TYPE_CHECKING:
    from typing import Unpack

    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

# A part goes to the socket in slices this large. One big write would have
# Python 3.11's transport copy the unsent rest of the part into its own buffer
# and hold it there; a slice at a time keeps that buffer small.
SEND_SLICE = 256 * KiB

ErrorMapper = Callable[[str], AbstractAsyncContextManager[None]]
Spawner = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]
UPLOAD_ABORTED = (
    "the storage backend no longer has this upload (aborted by another process, "
    "e.g. a stale-upload sweep); nothing was stored, send it again"
)


class PartBuffers:
    """At most ``count`` part buffers at once, reused from part to part: an
    upload's memory stays flat however long the body, and no part is allocated,
    filled and freed again for every 8 MiB. Lazy buffers: a part holds memory
    for the bytes that arrived in it, however large it may grow."""

    def __init__(self, count: int) -> None:
        self._free: list[mmap.mmap] = []
        self._available = asyncio.Semaphore(count)

    async def take(self, size: int) -> memoryview:
        await self._available.acquire()
        buffer = self._free.pop() if self._free else lazy_buffer(size)
        if len(buffer) < size:  # parts grow on a long chunked upload
            buffer = lazy_buffer(size)
        return memoryview(buffer)[:size]

    def give_back(self, view: memoryview) -> None:
        self._free.append(view.obj)  # type: ignore[arg-type]
        self._available.release()


class PartBody(Payload):
    """A part's bytes, sent without copies. For botocore a file-like object (its
    length, and ``seek(0)`` to send it again on a retry); for aiohttp a payload
    that writes it to the socket in slices, straight from the part buffer."""

    def __init__(self, data: memoryview) -> None:
        super().__init__(data)
        self._part = data
        self._position = 0

    @property
    def size(self) -> int:
        return len(self._part)

    @property
    def autoclose(self) -> bool:
        return True  # nothing to close: the buffer belongs to PartBuffers

    def __len__(self) -> int:
        return len(self._part)

    def read(self, n: int = -1) -> bytes:
        # Only botocore's own checksum paths read; aiohttp calls write_with_length.
        end = len(self._part) if n < 0 else min(self._position + n, len(self._part))
        data = bytes(self._part[self._position : end])
        self._position = end
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._part)}
        self._position = base[whence] + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._part).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # All of it whatever was read: botocore sized the request with __len__.
        data = self._part[:content_length]
        for start in range(0, len(data), SEND_SLICE):
            await writer.write(data[start : start + SEND_SLICE])


class MultipartUpload:
    def __init__(
        self,
        client: S3API,
        bucket: str,
        key: str,
        concurrency: int,
        buffers: PartBuffers,
        errors: ErrorMapper,
        spawn: Spawner,
        live: set[str],
    ) -> None:
        self._client = client
        self._live = live
        self._registered: str | None = None
        self._spawn = spawn
        self._bucket = bucket
        self._key = key
        self._errors = errors
        self._slots = asyncio.Semaphore(concurrency)
        self._buffers = buffers
        self._tasks: list[asyncio.Task[CompletedPartTypeDef]] = []
        self._upload_id: str | None = None
        self.size = 0
        self.on_part_sent: Callable[[], None] = lambda: None

    async def start(self, **params: Any) -> None:
        creating = asyncio.ensure_future(self._create(params))
        try:
            self._upload_id = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # S3 creates the upload whether or not we wait: learn its id so that
            # __aexit__ aborts it instead of leaving orphaned parts behind.
            with contextlib.suppress(Exception):
                self._upload_id = await creating
            raise

    async def _create(self, params: dict[str, Any]) -> str:
        async with self._errors("CreateMultipartUpload"):
            response = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, **params
            )
        self._registered = upload_id = str(response["UploadId"])
        self._live.add(upload_id)  # before anything else can see it: no sweep takes it
        return upload_id

    async def add_part(self, data: memoryview) -> None:
        """Start uploading the next part, a buffer from ``buffers`` that goes back
        once the part is sent; returns once one of ``concurrency`` slots is free."""
        self._raise_failed()
        await self._slots.acquire()
        number = len(self._tasks) + 1
        self.size += len(data)
        self._tasks.append(asyncio.create_task(self._upload_part(number, data)))

    async def _upload_part(self, number: int, data: memoryview) -> CompletedPartTypeDef:
        try:
            async with self._aborted_if_gone(), self._errors("UploadPart"):
                response = await self._client.upload_part(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._started_id(),
                    PartNumber=number,
                    # A file to botocore (read, seek, tell, len), if not an IO subclass.
                    Body=cast(IO[bytes], PartBody(data)),
                )
            self.on_part_sent()
            return {"PartNumber": number, "ETag": response["ETag"]}
        finally:
            self._slots.release()
            self._buffers.give_back(data)

    @contextlib.asynccontextmanager
    async def _aborted_if_gone(self) -> AsyncIterator[None]:
        """An UploadPart or Complete that failed because the upload is gone says so:
        AWS and rclone answer NoSuchUpload, moto a bare 500, so ask ListParts."""
        try:
            yield
        except UploadAborted:
            raise
        except (UpstreamError, UpstreamUnavailable) as exc:
            if await self._gone():
                log.warning("the multipart upload of %r was aborted at S3 mid-way", self._key)
                raise UploadAborted(UPLOAD_ABORTED) from exc
            raise

    async def _gone(self) -> bool:
        if self._upload_id is None:
            return False  # never started: nothing at S3 to lose
        try:
            async with self._errors("ListParts"):
                await self._client.list_parts(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MaxParts=1
                )
        except UploadAborted:
            return True
        except VidproxyError:
            return False  # cannot tell: the original error stands
        return False

    def _raise_failed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _started_id(self) -> str:
        assert self._upload_id is not None, "parts are added only after start()"
        return self._upload_id

    async def complete(self, **conditions: Unpack[WriteConditions]) -> str:
        parts = await asyncio.gather(*self._tasks)
        async with self._aborted_if_gone(), self._errors("CompleteMultipartUpload"):
            response = await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._started_id(),
                MultipartUpload={"Parts": list(parts)},
                **conditions,
            )
        self._upload_id = None
        return str(response["ETag"])

    async def __aenter__(self) -> MultipartUpload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._finish()
        finally:
            if self._registered is not None:
                self._live.discard(self._registered)

    async def _finish(self) -> None:
        if self._upload_id is None:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Shielded and owned by the store: the abort must reach S3 even when we
        # got here by cancellation, and shutdown waits for it.
        await asyncio.shield(self._spawn(self._abort(self._upload_id)))
        self._upload_id = None

    async def _abort(self, upload_id: str) -> None:
        try:
            async with self._errors("AbortMultipartUpload"):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                )
        except UploadAborted:
            pass  # gone already: what the abort was for
        except Exception as exc:
            log.warning("could not abort the multipart upload of %r: %s", self._key, exc)
