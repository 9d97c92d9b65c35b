"""One request at a time per upload, within this process: a second PATCH (or a
DELETE) while one is running gets 423 instead of waiting. Across processes the
record's conditional write decides (see the storage modules)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import UploadLocked


class UploadLocks:
    def __init__(self) -> None:
        self._held: set[str] = set()

    def is_held(self, upload_id: str) -> bool:
        return upload_id in self._held

    @contextmanager
    def hold(self, upload_id: str) -> Iterator[None]:
        if upload_id in self._held:
            raise UploadLocked("another request is writing this upload; retry after it ends")
        self._held.add(upload_id)
        try:
            yield
        finally:
            self._held.discard(upload_id)
