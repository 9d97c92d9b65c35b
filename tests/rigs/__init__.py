"""The test rigs: one per kind of server the tests talk to (tests/README.md).

- ``polling``: bounded polls, sync and async; nothing sleeps in place of one.
- ``processes``: free ports, and a server process that is stopped (or killed)
  whatever happens, start-up failures included.
- ``moto``, ``rclone``, ``vidproxy``: those servers as processes.
- ``app``: vidproxy in the test's own event loop, run as production runs it.
- ``objects``: what a test asks of a running vidproxy about one key.
- ``tus``: tus requests as the tests send them, raw.
"""
