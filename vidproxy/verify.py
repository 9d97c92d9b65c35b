"""``vidproxy verify``: read every stored object and every cache entry and check
it against its record (size, and the SHA-256 or MD5 where one is recorded).

One line per problem on stdout, then a summary. Exit status: 0 when all is
well, 1 when something is damaged, 2 when the check could not run. It only
reads: a running vidproxy may share the directories, and the fs store's
start-up clean-up (which would delete uploads in progress) is not run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .cache.disk import CacheDir, StoredEntry, Unusable
from .config import Config
from .errors import NotFound, ObjectDamaged, VidproxyError
from .storage.base import ObjectInfo, Store
from .storage.fs import FsStore
from .storage.integrity import Digester, check_file, expected_digests
from .storage.s3 import open_s3_store

LIST_PAGE = 1000
DAMAGED, OK, CANNOT_RUN = 1, 0, 2

HELP = "check every object and cache entry against its recorded size and digest"
DESCRIPTION = f"""{HELP}.

fs: each data file's size and SHA-256 against its metadata. S3: each object is
read in full; its size, and its SHA-256 (metadata "sha256", or the SHA-256
record of a multipart upload while it matches the object's ETag) or, for
single-part objects, the MD5 its ETag is, where recorded. Cache (S3 only):
each entry's size and the digest recorded when it was filled. Prints one line
per problem and a summary; exits 0 if all is well, 1 if something is damaged,
2 if the check could not run. Safe beside a running vidproxy: it only reads."""


def add_verify_command(commands: Any) -> None:
    verify = commands.add_parser(
        "verify",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--config", type=Path, help="TOML file (default: ./config.toml if present)")
    verify.add_argument("--prefix", default="", help="check only keys that start with PREFIX")
    verify.add_argument("--no-cache", action="store_true", help="skip the cache entries")


@dataclass
class Tally:
    objects: int = 0
    object_bytes: int = 0
    entries: int = 0
    entry_bytes: int = 0
    size_only: int = 0  # nothing recorded to hash against
    damaged: int = 0

    def summary(self) -> str:
        return (
            f"checked {self.objects} objects ({self.object_bytes} bytes) and "
            f"{self.entries} cache entries ({self.entry_bytes} bytes); "
            f"{self.size_only} without a recorded digest (size only); {self.damaged} damaged"
        )


def run_verify(config: Config, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    # The stores log what they find as errors; here the report says it once.
    logging.getLogger("vidproxy").setLevel(logging.CRITICAL)
    tally = Tally()
    try:
        asyncio.run(_verify(config, args.prefix, not args.no_cache, tally, out))
    except VidproxyError as exc:
        print(f"vidproxy verify: {exc.message}", file=sys.stderr)
        return CANNOT_RUN
    print(tally.summary(), file=out)
    return DAMAGED if tally.damaged else OK


async def _verify(config: Config, prefix: str, cache: bool, tally: Tally, out: TextIO) -> None:
    trust_md5 = config.cache.verify_etag_md5

    def report(problem: str) -> None:
        tally.damaged += 1
        print(problem, file=out, flush=True)

    async with _store(config) as store:
        async for info in _listed(store, prefix):
            problem = await _check_object(store, info, trust_md5, tally)
            if problem is not None:
                report(f"object {info.key!r}: {problem}")
    if cache and config.backend == "s3" and config.cache.enabled:
        for meta_path, entry in await asyncio.to_thread(CacheDir(Path(config.cache.dir), "").scan):
            problem = await _check_entry(entry, trust_md5, tally)
            # An entry removed while we looked is no problem.
            if problem is not None and await asyncio.to_thread(meta_path.exists):
                report(f"cache entry {_entry_name(meta_path, entry)}: {problem}")


@asynccontextmanager
async def _store(config: Config) -> AsyncIterator[Store]:
    if config.backend == "fs":
        # Not open_fs_store: its clean-up would delete a running vidproxy's uploads.
        yield FsStore(Path(config.fs.dir))
        return
    quiet = dataclasses.replace(config.s3, abort_stale_uploads_after=0, create_bucket=False)
    async with open_s3_store(quiet) as store:
        yield store


async def _listed(store: Store, prefix: str) -> AsyncIterator[ObjectInfo]:
    after = ""
    while True:
        page = await store.list(prefix, after, LIST_PAGE)
        for info in page.items:
            yield info
        if page.next_after is None:
            return
        after = page.next_after


async def _check_object(
    store: Store, listed: ObjectInfo, trust_md5: bool, tally: Tally
) -> str | None:
    try:
        reader = await store.open(listed.key, None)
    except NotFound:
        return None  # deleted since the listing
    except ObjectDamaged as exc:
        tally.objects += 1
        tally.object_bytes += listed.size
        return exc.message
    try:
        info = reader.info
        tally.objects += 1
        tally.object_bytes += info.size
        expected = expected_digests(info, trust_etag_md5=trust_md5)
        if not expected:
            tally.size_only += 1
        if reader.local_path is not None:  # fs: open has checked the size
            if not expected:
                return None
            return await check_file(reader.local_path, info.size, expected)
        digester = Digester(expected)
        async for chunk in await reader.stream(None):
            digester.update(chunk)
    except VidproxyError as exc:
        return f"cannot be read: {exc.message}"
    finally:
        await reader.aclose()
    if digester.size != info.size:
        return f"{digester.size} bytes read, {info.size} recorded"
    return digester.mismatch(expected)


def _entry_name(meta_path: Path, entry: StoredEntry | Unusable) -> str:
    key = entry.key if isinstance(entry, Unusable) else entry.info.key
    return f"{meta_path}" if key is None else f"{key!r} ({meta_path})"


async def _check_entry(entry: StoredEntry | Unusable, trust_md5: bool, tally: Tally) -> str | None:
    tally.entries += 1
    if isinstance(entry, Unusable):
        return str(entry)
    tally.entry_bytes += entry.info.size
    digests = (
        [entry.content] if entry.content else expected_digests(entry.info, trust_etag_md5=trust_md5)
    )
    if not digests:
        tally.size_only += 1
        return None  # its size was checked by the scan
    return await check_file(entry.path, entry.info.size, digests)
