"""The S3 backend (AWS, MinIO, Ceph, R2, rclone, moto): aiobotocore behind ``Store``.

botocore's exceptions never leave this module: ``s3_errors`` maps them to
vidproxy's own at this one boundary, without S3's XML, endpoint or credentials.
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
)

from ..conditions import ByteRange, RangeSpec
from ..config import S3Config
from ..errors import (
    NotFound,
    ObjectDamaged,
    PreconditionFailed,
    TooLarge,
    UploadAborted,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    VidproxyError,
)
from ..hashing import BackgroundHash
from ..keys import RESERVED_PREFIX, is_reserved
from ..media import safe_content_type
from ..s3limits import MAX_PARTS
from ..units import KiB
from .base import ObjectInfo, ObjectPage, StoredObject, StoreStats, UploadSource
from .digests import DigestRecord, DigestRecords, is_record_path
from .locks import KeyLocks
from .multipart import UPLOAD_ABORTED, MultipartUpload, PartBuffers
from .parts import PartPlan
from .probe import probe_create_only, report
from .s3api import S3API, WriteConditions

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3.type_defs import GetObjectOutputTypeDef, HeadObjectOutputTypeDef

    # What HEAD and GET tell about an object, read by _info_from.
    ObjectHead = HeadObjectOutputTypeDef | GetObjectOutputTypeDef
from .sweeper import sweep_forever

log = logging.getLogger(__name__)

READ_CHUNK = 256 * KiB
GATHER_WAIT = 0.005  # seconds a piece of a GET body may wait for the next
# HEADs in flight while a listing looks up content types.
LIST_HEAD_CONCURRENCY = 16
DEFAULT_REGION = "us-east-1"
SHA256_METADATA = "sha256"
# Set at CreateMultipartUpload when the digest is not known yet: "a SHA-256
# record follows". Reads wait for a record only where an object says so, so
# objects written by anything else cost no wait for a record that cannot exist.
RECORD_METADATA = "sha256-record"
# Sorts after every key vidproxy writes under RESERVED_PREFIX (hex digests,
# ULIDs): no character sorts after U+10FFFF, in code points or in UTF-8 bytes.
PAST_RESERVED = RESERVED_PREFIX + "\U0010ffff"
# Marks, in botocore's per-call context, a request for a SHA-256 record.
_RECORD_REQUEST = "vidproxy_sha256_record"
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
# What an S3 error Code looks like ("NoSuchKey", "XAmzContentSHA256Mismatch").
_ERROR_CODE_RE = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,63}")
# A single-part object's ETag: its body's MD5, 32 hex digits (multipart ones end in "-N").
_PLAIN_ETAG_RE = re.compile(r'"?([0-9a-fA-F]{32})"?')
# AWS: "Objects encrypted by SSE-C or SSE-KMS have ETags that are not an MD5
# digest of their object data" (Checking object integrity, ETag).
_ETAG_NOT_MD5_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})
_UNREACHABLE = (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError)
# BotoCoreErrors too, but a cause of their own: nothing was sent at all.
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


class _MultipartEtags(enum.Enum):
    """Which ETag a backend's HEAD and GET show for a multipart object."""

    UNKNOWN = "unknown"  # not learned yet: ask with a HEAD
    AS_COMPLETED = "as completed"  # Complete's "md5-N" (AWS, MinIO, moto)
    CONTENT_MD5 = "content md5"  # the body's plain MD5 (rclone)
    OTHER = "other"  # neither: ask with a HEAD after every upload


# What a write's commit runs in: it yields the commit's conditions (If-None-Match).
Commit = Callable[[], AbstractAsyncContextManager[WriteConditions]]


@asynccontextmanager
async def _unconditional() -> AsyncIterator[WriteConditions]:
    yield {}


class _Unsatisfiable(Exception):
    """S3 said 416; the caller needs the size before it can answer."""


@asynccontextmanager
async def s3_errors(operation: str) -> AsyncIterator[None]:
    """Turn botocore's and aiohttp's errors into vidproxy's, at one boundary."""
    try:
        yield
    except ClientError as exc:
        raise _from_client_error(exc, operation) from None
    except _NO_CREDENTIALS as exc:
        log.warning("S3 %s failed: %s", operation, type(exc).__name__)
        raise UpstreamUnavailable(f"no usable S3 credentials were found ({operation})") from None
    except _UNREACHABLE as exc:
        log.warning("S3 %s failed: %s", operation, type(exc).__name__)
        raise UpstreamUnavailable(f"the storage backend is unreachable ({operation})") from None


