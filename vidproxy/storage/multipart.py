"""An S3 multipart upload as an async context manager: completed by the caller,
aborted on any exception (``CancelledError`` included), so a failed upload
leaves no object and no orphaned parts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

ErrorMapper = Callable[[str], AbstractAsyncContextManager[None]]
Spawner = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class MultipartUpload:
    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        concurrency: int,
        errors: ErrorMapper,
        spawn: Spawner,
    ) -> None:
        self._client = client
        self._spawn = spawn
        self._bucket = bucket
        self._key = key
        self._errors = errors
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[dict[str, Any]]] = []
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
        return str(response["UploadId"])

    async def add_part(self, data: bytes) -> None:
        """Start uploading the next part; returns once a slot is free, so at most
        ``concurrency`` parts are held in memory while the next one is read."""
        self._raise_failed()
        await self._slots.acquire()
        number = len(self._tasks) + 1
        self.size += len(data)
        self._tasks.append(asyncio.create_task(self._upload_part(number, data)))

    async def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        try:
            async with self._errors("UploadPart"):
                response = await self._client.upload_part(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=io.BytesIO(data),
                )
            self.on_part_sent()
            return {"PartNumber": number, "ETag": response["ETag"]}
        finally:
            self._slots.release()

    def _raise_failed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def complete(self, **conditions: str) -> str:
        parts = await asyncio.gather(*self._tasks)
        async with self._errors("CompleteMultipartUpload"):
            response = await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
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
        except Exception as exc:
            log.warning("could not abort the multipart upload of %r: %s", self._key, exc)
