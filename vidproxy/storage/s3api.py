"""The S3 calls vidproxy makes, and nothing else (as tusd's ``S3API`` interface).

``storage/s3.py``, ``multipart.py``, ``sweeper.py`` and ``digests.py`` take an
``S3API``, not aiobotocore's whole client: the list below is what a second S3 implementation
(moto, rclone, MinIO, R2) has to answer, and what a reader needs to know about
S3 to follow the backend. A call added to the backend is added here first.

The request and answer types are those of the ``types-aiobotocore-s3`` stubs
(the dev extra installs them), so mypy checks every parameter name and every
field read against botocore's own service model; at run time nothing is
imported from the stubs. mypy also checks that aiobotocore's S3 client is an
``S3API`` where ``open_s3_store`` hands it over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    from typing import Unpack

    from types_aiobotocore_s3.type_defs import (
        AbortMultipartUploadOutputTypeDef,
        AbortMultipartUploadRequestTypeDef,
        CompleteMultipartUploadOutputTypeDef,
        CompleteMultipartUploadRequestTypeDef,
        CreateBucketOutputTypeDef,
        CreateBucketRequestTypeDef,
        CreateMultipartUploadOutputTypeDef,
        CreateMultipartUploadRequestTypeDef,
        DeleteObjectOutputTypeDef,
        DeleteObjectRequestTypeDef,
        GetObjectOutputTypeDef,
        GetObjectRequestTypeDef,
        HeadBucketOutputTypeDef,
        HeadBucketRequestTypeDef,
        HeadObjectOutputTypeDef,
        HeadObjectRequestTypeDef,
        ListMultipartUploadsOutputTypeDef,
        ListMultipartUploadsRequestTypeDef,
        ListObjectsV2OutputTypeDef,
        ListObjectsV2RequestTypeDef,
        ListPartsOutputTypeDef,
        ListPartsRequestTypeDef,
        PutObjectOutputTypeDef,
        PutObjectRequestTypeDef,
        UploadPartOutputTypeDef,
        UploadPartRequestTypeDef,
    )

# What botocore calls an event handler with: keyword arguments that depend on
# the event (model, params, http_response, context, ...).
EventHandler = Callable[..., None]


class WriteConditions(TypedDict, total=False):
    """The conditional-write headers PutObject and CompleteMultipartUpload take."""

    IfNoneMatch: str  # "*": create only, 412 if the key exists
    IfMatch: str  # an ETag: replace only that version


class EventHooks(Protocol):
    """botocore's event emitter, for the request counters in ``StoreStats``."""

    def register(self, event_name: str, handler: EventHandler) -> Any: ...


class ClientMeta(Protocol):
    @property
    def events(self) -> EventHooks: ...


class S3API(Protocol):
    @property
    def meta(self) -> ClientMeta: ...

    # The bucket: made at start if asked, looked at by /readyz.
    async def create_bucket(
        self, **kwargs: Unpack[CreateBucketRequestTypeDef]
    ) -> CreateBucketOutputTypeDef: ...

    async def head_bucket(
        self, **kwargs: Unpack[HeadBucketRequestTypeDef]
    ) -> HeadBucketOutputTypeDef: ...

    # Objects: read, written in one request, removed, listed.
    async def head_object(
        self, **kwargs: Unpack[HeadObjectRequestTypeDef]
    ) -> HeadObjectOutputTypeDef: ...

    async def get_object(
        self, **kwargs: Unpack[GetObjectRequestTypeDef]
    ) -> GetObjectOutputTypeDef: ...

    async def put_object(
        self, **kwargs: Unpack[PutObjectRequestTypeDef]
    ) -> PutObjectOutputTypeDef: ...

    async def delete_object(
        self, **kwargs: Unpack[DeleteObjectRequestTypeDef]
    ) -> DeleteObjectOutputTypeDef: ...

    async def list_objects_v2(
        self, **kwargs: Unpack[ListObjectsV2RequestTypeDef]
    ) -> ListObjectsV2OutputTypeDef: ...

    # Multipart uploads (multipart.py), and the sweep of abandoned ones (sweeper.py).
    async def create_multipart_upload(
        self, **kwargs: Unpack[CreateMultipartUploadRequestTypeDef]
    ) -> CreateMultipartUploadOutputTypeDef: ...

    async def upload_part(
        self, **kwargs: Unpack[UploadPartRequestTypeDef]
    ) -> UploadPartOutputTypeDef: ...

    async def complete_multipart_upload(
        self, **kwargs: Unpack[CompleteMultipartUploadRequestTypeDef]
    ) -> CompleteMultipartUploadOutputTypeDef: ...

    async def abort_multipart_upload(
        self, **kwargs: Unpack[AbortMultipartUploadRequestTypeDef]
    ) -> AbortMultipartUploadOutputTypeDef: ...

    async def list_multipart_uploads(
        self, **kwargs: Unpack[ListMultipartUploadsRequestTypeDef]
    ) -> ListMultipartUploadsOutputTypeDef: ...

    # Whether an upload is still there (its newest part, for the sweeper).
    async def list_parts(
        self, **kwargs: Unpack[ListPartsRequestTypeDef]
    ) -> ListPartsOutputTypeDef: ...
