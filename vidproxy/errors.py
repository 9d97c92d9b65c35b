"""vidproxy's error tree: every error a client can get is one class here.

    VidproxyError                   500 internal_error
    ├── BadRequest                  400 bad_request
    │   ├── InvalidKey              400 invalid_key
    │   ├── InvalidContentType      400 invalid_content_type
    │   ├── InvalidChecksum         400 invalid_checksum: X-Content-SHA256 is not 64 hex digits
    │   ├── InvalidPrecondition     400 invalid_precondition: a write takes only If-None-Match: *
    │   ├── InvalidQuery            400 invalid_query
    │   ├── InvalidJson             400 invalid_json
    │   ├── InvalidMethod           400 invalid_method
    │   ├── InvalidTtl              400 invalid_ttl
    │   ├── SigningDisabled         400 signing_disabled: auth.signing_key is not set
    │   ├── ChecksumMismatch        400 checksum_mismatch
    │   ├── IncompleteBody          400 incomplete_body
    │   ├── InvalidUploadHeader     400 invalid_upload_header: a tus Upload-* header is malformed
    │   ├── UnsupportedChecksum     400 unsupported_checksum: an algorithm not offered
    │   └── MalformedRequest        400 malformed_request: aiohttp's parser refused it
    ├── Unauthorized                401 unauthorized: no credentials, or an unknown token
    ├── Forbidden                   403 forbidden: a token without the right, a bad signature
    │   └── OriginNotAllowed        403 origin_not_allowed: a CORS preflight from another origin
    ├── NotFound                    404 not_found
    ├── MethodNotAllowed            405 method_not_allowed
    ├── RequestTimeout              408 request_timeout: the head or the body stalled
    ├── LengthRequired              411 length_required
    ├── OffsetMismatch              409 offset_mismatch: a tus PATCH not at the upload's offset
    ├── UploadGone                  410 upload_expired: a tus upload past Upload-Expires
    ├── PreconditionFailed          412 precondition_failed
    │   └── TusVersionUnsupported   412 tus_version_unsupported (carries Tus-Version)
    ├── TooLarge                    413 too_large
    ├── UriTooLong                  414 uri_too_long
    ├── UnsupportedMediaType        415 unsupported_media_type: a PATCH not offset+octet-stream
    ├── RangeNotSatisfiable         416 range_not_satisfiable (carries the size)
    ├── ExpectationFailed           417 expectation_failed
    ├── UploadLocked                423 upload_locked: another request is writing that upload
    ├── HeadersTooLarge             431 headers_too_large
    ├── UploadChecksumMismatch      460 upload_checksum_mismatch: tus checksum extension
    ├── ObjectDamaged               500 object_damaged: stored bytes disagree with their record
    ├── UpstreamError               502 upstream_error: the store answered with an error
    ├── UpstreamUnavailable         503 upstream_unavailable: the store cannot be reached
    │   ├── UploadsBusy             503 too_many_uploads
    │   ├── TooManyConnections      503 too_many_connections
    │   └── UploadAborted           503 upload_aborted: the store dropped the upload mid-way
    ├── GatewayTimeout              504 gateway_timeout: the request ran out of time
    │   └── UpstreamTimeout         504 upstream_timeout: the store did not answer in time
    └── HttpError                   4xx http_error: any other status aiohttp answers itself

Storage backends raise these (never botocore's errors); handlers let them
propagate; ``vidproxy.web.errors`` renders every one, on every path, as
``{"error": code, "message": message}``. This module knows no HTTP framework.
"""

from __future__ import annotations

RETRY_AFTER_SECONDS = 5


class VidproxyError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # Headers a caller adds on the way out, e.g. X-Cache on a 416.
        self.extra_headers: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(VidproxyError):
    status = 400
    code = "bad_request"


class InvalidKey(BadRequest):
    code = "invalid_key"


class InvalidContentType(BadRequest):
    code = "invalid_content_type"


class InvalidChecksum(BadRequest):
    code = "invalid_checksum"


class InvalidPrecondition(BadRequest):
    code = "invalid_precondition"


class InvalidQuery(BadRequest):
    code = "invalid_query"


class InvalidJson(BadRequest):
    code = "invalid_json"


class InvalidMethod(BadRequest):
    code = "invalid_method"


class InvalidTtl(BadRequest):
    code = "invalid_ttl"


class SigningDisabled(BadRequest):
    code = "signing_disabled"


class ChecksumMismatch(BadRequest):
    code = "checksum_mismatch"


class IncompleteBody(BadRequest):
    code = "incomplete_body"


class MalformedRequest(BadRequest):
    code = "malformed_request"


class InvalidUploadHeader(BadRequest):
    code = "invalid_upload_header"


class UnsupportedChecksum(BadRequest):
    code = "unsupported_checksum"


class Unauthorized(VidproxyError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="vidproxy"'}


class Forbidden(VidproxyError):
    status = 403
    code = "forbidden"


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"


class NotFound(VidproxyError):
    status = 404
    code = "not_found"


class MethodNotAllowed(VidproxyError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allowed}


class RequestTimeout(VidproxyError):
    status = 408
    code = "request_timeout"


class LengthRequired(VidproxyError):
    status = 411
    code = "length_required"


class OffsetMismatch(VidproxyError):
    status = 409
    code = "offset_mismatch"


class UploadGone(VidproxyError):
    status = 410
    code = "upload_expired"


class PreconditionFailed(VidproxyError):
    status = 412
    code = "precondition_failed"


class TusVersionUnsupported(PreconditionFailed):
    code = "tus_version_unsupported"

    def headers(self) -> dict[str, str]:
        return {"Tus-Version": "1.0.0"}


class TooLarge(VidproxyError):
    status = 413
    code = "too_large"


class UriTooLong(VidproxyError):
    status = 414
    code = "uri_too_long"


class UnsupportedMediaType(VidproxyError):
    status = 415
    code = "unsupported_media_type"


class RangeNotSatisfiable(VidproxyError):
    status = 416
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the object's {size} bytes")
        self.size = size

    def headers(self) -> dict[str, str]:
        # RFC 9110 §15.5.17: a 416 names the current length.
        return {"Content-Range": f"bytes */{self.size}"}


class ExpectationFailed(VidproxyError):
    status = 417
    code = "expectation_failed"


class UploadLocked(VidproxyError):
    status = 423
    code = "upload_locked"


class HeadersTooLarge(VidproxyError):
    status = 431
    code = "headers_too_large"


class UploadChecksumMismatch(VidproxyError):
    """tus: "460 Checksum Mismatch"; none of that PATCH's bytes are kept."""

    status = 460
    code = "upload_checksum_mismatch"


class ObjectDamaged(VidproxyError):
    status = 500
    code = "object_damaged"


class UpstreamError(VidproxyError):
    status = 502
    code = "upstream_error"


class UpstreamUnavailable(VidproxyError):
    status = 503
    code = "upstream_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


class UploadsBusy(UpstreamUnavailable):
    code = "too_many_uploads"


class TooManyConnections(UpstreamUnavailable):
    code = "too_many_connections"


class UploadAborted(UpstreamUnavailable):
    code = "upload_aborted"


class GatewayTimeout(VidproxyError):
    status = 504
    code = "gateway_timeout"


class UpstreamTimeout(GatewayTimeout):
    code = "upstream_timeout"


class HttpError(VidproxyError):
    """A status aiohttp answers by itself that has no class of its own."""

    code = "http_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
