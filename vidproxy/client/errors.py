"""What can go wrong in the client, each with the exit code a script sees.

    ClientError            1  a local file could not be read or written, or a check failed
    ├── OutputClosed       0  whoever read the output stopped (``download -o - | head``)
    ├── UsageError         2  bad arguments
    ├── ServerError        1  vidproxy answered with an error (its JSON code and message)
    │   └── NotFoundError  3  ... and that error was 404
    └── ConnectionFailed   4  no answer: refused, unreachable, timed out, cut off

aiohttp's exceptions are turned into these in one place, ``api.Api.request``.
"""

from __future__ import annotations


class ClientError(Exception):
    exit_code = 1


class OutputClosed(ClientError):
    """The pipe on the output was closed by its reader: a downloader's job is
    done when nobody wants more bytes, as for ``cat`` and ``curl | head``."""

    exit_code = 0


class UsageError(ClientError):
    exit_code = 2


class ServerError(ClientError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


class NotFoundError(ServerError):
    exit_code = 3


class ConnectionFailed(ClientError):
    exit_code = 4
