"""vidproxy in the test's own event loop, on a real loopback socket, run as
``server.serve`` runs it in production. The ``start_vidproxy`` fixture
(tests/conftest.py) is the usual way in; ``serving`` is for the places a
function-scoped fixture cannot reach (module-scoped fixtures, hypothesis)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import AppRunner

from vidproxy.config import Config
from vidproxy.web.app import create_app
from vidproxy.web.appkeys import CONFIG
from vidproxy.web.limits import MAX_DESCRIPTORS, ConnectionSlots
from vidproxy.web.protocol import ConnectionRules, JsonErrorRunner

Client = TestClient[Any, Any]


class RunAppServer(TestServer):
    """A TestServer that handles requests as ``server.serve`` does in production.

    aiohttp's TestServer turns ``handler_cancellation`` on; production leaves it
    off, so a client that hangs up does not cancel the handler (an ffmpeg upload
    that sent its whole body and closed must still be stored). The runner is
    production's too, so what aiohttp's parser refuses is answered in JSON, and
    vidproxy's app gets its configured head deadline and connection bound.
    ``handler_cancellation=True`` is for the tests of a handler being cancelled.
    """

    def __init__(self, app: web.Application, *, handler_cancellation: bool = False) -> None:
        super().__init__(app)
        self._handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs: Any) -> AppRunner:
        kwargs["handler_cancellation"] = self._handler_cancellation
        config = self.app.get(CONFIG)
        if config is not None:
            limit = config.server.max_connections or MAX_DESCRIPTORS
            kwargs["rules"] = ConnectionRules(config.server.header_timeout, ConnectionSlots(limit))
        return JsonErrorRunner(self.app, **kwargs)


def as_app(what: Config | web.Application) -> web.Application:
    return what if isinstance(what, web.Application) else create_app(what)


@contextlib.asynccontextmanager
async def serving(
    what: Config | web.Application, *, handler_cancellation: bool = False
) -> AsyncIterator[Client]:
    """vidproxy (``create_app(config)``, or an app built by the test) until the
    block ends; yields an aiohttp TestClient bound to it."""
    server = RunAppServer(as_app(what), handler_cancellation=handler_cancellation)
    client: Client = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
