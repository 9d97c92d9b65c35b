"""A SHA-256 whose state survives a restart: OpenSSL's ``SHA256_CTX`` through ctypes.

``hashlib`` objects cannot be serialized, so a resumed upload would have to read
back every stored byte to learn its digest. OpenSSL's context is a plain struct:
its bytes, stored in the upload record at each durable point, continue the hash
in any process. ctypes releases the GIL around the call, so large pieces hash in a
worker thread as ``hashlib`` does. Where libcrypto is missing, ``Sha256`` falls
back to ``hashlib`` and ``state()`` answers None: the digest of an upload resumed
in another process is then recomputed from the stored object.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from functools import cache
from typing import Any

# sizeof(SHA256_CTX) in OpenSSL 1.1 and 3.x: h[8], Nl, Nh, data[16], num, md_len.
CTX_BYTES = 112
DIGEST_BYTES = 32


@cache
def _libcrypto() -> Any | None:
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto"), "libcrypto.so.1.1"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            for fn in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
                getattr(lib, fn).restype = ctypes.c_int
            lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def resumable_available() -> bool:
    """True where the hash state can be saved and resumed (libcrypto is present)."""
    return _libcrypto() is not None


class Sha256:
    """SHA-256 fed piece by piece; ``state()`` is a hex snapshot ``resume`` accepts."""

    def __init__(self, state: str | None = None) -> None:
        lib = _libcrypto()
        self._lib: Any = lib
        self._fallback: Any = None
        self._ctx = ctypes.create_string_buffer(CTX_BYTES)
        if lib is None:
            if state is not None:
                raise ValueError("a saved SHA-256 state needs libcrypto")
            self._fallback = hashlib.sha256()
        elif state is None:
            lib.SHA256_Init(self._ctx)
        else:
            raw = bytes.fromhex(state)
            if len(raw) != CTX_BYTES:
                raise ValueError("not a SHA-256 state")
            ctypes.memmove(self._ctx, raw, CTX_BYTES)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._fallback is not None:
            self._fallback.update(data)
            return
        view = memoryview(data).cast("B")
        if not len(view):
            return
        if view.readonly:
            pointer: Any = ctypes.c_char_p(bytes(view))
        else:
            pointer = (ctypes.c_char * len(view)).from_buffer(view)
        self._lib.SHA256_Update(self._ctx, pointer, len(view))

    def state(self) -> str | None:
        """The hash so far as hex, or None where it cannot be saved."""
        if self._fallback is not None:
            return None
        return self._ctx.raw.hex()

    def copy(self) -> Sha256:
        twin = Sha256.__new__(Sha256)
        twin._lib = self._lib
        twin._fallback = self._fallback.copy() if self._fallback is not None else None
        twin._ctx = ctypes.create_string_buffer(self._ctx.raw, CTX_BYTES)
        return twin

    def hexdigest(self) -> str:
        """The digest of everything fed so far; the hash can go on after it."""
        if self._fallback is not None:
            return str(self._fallback.hexdigest())
        ctx = ctypes.create_string_buffer(self._ctx.raw, CTX_BYTES)
        out = ctypes.create_string_buffer(DIGEST_BYTES)
        self._lib.SHA256_Final(out, ctx)
        return out.raw.hex()
