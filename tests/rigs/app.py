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

from vidproxy.config import Config
from vidproxy.web.app import create_app
from vidproxy.web.appkeys import CONFIG
from vidproxy.web.limits import MAX_DESCRIPTORS, ConnectionSlots
from vidproxy.web.logs import AccessLogger
from vidproxy.web.protocol import ConnectionRules, production_test_server

Client = TestClient[Any, Any]


def RunAppServer(
    app: web.Application, *, handler_cancellation: bool = False, access_log: bool = False
) -> TestServer:
    """A TestServer that handles requests as ``server.serve`` does in production
    (``production_test_server``: production's runner, handler cancellation off),
    with vidproxy's configured head deadline and connection bound where the app
    is vidproxy's. ``handler_cancellation=True`` is for the tests of a handler
    being cancelled; ``access_log=True`` writes production's access lines
    (vidproxy's AccessLogger), for the tests that read them."""
    config = app.get(CONFIG)
    rules = None
    if config is not None:
        limit = config.server.max_connections or MAX_DESCRIPTORS
        rules = ConnectionRules(config.server.header_timeout, ConnectionSlots(limit))
    runner_kwargs: dict[str, Any] = {"access_log_class": AccessLogger} if access_log else {}
    return production_test_server(
        app, rules, handler_cancellation=handler_cancellation, **runner_kwargs
    )


def as_app(what: Config | web.Application) -> web.Application:
    return what if isinstance(what, web.Application) else create_app(what)


@contextlib.asynccontextmanager
async def serving(what: Config | web.Application, **options: bool) -> AsyncIterator[Client]:
    """vidproxy (``create_app(config)``, or an app built by the test) until the
    block ends, with RunAppServer's ``options``; yields a TestClient bound to it."""
    server = RunAppServer(as_app(what), **options)
    client: Client = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
