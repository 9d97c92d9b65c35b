"""The set-up the bench builds for itself, all on loopback, all stopped in ``finally``.

    rclone serve s3 (no auth) over DATA/ --- bucket "bench" is DATA/bench/
      ^  ^  ^
      |  |  +-- bench.shim (counts; ranged 200 -> 206) <-- nginx "slice", vidproxy "counted"
      |  +----- nginx "whole" (proxy_cache), boto3 (the direct baseline)
      +-------- vidproxy "direct"
    nginx "static" serves DATA/bench/ from disk with sendfile

vidproxy "direct" reaches rclone like nginx "whole" and boto3 do. Only nginx
"slice" needs the shim (rclone's ranged 200); the shim moves bodies with
splice(2) and its cost per request is measured in every run, so that hop is a
handicap nginx carries and the report shows its size. vidproxy "counted"
stands behind the shim to have its backend GETs counted at the wire.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from . import client, nginx
from .procs import Proc, children, cpu_seconds, find_tool, free_port, port_open, read_rss
from .units import MiB

BUCKET = "bench"
WARMUP_KEY = "warmup.bin"
WARMUP_SIZE = 1 * MiB
ACCESS_KEY = "bench"  # rclone runs without --auth-key: any credentials do
SECRET_KEY = "bench-secret"
REGION = "us-east-1"
PART_SIZE = 8 * MiB  # vidproxy's default s3.part_size, which boto3 is given too
UPLOAD_CONCURRENCY = 4  # vidproxy's default s3.upload_concurrency
PROFILE_RATE = 200  # py-spy samples per second
RCLONE_DIR_CACHE = "1000h"


def aws_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDPROXY_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


class Vidproxy:
    """``vidproxy serve`` (the console script, default event loop) on S3 with its disk cache."""

    def __init__(self, name: str, root: Path, endpoint_port: int) -> None:
        self.name = name
        self.dir = root / f"vidproxy-{name}"
        self.dir.mkdir()
        self.cache_dir = self.dir / "cache"
        self.port = free_port()
        self.config = self.dir / "config.toml"
        self.config.write_text(_vidproxy_config(self.port, endpoint_port, self.cache_dir))
        self._proc: Proc | None = None
        self.profile: Path | None = None

    def start(self, profile: Path | None = None, warm: bool = True) -> None:
        """Start on an empty cache; under py-spy when ``profile`` names its output.
        Without ``warm``, the next request is its first (a player's first play)."""
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        argv = [find_tool("vidproxy"), "serve", "--config", str(self.config)]
        if profile is not None:
            spy = [find_tool("py-spy"), "record", "--rate", str(PROFILE_RATE), "--format", "raw"]
            argv = [*spy, "--output", str(profile), "--", *argv]
        self.profile = profile
        log = self.dir / "vidproxy.log"
        self._proc = Proc(f"vidproxy {self.name}", argv, log, cwd=self.dir, env=aws_env())
        self._proc.start(self._healthy)
        if not warm:
            return
        # The first S3 call pays botocore's one-time set-up; take it outside any timing.
        warm = client.get(self.port, f"/videos/{WARMUP_KEY}")
        if warm.status != 200 or warm.size != WARMUP_SIZE:
            raise RuntimeError(f"vidproxy {self.name}: warm-up GET answered {warm.status}")

    def _healthy(self) -> bool:
        return port_open(self.port) and client.get(self.port, "/healthz").status == 200

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self.profile is not None:
            # SIGTERM to vidproxy itself: py-spy writes its profile when its target exits.
            proc.signal_child(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.stop()
        else:
            proc.stop()
        self.profile = None

    def restart(self, profile: Path | None = None, warm: bool = True) -> None:
        self.stop()
        self.start(profile, warm)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def peak_rss(self) -> int:
        return read_rss(self.pid).hwm

    def idle_rss(self) -> int:
        return read_rss(self.pid).rss


def _vidproxy_config(port: int, endpoint_port: int, cache_dir: Path) -> str:
    # Only what points it at the bench's backend; everything else stays default.
    return (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[s3]\nbucket = "{BUCKET}"\nendpoint_url = "http://127.0.0.1:{endpoint_port}"\n'
        f'region = "{REGION}"\naddressing_style = "path"\n\n'
        f'[cache]\ndir = "{cache_dir}"\n'
    )


class Nginx:
    def __init__(self, root: Path, data_dir: Path, backend_port: int, shim_port: int) -> None:
        self.dir = root / "nginx"
        self.dir.mkdir()
        self.ports = nginx.NginxPorts(free_port(), free_port(), free_port())
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(nginx.render(self.dir, data_dir, self.ports, backend_port, shim_port))
        self._proc: Proc | None = None

    def start(self) -> None:
        """Start on empty caches."""
        for name in ("cache-whole", "cache-slice", "tmp"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        (self.dir / "tmp").mkdir()
        argv = [find_tool("nginx"), "-p", str(self.dir), "-c", str(self.conf)]
        argv += ["-e", str(self.dir / "error.log")]
        self._proc = Proc("nginx", argv, self.dir / "nginx.out")
        self._proc.start(lambda: all(map(port_open, (*vars(self.ports).values(),))))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cpu(self) -> float:
        """CPU seconds of the worker (one worker: master and cache manager idle)."""
        assert self._proc is not None
        return sum(cpu_seconds(pid) for pid in children(self._proc.pid))


@dataclass
class Env:
    root: Path
    data_dir: Path  # rclone's root; the bucket is a directory in it
    rclone_port: int
    shim_port: int
    shim_log: Path
    nginx: Nginx
    direct: Vidproxy  # endpoint: rclone
    counted: Vidproxy  # endpoint: the shim
    s3: Any  # boto3 client on rclone, the direct baseline
    s3_shim: Any  # boto3 client through the shim, to measure what the shim costs
    seeded: list[str]  # the objects written before rclone started

    def prime(self) -> None:
        """HEAD the seeded objects (outside any timing), so that none of them pays
        rclone's MD5 inside a measurement."""
        for key in self.seeded:
            self.s3.head_object(Bucket=BUCKET, Key=key)

    def object_path(self, key: str) -> Path:
        return self.data_dir / BUCKET / key

    def delete(self, *keys: str) -> None:
        for key in keys:
            self.s3.delete_object(Bucket=BUCKET, Key=key)

    def shim_lines(self, since: int) -> list[list[str]]:
        with open(self.shim_log, encoding="utf-8") as f:
            f.seek(since)
            return [line.split() for line in f.read().splitlines()]

    def shim_offset(self) -> int:
        return self.shim_log.stat().st_size


def boto3_client(port: int) -> Any:
    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    ).client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=BotoConfig(
            # As vidproxy's defaults (s3.sign_payload, s3.checksum_mode): UNSIGNED-PAYLOAD
            # and no CRC pass, so the ratio measures the proxy, not a setting.
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            retries={"max_attempts": 1, "mode": "standard"},
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def start_env(stack: ExitStack, root: Path, seed_objects: dict[str, int], pattern: Any) -> Env:
    """Start everything; ``stack`` stops it all. ``seed_objects`` are written into
    the bucket's directory before rclone starts (plain files are what rclone serves)."""
    data_dir = root / "data"
    (data_dir / BUCKET).mkdir(parents=True)
    for key, size in {WARMUP_KEY: WARMUP_SIZE, **seed_objects}.items():
        pattern.write_file(data_dir / BUCKET / key, size)

    rclone_port = free_port()
    rclone_argv = [find_tool("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{rclone_port}"]
    # rclone keeps a file's MD5 (its ETag) with its directory entry; entries expire
    # after --dir-cache-time (5 min by default) and the next GET or HEAD hashes the
    # whole file again (1.5-4 s for 1 GiB), inside whichever timing comes first.
    # Every write goes through rclone itself, so a long-lived cache stays right.
    rclone_argv += ["--dir-cache-time", RCLONE_DIR_CACHE, "--poll-interval", "0"]
    rclone = Proc("rclone", [*rclone_argv, str(data_dir)], root / "rclone.log")
    rclone.start(lambda: port_open(rclone_port))
    stack.callback(rclone.stop)

    shim_port, shim_log = free_port(), root / "shim.log"
    shim_log.touch()
    shim_argv = [sys.executable, "-m", "bench.shim", "--port", str(shim_port)]
    shim_argv += ["--upstream-port", str(rclone_port), "--log", str(shim_log)]
    shim = Proc("shim", [*shim_argv, "--fix-range-status"], root / "shim.out", cwd=_repo())
    shim.start(lambda: port_open(shim_port))
    stack.callback(shim.stop)

    s3, s3_shim = boto3_client(rclone_port), boto3_client(shim_port)
    stack.callback(s3.close)
    stack.callback(s3_shim.close)
    env_keys = [WARMUP_KEY, *seed_objects]
    for key in env_keys:
        # rclone computes a file's MD5 (its ETag) on the first HEAD and keeps it:
        # pay that here, not inside anyone's timing.
        s3.head_object(Bucket=BUCKET, Key=key)
    s3.get_object(Bucket=BUCKET, Key=WARMUP_KEY)["Body"].read()  # botocore's first-call set-up
    s3_shim.get_object(Bucket=BUCKET, Key=WARMUP_KEY)["Body"].read()

    server = Nginx(root, data_dir, rclone_port, shim_port)
    server.start()
    stack.callback(server.stop)
    direct = Vidproxy("direct", root, rclone_port)
    counted = Vidproxy("counted", root, shim_port)
    for vp in (direct, counted):
        vp.start()
        stack.callback(vp.stop)
    return Env(
        root,
        data_dir,
        rclone_port,
        shim_port,
        shim_log,
        server,
        direct,
        counted,
        s3,
        s3_shim,
        env_keys,
    )


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent
