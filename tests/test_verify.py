"""``vidproxy verify`` as an operator runs it: a subprocess configured by the
environment, against an fs directory, or moto with a cache directory that a
vidproxy (in this process) filled; then damage made on disk or at the source."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache_rig import (
    CacheRig,
    cache_rig_fixture,  # noqa: F401
    fetch,
    random_bytes,
    wait_for_hit,
)
from conftest import free_port
from s3_proxy import s3_proxy_fixture  # noqa: F401

from vidproxy.config import Config
from vidproxy.units import MiB

SIZE = 1 * MiB + 3
VERIFY_TIMEOUT = 60.0


def run_verify(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "vidproxy", "verify", *args],
        cwd=cwd,  # no config.toml there: the environment says everything
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT,
    )


def data_files(root: Path) -> dict[str, Path]:
    """fs: key -> data file, read from the metadata files."""
    files = {}
    for meta in (root / "objects").glob("*/*.json"):
        record = json.loads(meta.read_bytes())
        files[record["key"]] = meta.with_name(record["data"])
    return files


@dataclass(frozen=True)
class CacheEntry:
    key: str
    meta: Path
    recorded: str  # "algorithm hex", as verify prints digests
    hashed: str


def cache_entries(root: Path) -> dict[Path, CacheEntry]:
    """Data file -> what verify should say of it, from the metadata files."""
    entries = {}
    for meta in (root / "entries").glob("*/*.json"):
        record = json.loads(meta.read_bytes())
        algorithm = "sha256" if "sha256" in record["content"] else "md5"  # as verify checks
        recorded = record["content"][algorithm]
        data = meta.with_name(record["data"])
        hashed = hashlib.new(algorithm, data.read_bytes()).hexdigest()
        entries[data] = CacheEntry(
            record["key"], meta, f"{algorithm} {recorded}", f"{algorithm} {hashed}"
        )
    return entries


def flip_byte(path: Path, at: int = 1000) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(100)


def test_help_says_what_it_checks_and_how_it_exits(tmp_path: Path) -> None:
    done = run_verify(tmp_path, {}, "--help")

    assert done.returncode == 0
    assert "SHA-256" in done.stdout
    assert "exits 0 if all is well, 1 if something is damaged" in done.stdout


async def test_fs_every_damaged_object_is_one_line_and_the_exit_is_1(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], tmp_path: Path
) -> None:
    client = await start_vidproxy(make_config("fs"))
    for n, key in enumerate(["flipped.mp4", "short.mp4", "gone.mp4", "fine.mp4"]):
        assert (await client.put(f"/videos/{key}", data=random_bytes(SIZE, 70 + n))).status == 201
    files = data_files(tmp_path / "data")
    env = {"VIDPROXY_FS_DIR": str(tmp_path / "data")}
    clean = await asyncio.to_thread(run_verify, tmp_path, env)

    flip_byte(files["flipped.mp4"])
    truncate(files["short.mp4"])
    files["gone.mp4"].unlink()
    damaged = await asyncio.to_thread(run_verify, tmp_path, env)

    assert (clean.returncode, clean.stdout.splitlines()[-1]) == (
        0,
        f"checked 4 objects ({4 * SIZE} bytes) and 0 cache entries (0 bytes); "
        "0 without a recorded digest (size only); 0 damaged",
    )
    assert damaged.returncode == 1, damaged.stderr
    *problems, summary = damaged.stdout.splitlines()
    assert sorted(problems) == [
        "object 'flipped.mp4': its bytes have sha256 "
        f"{hashlib.sha256(files['flipped.mp4'].read_bytes()).hexdigest()}, sha256 "
        f"{hashlib.sha256(random_bytes(SIZE, 70)).hexdigest()} recorded",
        "object 'gone.mp4': the stored bytes of this video are damaged: "
        f"the data file is missing; {SIZE} bytes recorded",
        "object 'short.mp4': the stored bytes of this video are damaged: "
        f"100 bytes on disk, {SIZE} recorded",
    ]
    assert summary.endswith("; 3 damaged")


async def test_s3_objects_and_cache_entries(cache_rig: CacheRig, tmp_path: Path) -> None:
    good, bad, plain = (random_bytes(SIZE, seed) for seed in (80, 81, 82))
    await cache_rig.upload("good.mp4", good, sha256=hashlib.sha256(good).hexdigest())
    await cache_rig.upload("bad.mp4", bad, sha256=hashlib.sha256(b"not these").hexdigest())
    await cache_rig.upload("plain.mp4", plain)  # no SHA-256: its ETag is its MD5
    await cache_rig.upload("plain2.mp4", plain)
    client = await cache_rig.start()
    for key in ("good.mp4", "plain.mp4", "plain2.mp4"):
        await fetch(client, key)
        await wait_for_hit(client, key)
    await client.close()
    damaged = cache_rig.entry_files()[:2]
    flip_byte(damaged[0])
    truncate(damaged[1])
    entries = cache_entries(cache_rig.cache_dir)
    env = {
        "VIDPROXY_S3_BUCKET": cache_rig.bucket,
        "VIDPROXY_S3_ENDPOINT_URL": cache_rig.proxy.upstream,
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
        "VIDPROXY_CACHE_DIR": str(cache_rig.cache_dir),
    }

    done = await asyncio.to_thread(run_verify, tmp_path, env)

    assert done.returncode == 1, done.stderr
    *problems, summary = done.stdout.splitlines()
    assert problems[0] == (
        f"object 'bad.mp4': its bytes have sha256 {hashlib.sha256(bad).hexdigest()}, "
        f"sha256 {hashlib.sha256(b'not these').hexdigest()} recorded"
    )
    flipped, short = (entries[path] for path in (damaged[0], damaged[1]))
    assert sorted(problems[1:]) == sorted(
        [
            f"cache entry {flipped.key!r} ({flipped.meta}): its bytes have "
            f"{flipped.hashed}, {flipped.recorded} recorded",
            f"cache entry {short.key!r} ({short.meta}): 100 bytes on disk, {SIZE} recorded",
        ]
    )
    assert summary == (
        f"checked 4 objects ({4 * SIZE} bytes) and 3 cache entries ({2 * SIZE} bytes); "
        "0 without a recorded digest (size only); 3 damaged"
    )


def test_a_backend_that_cannot_be_reached_exits_2(tmp_path: Path) -> None:
    env = {
        "VIDPROXY_S3_BUCKET": "videos",
        "VIDPROXY_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "VIDPROXY_S3_MAX_ATTEMPTS": "1",
        "VIDPROXY_S3_CONNECT_TIMEOUT": "1",
    }

    done = run_verify(tmp_path, env, "--no-cache")

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("vidproxy verify: the storage backend is unreachable")
