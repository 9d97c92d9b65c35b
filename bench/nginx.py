"""The peer: one nginx (Debian's package) with three servers on the same backend.

- ``whole``: an S3 caching proxy, whole objects (``proxy_cache``, ``proxy_cache_lock on``).
  With a cache configured nginx drops the client's ``Range`` towards the upstream
  and fetches the whole object, serving the range as it streams past.
- ``slice``: the same with ``slice 1m``: each 1 MiB slice is its own ranged
  upstream request and cache entry. It talks to rclone through ``bench.shim``,
  which relays rclone's ranged ``200 + Content-Range`` as the ``206`` the slice
  module insists on.
- ``static``: the backend's own file served straight from disk with
  ``sendfile``: the ceiling for warm reads.

One worker process, like vidproxy's one process. Access logs on, like vidproxy's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LOCK_TIMEOUT = "10m"  # proxy_cache_lock_timeout: a 1 GiB fill must hold the lock throughout

TEMPLATE = """\
worker_processes 1;
{user}
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log {root}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    proxy_cache_path {root}/cache-whole levels=1:2 keys_zone=whole:16m
                     max_size=8g inactive=1h use_temp_path=off;
    proxy_cache_path {root}/cache-slice levels=1:2 keys_zone=slice:16m
                     max_size=8g inactive=1h use_temp_path=off;

    server {{
        listen 127.0.0.1:{whole_port};
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_cache whole;
            proxy_cache_lock on;
            proxy_cache_lock_timeout {lock_timeout};
            proxy_cache_lock_age {lock_timeout};
            proxy_cache_valid 200 1h;
        }}
    }}

    server {{
        listen 127.0.0.1:{slice_port};
        location / {{
            slice 1m;
            proxy_pass http://127.0.0.1:{shim_port};
            proxy_cache slice;
            proxy_cache_key $uri$is_args$args$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_lock on;
            proxy_cache_lock_timeout {lock_timeout};
            proxy_cache_lock_age {lock_timeout};
            proxy_cache_valid 200 206 1h;
        }}
    }}

    server {{
        listen 127.0.0.1:{static_port};
        root {data_dir};
    }}
}}
"""


@dataclass(frozen=True)
class NginxPorts:
    whole: int
    slice: int
    static: int


def render(root: Path, data_dir: Path, ports: NginxPorts, backend_port: int, shim_port: int) -> str:
    # As root, workers would drop to "nobody" and lose the temp directories.
    user = "user root;" if os.geteuid() == 0 else ""
    return TEMPLATE.format(
        user=user,
        root=root,
        data_dir=data_dir,
        whole_port=ports.whole,
        slice_port=ports.slice,
        static_port=ports.static,
        backend_port=backend_port,
        shim_port=shim_port,
        lock_timeout=LOCK_TIMEOUT,
    )
