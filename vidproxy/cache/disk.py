"""The cache's files on disk. Blocking functions: call them through ``asyncio.to_thread``.

Layout under ``cache.dir``::

    entries/ab/<sha256(key)>.json      metadata of the complete entry, naming its data file
    entries/ab/<sha256(key)>.<ulid>    the data, immutable once renamed here
    tmp/<sha256(key)>.<ulid>           fills in progress (deleted at start)

An entry exists once its metadata file is renamed into place, after its data
file; the data file's mtime records the last access, so idle timers survive
a restart. The metadata records what the data hashed to when it was filled
(``content``), so it can be checked again after a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ulid import ULID

from ..files import sync_dir, write_atomically
from ..keys import key_digest
from ..storage.base import ObjectInfo
from ..storage.integrity import Digest, content_record, size_problem

log = logging.getLogger(__name__)

META_SUFFIX = ".json"
ORIGIN_FILE = "origin"


@dataclass(frozen=True)
class StoredEntry:
    info: ObjectInfo
    path: Path
    last_access: float  # wall-clock seconds
    content: Digest | None  # what the data hashed to when it was filled (None: not recorded)


class Unusable(Exception):
    """A metadata file that names no usable entry (``key``: whose, if known)."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem)
        self.key = key


class CacheDir:
    def __init__(self, root: Path, origin: str) -> None:
        self.root = root
        # Which backend the entries came from: keys alone do not say.
        self._origin = origin
        self._entries = root / "entries"
        self._tmp = root / "tmp"

    def prepare(self) -> list[StoredEntry]:
        """Create the layout, delete leftovers of fills, index complete entries
        (oldest access first); drop anything inconsistent, and everything that
        was cached from another bucket or endpoint."""
        self._entries.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        origin_file = self.root / ORIGIN_FILE
        if _read_text(origin_file) != self._origin:
            if any(self._entries.iterdir()):
                log.warning("cache: %s held another backend's objects; emptied", self.root)
            shutil.rmtree(self._entries)
            self._entries.mkdir()
            write_atomically(origin_file, self._origin.encode())
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)
        found = []
        for meta_path, entry in self.scan():
            if isinstance(entry, Unusable):
                log.warning("dropping cache entry %s: %s", meta_path.name, entry)
                meta_path.unlink(missing_ok=True)
            else:
                found.append(entry)
        kept = {e.path.name for e in found}
        for path in self._entries.glob("*/*"):
            if path.suffix != META_SUFFIX and path.name not in kept:
                path.unlink(missing_ok=True)
        return sorted(found, key=lambda e: e.last_access)

    def scan(self) -> list[tuple[Path, StoredEntry | Unusable]]:
        """Every metadata file and what it names; changes nothing."""
        return [(path, self._load(path)) for path in self._entries.glob(f"*/*{META_SUFFIX}")]

    def _load(self, meta_path: Path) -> StoredEntry | Unusable:
        try:
            meta = json.loads(meta_path.read_bytes())
            info = ObjectInfo.from_record(meta)
            data = meta_path.with_name(meta["data"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return Unusable(f"unreadable metadata: {exc}")
        try:
            stat = data.stat()
        except FileNotFoundError:
            return Unusable(size_problem(None, info.size), info.key)
        except OSError as exc:
            return Unusable(f"cannot read the data file: {exc}", info.key)
        if stat.st_size != info.size:
            return Unusable(size_problem(stat.st_size, info.size), info.key)
        return StoredEntry(info, data, stat.st_mtime, Digest.from_record(meta.get("content")))

    def temp_path(self, key: str) -> Path:
        return self._tmp / f"{key_digest(key)}.{ULID()}"

    def commit(
        self, info: ObjectInfo, temp: Path, content: Iterable[Digest], accessed_at: float
    ) -> Path:
        """Make the filled ``temp`` file the entry for ``info.key``, last
        accessed at ``accessed_at``; ``content``: what its bytes must hash to,
        if anything says. Returns the data file's path."""
        meta_path = self._meta_path(info.key)
        meta_path.parent.mkdir(exist_ok=True)
        data_path = meta_path.with_name(temp.name)
        # The cache's clock, not the disk's, so a timer re-armed at start agrees with it.
        os.utime(temp, (accessed_at, accessed_at))
        os.replace(temp, data_path)
        meta = {**info.to_record(), "data": data_path.name, "content": content_record(content)}
        try:
            write_atomically(meta_path, json.dumps(meta).encode())
            sync_dir(meta_path.parent)
        except OSError:
            # No entry names the data (a full disk, typically): it would hold its
            # space, uncounted, until the next start.
            data_path.unlink(missing_ok=True)
            raise
        return data_path

    def record_content(self, key: str, data_path: Path, content: Digest) -> None:
        """Record what the entry's data hashed to, if its metadata still names that data."""
        meta_path = self._meta_path(key)
        meta = json.loads(meta_path.read_bytes())
        if meta.get("data") != data_path.name:
            return
        meta["content"] = content_record([content])
        write_atomically(meta_path, json.dumps(meta).encode())

    def remove(self, key: str, data_path: Path) -> None:
        """Delete an entry's data and, if it still names that data, its metadata."""
        meta_path = self._meta_path(key)
        try:
            if json.loads(meta_path.read_bytes()).get("data") == data_path.name:
                meta_path.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
        data_path.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _meta_path(self, key: str) -> Path:
        digest = key_digest(key)
        return self._entries / digest[:2] / f"{digest}{META_SUFFIX}"


def touch(path: Path, at: float) -> None:
    """Record an access at ``at`` (wall clock) in the data file's mtime (ignored if it is gone)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path, (at, at))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