@asynccontextmanager
async def s3_call(operation: str, deadline: float) -> AsyncIterator[None]:
    """One S3 request, botocore's retries included: its errors mapped as
    ``s3_errors`` does, and a deadline that holds whatever the request waits for
    (``read_timeout`` covers a stalled read, not every wait: rclone left a
    request waiting for ``100 Continue`` unanswered for good)."""
    try:
        async with asyncio.timeout(deadline) as timer, s3_errors(operation):
            yield
    except TimeoutError:
        if not timer.expired():
            raise
        log.warning("S3 %s got no answer within s3.request_deadline (%g s)", operation, deadline)
        raise UpstreamTimeout(f"the storage backend did not answer in time ({operation})") from None


def drop_expect_continue(request: Any, **_: Any) -> None:
    """``before-send``: send bodies without ``Expect: 100-continue``. botocore asks
    for it on every PutObject and UploadPart (a bytes body becomes a file-like
    one first); it costs a round trip per request, and a server that never
    answers it (rclone, ``PUT f/inner`` when ``f`` exists) leaves the request
    hanging where no botocore timeout applies. SigV4 does not sign ``Expect``."""
    request.headers.pop("Expect", None)


def _from_client_error(exc: ClientError, operation: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if not _ERROR_CODE_RE.fullmatch(code):
        code = ""  # not an S3 error code: text a client and the log must not see
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code == "NoSuchBucket":
        return UpstreamError("the configured bucket does not exist")
    if code == "NoSuchUpload":
        return UploadAborted(UPLOAD_ABORTED)
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return NotFound("no video under that key")
    if code == "InvalidRange" or status == 416:
        return _Unsatisfiable()
    if code == "PreconditionFailed" or status == 412:
        return PreconditionFailed("the key already exists or changed")
    if code in ("SlowDown", "ServiceUnavailable") or status == 503:
        return UpstreamUnavailable(f"the storage backend is busy ({operation})")
    log.warning("S3 %s answered %s %s", operation, status, code)
    return UpstreamError(f"the storage backend rejected {operation} ({code or status})")


@asynccontextmanager
async def open_s3_store(cfg: S3Config) -> AsyncIterator[S3Store]:
    session = get_session()
    client_config = AioConfig(
        s3={"addressing_style": cfg.addressing_style, "payload_signing_enabled": cfg.sign_payload},
        max_pool_connections=cfg.max_pool_connections,
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        # botocore's "max_attempts" counts retries only; s3.max_attempts counts them all.
        retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
        request_checksum_calculation=cfg.checksum_mode,
        response_checksum_validation="when_required",
    )
    async with session.create_client(
        "s3",
        endpoint_url=cfg.endpoint_url or None,
        region_name=_region(cfg, session.get_config_variable("region")),
        config=client_config,
    ) as client:
        store = S3Store(client, cfg)
        try:
            if cfg.create_bucket:
                await store.create_bucket()
            if cfg.abort_stale_uploads_after > 0:
                store.start_sweeper(cfg.abort_stale_uploads_after)
            yield store
        finally:
            await store.close()


def describe_s3(cfg: S3Config) -> str:
    """The bucket, endpoint, region and addressing the store will use, for the
    operator's start-up line (never for clients: it names the endpoint)."""
    region = _region(cfg, get_session().get_config_variable("region"))
    endpoint, style = cfg.endpoint_url or "AWS", cfg.addressing_style
    return f"S3 bucket {cfg.bucket!r} at {endpoint}, region {region}, {style} addressing"


def _region(cfg: S3Config, from_aws_chain: str | None) -> str:
    # botocore's chain reads AWS_DEFAULT_REGION and profiles; AWS_REGION is what
    # the newer SDKs and most operators set. S3 needs some region to sign.
    return cfg.region or from_aws_chain or os.environ.get("AWS_REGION") or DEFAULT_REGION


# Whose record the start-up check asks for: a reserved key, so no object has one.
WARM_UP_KEY = RESERVED_PREFIX + "warm-up"


class S3Store:
    name = "s3"

    def __init__(self, client: S3API, cfg: S3Config) -> None:
        self._client = client
        self._cfg = cfg
        self._bucket = cfg.bucket
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._bucket_created = False
        self._multipart_etags = _MultipartEtags.UNKNOWN
        self._creating = KeyLocks()
        # Ids of the multipart uploads this process is sending: the sweeper skips them.
        self.live_uploads: set[str] = set()
        # Set by the tus store: the multipart uploads of live tus records (any
        # replica's), which the stale-upload sweep keeps too.
        self.keep_uploads: Callable[[], Awaitable[set[str]]] | None = None
        self._probing = asyncio.Lock()
        self._probe_failed = False
        self._reads_warmed = False
        self._digests = DigestRecords(client, cfg.bucket, self.call, self.spawn)
        self.stats = StoreStats()
        events = client.meta.events
        events.register("before-call.s3", self._count_request)
        events.register("after-call.s3", self._count_answer)
        events.register("after-call-error.s3", self._count_failure)
        events.register("before-send.s3", drop_expect_continue)

    def call(self, operation: str) -> AbstractAsyncContextManager[None]:
        """The error mapping and deadline of one S3 request (the tus store's too)."""
        return s3_call(operation, self._cfg.request_deadline)

    # What the resumable (tus) store builds on: the same client, bucket and settings.
    @property
    def client(self) -> S3API:
        return self._client

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def config(self) -> S3Config:
        return self._cfg

    def count_part(self) -> None:
        self.stats.parts_sent += 1

    def create_only_commit(self, key: str) -> AbstractAsyncContextManager[Any]:
        """The commit conditions of a create-only write of ``key`` (one per key at
        a time in this process, each looking first), for a finishing tus upload."""
        return self._create_only_commit(key)

    def _count_request(self, model: Any, params: Any, context: Any, **_: Any) -> None:
        self.stats.requests[model.name] += 1
        url_path = str(params.get("url_path", ""))
        context[_RECORD_REQUEST] = is_record_path(url_path, self._bucket)

    def _count_answer(self, http_response: Any, model: Any, context: Any, **_: Any) -> None:
        # Most objects have no SHA-256 record (single-part ones carry the digest
        # in metadata): a record's 404 is an answer, not an error.
        missing_record = http_response.status_code == 404 and context.get(_RECORD_REQUEST)
        if http_response.status_code >= 400 and not missing_record:
            self.stats.errors[model.name] += 1

    def _count_failure(self, context: Any, **_: Any) -> None:
        self.stats.errors[context.get("operation_name", "unknown")] += 1

    def start_sweeper(self, older_than: float) -> None:
        sweep = sweep_forever(
            self._client, self._bucket, older_than, self.call, self.live_uploads, self._kept
        )
        self._sweeper = asyncio.ensure_future(sweep)

    async def _kept(self) -> set[str]:
        return await self.keep_uploads() if self.keep_uploads is not None else set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` beside requests; ``close`` waits for it."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        """Let pending aborts reach S3 before the client closes; stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    async def create_bucket(self) -> None:
        try:
            async with asyncio.timeout(self._cfg.request_deadline):
                await self._client.create_bucket(Bucket=self._bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                log.warning("could not create bucket %r: %s", self._bucket, code)
                return
        except _UNREACHABLE:
            log.warning("could not create bucket %r: storage unreachable", self._bucket)
            return
        self._bucket_created = True

    async def check_ready(self) -> None:
        if self._cfg.create_bucket and not self._bucket_created:
            # S3 was unreachable at start (a stack starting together): try again now.
            await self.create_bucket()
        try:
            async with self.call("HeadBucket"):
                await self._client.head_bucket(Bucket=self._bucket)
        except (NotFound, UpstreamError):
            # HeadBucket has no body: a missing bucket is a bare 404, which must
            # not reach /readyz as "no video under that key".
            raise UpstreamUnavailable(
                "the configured bucket is missing or not accessible"
            ) from None
        except UpstreamTimeout as exc:
            raise UpstreamUnavailable(exc.message) from None  # not ready: 503, as documented
        if not self._reads_warmed:
            self._reads_warmed = True
            await self._warm_reads()
        if self.stats.create_only_enforced is None and not self._probe_failed:
            await self._learn_create_only()

    async def _warm_reads(self) -> None:
        """Once, at the start-up check: a GetObject of a record that cannot exist
        (its key is reserved), the path a cold GET's record read takes. botocore
        builds an operation's model, handlers and parser on its first call: a
        first GET after start paid it, 64 ms to the first byte against 23 ms for
        the same process's second cold GET on a busy machine (bench/, first GET)."""
        await self._digests.read(WARM_UP_KEY)

    async def _learn_create_only(self) -> None:
        """Probe once (at the start-up check, else the first /readyz) whether S3
        itself refuses a second create-only write; never fails the readiness check."""
        async with self._probing:
            if self.stats.create_only_enforced is not None or self._probe_failed:
                return
            try:
                probe = await probe_create_only(self._client, self._bucket, self.call)
            except (UpstreamUnavailable, UpstreamTimeout):
                return  # S3 went away again: ask at the next readiness check
            except VidproxyError as exc:
                self._probe_failed = True
                log.warning("could not learn whether S3 enforces If-None-Match: %s", exc.message)
                return
            report(probe)
            self.stats.create_only_enforced = probe.enforced

    async def open(self, key: str, hint: RangeSpec | None, *, head: bool = False) -> S3Reader:
        # The SHA-256 record is read beside the object, not after it, and asked
        # for first (sleep(0) lets its request go out): its small answer is then
        # in while the object's comes. The other order cost a cold first byte
        # 7-18 ms more than an object with metadata on a busy rclone, this 2-4.
        digest = self._digests.look_up(key)
        await asyncio.sleep(0)
        if head:
            return S3Reader(self, await digest.attach(await self.head(key)))
        try:
            response, fetched, info = await self._get(key, hint)
        except _Unsatisfiable:
            return S3Reader(self, await digest.attach(await self.head(key)))
        try:
            info = await digest.attach(info)
        except BaseException:
            response["Body"].close()
            raise
        return S3Reader(self, info, response, fetched)

    async def head(self, key: str) -> ObjectInfo:
        async with self.call("HeadObject"):
            response = await self._client.head_object(Bucket=self._bucket, Key=key)
        return _info_from(key, response, int(response["ContentLength"]))

    async def _get(
        self, key: str, spec: RangeSpec | None, if_match: str | None = None
    ) -> tuple[GetObjectOutputTypeDef, ByteRange | None, ObjectInfo]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if spec is not None:
            params["Range"] = spec.header()
        if if_match is not None:
            params["IfMatch"] = if_match
        async with self.call("GetObject"):
            response = await self._client.get_object(**params)
        # rclone answers a ranged GET with 200 plus Content-Range: trust the header.
        match = _CONTENT_RANGE_RE.fullmatch(response.get("ContentRange") or "")
        if match is None:
            return response, None, _info_from(key, response, int(response["ContentLength"]))
        first, last, size = (int(g) for g in match.groups())
        return response, ByteRange(first, last + 1), _info_from(key, response, size)

    async def put(
        self, key: str, source: UploadSource, content_type: str, *, create_only: bool = False
    ) -> StoredObject:
        if not create_only:
            return await self._put(key, source, content_type, _unconditional)
        # This early look saves streaming a whole body only to be refused at the end.
        if await self._exists(key):
            raise PreconditionFailed("a video already exists under that key")
        return await self._put(key, source, content_type, lambda: self._create_only_commit(key))

    @asynccontextmanager
    async def _create_only_commit(self, key: str) -> AsyncIterator[WriteConditions]:
        """Around the commit (PutObject, CompleteMultipartUpload) of a create-only
        write: one at a time per key in this process, each looking first, so a
        backend that ignores If-None-Match (rclone) or races it (moto's multipart
        Complete) cannot let two of ours win. Other writers (replicas) meet S3's own
        If-None-Match, which the commit carries too."""
        async with self._creating(key):
            if await self._exists(key):
                raise PreconditionFailed("a video already exists under that key")
            yield {"IfNoneMatch": "*"}

    async def _put(
        self, key: str, source: UploadSource, content_type: str, commit: Commit
    ) -> StoredObject:
        plan = PartPlan(self._cfg.part_size, source.content_length, self._cfg.equal_parts)
        if source.content_length is not None and source.content_length > plan.capacity():
            raise TooLarge(f"one upload holds at most {plan.capacity()} bytes")
        # One part being read, the rest being sent: memory stays flat.
        buffers = PartBuffers(self._cfg.upload_concurrency + 1)
        first = await buffers.take(plan.size_of(1))
        first = first[: await source.readinto(first)]
        if len(first) < plan.size_of(1):
            return await self._put_single(key, first, source, content_type, commit)
        metadata = multipart_metadata(source.expected_sha256)
        upload = MultipartUpload(
            self._client,
            self._bucket,
            key,
            concurrency=self._cfg.upload_concurrency,
            buffers=buffers,
            owner=self,
        )
        md5 = BackgroundHash("md5") if self._multipart_etags in _NEEDS_MD5 else None
        async with upload:
            await upload.start(ContentType=content_type, Metadata=metadata)
            await self._send_parts(upload, buffers, first, source, plan, md5)
            async with commit() as conditions:
                etag = await upload.complete(**conditions)
        content_md5 = await md5.hexdigest() if md5 is not None else None
        etag = await self.record_completed(key, etag, upload.size, source.sha256(), content_md5)
        return StoredObject(key, upload.size, etag, content_type, source.sha256())

    async def record_completed(
        self, key: str, completed: str, size: int, sha256: str, content_md5: str | None = None
    ) -> str:
        """After a CompleteMultipartUpload of ``size`` bytes that answered the ETag
        ``completed``: record the body's SHA-256 under the ETag that HEAD and GET
        will show, and return that ETag (for the upload's answer). ``content_md5``,
        the body's hex MD5 where the caller computed it, spares rclone a HEAD."""
        etag = await self._etag_as_read(key, completed, size, content_md5)
        await self.record_digest(key, etag, size, sha256)
        return etag

    async def record_digest(self, key: str, etag: str, size: int, sha256: str) -> bool:
        """Record that the version of ``key`` with ``etag`` (as HEAD and GET show it)
        and ``size`` has the SHA-256 ``sha256``; reads of that version report it from
        now on, in every process on this bucket. False if the record could not be
        written: the object stays stored, only without its digest."""
        try:
            await self._digests.write(DigestRecord(key, etag, size, sha256.lower()))
        except (UpstreamError, UpstreamUnavailable, UpstreamTimeout) as exc:
            log.warning("stored %r but could not record its SHA-256: %s", key, exc.message)
            return False
        return True

    async def _send_parts(
        self,
        upload: MultipartUpload,
        buffers: PartBuffers,
        part: memoryview,
        source: UploadSource,
        plan: PartPlan,
        md5: BackgroundHash | None,
    ) -> None:
        number = 1
        while part:
            if md5 is not None:
                md5.feed(part)
            await upload.add_part(part)
            number += 1
            part = await buffers.take(plan.size_of(min(number, MAX_PARTS)))
            if md5 is not None:
                await md5.wait()  # the buffer may be one still being hashed
            part = part[: await source.readinto(part)]
            if part and number > MAX_PARTS:
                raise TooLarge(f"one upload holds at most {plan.capacity()} bytes")

    async def _etag_as_read(
        self, key: str, completed: str, size: int, content_md5: str | None
    ) -> str:
        """The ETag that HEAD and GET will show, so the client's If-Match,
        If-None-Match and If-Range work. AWS reports the multipart "md5-N" tag
        everywhere; rclone answers Complete with it but HEAD/GET with the MD5,
        which it computes on that first HEAD (~1.6 s per GiB). The first upload
        asks with a HEAD and learns which the backend does; later ones need not."""
        style = self._multipart_etags
        if style is _MultipartEtags.AS_COMPLETED:
            return completed
        if style is _MultipartEtags.CONTENT_MD5 and content_md5 is not None:
            return f'"{content_md5}"'
        try:
            info = await self.head(key)
        except (NotFound, UpstreamError, UpstreamUnavailable, UpstreamTimeout):
            return completed  # the upload is done; only the tag is in doubt
        if info.size != size:
            return completed  # another writer replaced the key since: keep our own tag
        if style is _MultipartEtags.UNKNOWN:
            self._multipart_etags = _learn_etag_style(info.etag, completed, content_md5)
        return info.etag

    async def _exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except NotFound:
            return False
        return True

    async def _put_single(
        self,
        key: str,
        data: memoryview,
        source: UploadSource,
        content_type: str,
        commit: Commit,
    ) -> StoredObject:
        sha256 = source.sha256()
        async with commit() as conditions, self.call("PutObject"):
            response = await self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=bytes(data),
                ContentType=content_type,
                Metadata={SHA256_METADATA: sha256},
                **conditions,
            )
        # Its metadata carries the digest; known here, a read needs no record GET.
        self._digests.known.add(DigestRecord(key, response["ETag"], len(data), sha256))
        return StoredObject(key, len(data), response["ETag"], content_type, sha256)

    async def delete(self, key: str) -> None:
        async with self.call("DeleteObject"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        # After the object: a failure in between leaves a record that matches
        # nothing, never an object that lost its digest.
        await self._digests.delete(key)

    async def list(self, prefix: str, after: str, limit: int) -> ObjectPage:
        if _among_records(prefix):
            return ObjectPage([], None)
        listed, truncated = await self._list_keys(prefix, after, limit)
        if truncated and _among_records(listed[-1]):
            # The page ran into vidproxy's own records (one per multipart object,
            # sorted before most keys): list on from past them, not a page of nothing.
            more = limit - sum(not is_reserved(key) for key in listed)
            rest, truncated = await self._list_keys(prefix, PAST_RESERVED, more)
            listed = [*listed, *rest]
        keys = [key for key in listed if not is_reserved(key)]
        # ListObjectsV2 has no content types: look them up, a few at a time.
        limiter = asyncio.Semaphore(LIST_HEAD_CONCURRENCY)

        async def head_or_none(key: str) -> ObjectInfo | None:
            async with limiter:
                try:
                    return await self.head(key)
                except NotFound:
                    return None  # deleted since the listing

        infos = await asyncio.gather(*(head_or_none(k) for k in keys))
        items = [info for info in infos if info is not None]
        return ObjectPage(items, listed[-1] if truncated else None)

    # builtins.list: in the class body, ``list`` is the method above.
    async def _list_keys(
        self, prefix: str, after: str, limit: int
    ) -> tuple[builtins.list[str], bool]:
        """One ListObjectsV2 page: its keys, and whether more follow."""
        if _among_records(after) and after < PAST_RESERVED:
            after = PAST_RESERVED  # a cursor among vidproxy's records: skip the rest
        params: dict[str, Any] = {"Bucket": self._bucket, "MaxKeys": limit, "Prefix": prefix}
        if after:
            params["StartAfter"] = after
        async with self.call("ListObjectsV2"):
            response = await self._client.list_objects_v2(**params)
        listed = [str(item["Key"]) for item in response.get("Contents", [])]
        return listed, bool(response.get("IsTruncated")) and bool(listed)


class S3Reader:
    """One version of an S3 object; may hold the GET that ``open`` started."""

    local_path = None
    cache_status: str | None = None

    def __init__(
        self,
        store: S3Store,
        info: ObjectInfo,
        response: GetObjectOutputTypeDef | None = None,
        fetched: ByteRange | None = None,
    ) -> None:
        self._store = store
        self.info = info
        self._response = response
        self._fetched = fetched

    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[bytes]:
        response, fetched = self._response, self._fetched
        self._response = None
        if response is None or fetched != byte_range:
            if response is not None:
                response["Body"].close()
            response, fetched = await self._refetch(byte_range)
        return _iter_body(response["Body"])

    async def _refetch(
        self, byte_range: ByteRange | None
    ) -> tuple[GetObjectOutputTypeDef, ByteRange | None]:
        spec = byte_range.spec() if byte_range is not None else None
        try:
            # If-Match pins the version the headers already describe.
            response, fetched, info = await self._store._get(self.info.key, spec, self.info.etag)
        except (PreconditionFailed, NotFound, _Unsatisfiable):
            raise UpstreamUnavailable("the video changed while it was being read; retry") from None
        if info.etag != self.info.etag:
            # A store that ignores If-Match (rclone) still names what it sent.
            response["Body"].close()
            raise UpstreamUnavailable("the video changed while it was being read; retry")
        if fetched != byte_range:
            response["Body"].close()
            raise UpstreamError("the storage backend ignored a Range request")
        return response, fetched

    async def aclose(self) -> None:
        if self._response is not None:
            self._response["Body"].close()
            self._response = None

    def damaged(self, found: str) -> ObjectDamaged:
        log.error("S3 object %r is damaged: %s", self.info.key, found)
        return ObjectDamaged(f"the stored bytes of this video are damaged: {found}")


async def _iter_body(body: StreamingBody) -> AsyncIterator[bytes]:
    """The body in pieces of READ_CHUNK where the backend is fast, the first
    one at once. A socket read brings what the backend wrote since the last
    one: 32 KiB from rclone, some 14,000 pieces per GiB, each paying every
    layer's cost on its way to the client and the cache. Joined, a cold GET
    took 1.76 CPU-s per GiB against 1.92 (bench/, medians of 6 runs each, one
    session). No piece waits more than GATHER_WAIT for the next, so the bytes
    of a slow or stalling backend still go on."""
    async with body, s3_errors("GetObject body"):
        first = await body.read(READ_CHUNK)
        if not first:
            return
        yield first
        loop = asyncio.get_running_loop()
        pieces: list[bytes] = []
        gathered, due = 0, 0.0
        while True:
            waiting = asyncio.timeout_at(due if pieces else None)
            try:
                async with waiting:
                    chunk = await body.read(READ_CHUNK)
            except TimeoutError:
                if not waiting.expired():
                    raise  # the read's own timeout
                yield _joined(pieces)
                pieces, gathered = [], 0
                continue
            if not chunk:
                break
            if not pieces:
                due = loop.time() + GATHER_WAIT
            pieces.append(chunk)
            gathered += len(chunk)
            if gathered >= READ_CHUNK:
                yield _joined(pieces)
                pieces, gathered = [], 0
        if pieces:
            yield _joined(pieces)


def _joined(pieces: list[bytes]) -> bytes:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


_NEEDS_MD5 = (_MultipartEtags.UNKNOWN, _MultipartEtags.CONTENT_MD5)


def _among_records(key: str) -> bool:
    """Under RESERVED_PREFIX: the contiguous range of keys that PAST_RESERVED ends
    (``is_reserved`` also covers the prefix's bare name, which sorts elsewhere)."""
    return key.startswith(RESERVED_PREFIX)


def _learn_etag_style(shown: str, completed: str, content_md5: str | None) -> _MultipartEtags:
    if shown == completed:
        return _MultipartEtags.AS_COMPLETED
    if content_md5 is not None and shown.strip('"') == content_md5:
        return _MultipartEtags.CONTENT_MD5
    return _MultipartEtags.OTHER


def multipart_metadata(sha256: str | None) -> dict[str, str]:
    """A multipart upload's metadata: its SHA-256 if known before the body, else
    the mark that a record of it will be written."""
    return {SHA256_METADATA: sha256} if sha256 else {RECORD_METADATA: "1"}


def _info_from(key: str, response: ObjectHead, size: int) -> ObjectInfo:
    metadata = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
    modified = response.get("LastModified") or datetime.now(UTC)
    return ObjectInfo(
        key=key,
        size=size,
        etag=response.get("ETag") or '""',
        last_modified=modified.astimezone(UTC),
        content_type=safe_content_type(response.get("ContentType")),
        sha256=metadata.get(SHA256_METADATA),
        sha256_recorded=metadata.get(RECORD_METADATA) == "1",
        md5=_content_md5(response),
    )


def _content_md5(response: ObjectHead) -> str | None:
    """The body's MD5 where the ETag is one."""
    match = _PLAIN_ETAG_RE.fullmatch(response.get("ETag") or "")
    if match is None or response.get("SSECustomerAlgorithm"):
        return None
    if response.get("ServerSideEncryption") in _ETAG_NOT_MD5_ENCRYPTION:
        return None
    return match.group(1).lower()
