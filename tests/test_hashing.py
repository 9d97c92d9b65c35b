"""``BackgroundHash``: the digest of the pieces fed, however they are split."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from vidproxy.hashing import THREAD_HASH_BYTES, BackgroundHash


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
async def test_pieces_in_and_off_the_thread_give_the_whole_digest(algorithm: str) -> None:
    data = bytes(range(256)) * (3 * THREAD_HASH_BYTES // 256) + b"tail"
    cuts = [0, 10, THREAD_HASH_BYTES + 10, THREAD_HASH_BYTES + 20, len(data)]
    hashed = BackgroundHash(algorithm)
    for start, stop in itertools.pairwise(cuts):
        await hashed.wait()
        hashed.feed(memoryview(data)[start:stop])

    assert await hashed.hexdigest() == hashlib.new(algorithm, data).hexdigest()


async def test_a_piece_fed_before_the_last_is_done_is_refused() -> None:
    hashed = BackgroundHash("sha256")
    hashed.feed(memoryview(bytes(THREAD_HASH_BYTES)))  # goes to a thread

    with pytest.raises(RuntimeError):
        hashed.feed(memoryview(b"more"))
    await hashed.wait()
