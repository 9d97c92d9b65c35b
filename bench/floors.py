"""The floors: bare aiohttp servers doing only the unavoidable part of each job,
measured in the same run, so vidproxy's CPU seconds per GiB read as a multiple
of what any aiohttp server on this machine would spend.

``python -m bench.floors --port P --data DIR --upstream-port R --cache-dir DIR``
serves, on one port:

- ``PUT /discard``: reads the body and drops it (upload floor);
- ``PUT /sha256``: the same, hashing it with SHA-256 (upload + digest floor);
- ``GET /sendfile/KEY``: the file DIR/KEY with ``loop.sendfile`` (warm floor);
- ``GET /relay/KEY``: GETs ``/bench/KEY`` from the backend on R (anonymous),
  writes every piece to the client and to a file under the cache dir (cold floor:
  read from a socket, write to a socket, write to the cache).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from aiohttp import ClientSession, web

PIECE = 1024 * 1024


async def discard(request: web.Request) -> web.Response:
    size = 0
    async for data in request.content.iter_any():
        size += len(data)
    return web.json_response({"size": size}, status=201)


async def sha256(request: web.Request) -> web.Response:
    hashed, size = hashlib.sha256(), 0
    async for data in request.content.iter_any():
        hashed.update(data)
        size += len(data)
    return web.json_response({"size": size, "sha256": hashed.hexdigest()}, status=201)


async def sendfile(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(request.app["data"]) / request.match_info["key"])


async def relay(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    url = f"http://127.0.0.1:{request.app['upstream']}/bench/{key}"
    async with request.app["session"].get(url) as upstream:
        response = web.StreamResponse(
            headers={"Content-Length": upstream.headers["Content-Length"]}
        )
        await response.prepare(request)
        fd = os.open(
            Path(request.app["cache"]) / "relay.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        )
        try:
            async for data in upstream.content.iter_chunked(PIECE):
                os.write(fd, data)  # page cache: a memcpy, as the fill's pwritev
                await response.write(data)
        finally:
            os.close(fd)
        await response.write_eof()
        return response


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    async with ClientSession(auto_decompress=False) as session:
        app["session"] = session
        yield


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--port", "--upstream-port"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=0)
    app.update(data=args.data, upstream=args.upstream_port, cache=args.cache_dir)
    app.cleanup_ctx.append(_session)
    app.add_routes([
        web.put("/discard", discard),
        web.put("/sha256", sha256),
        web.get("/sendfile/{key}", sendfile),
        web.get("/relay/{key}", relay),
    ])  # fmt: skip
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
