"""Debian's Chromium as the browser tests launch it (Playwright, no browser download)."""

CHROMIUM = "/usr/bin/chromium"
# As root on this kind of machine: no sandbox, no GPU, and no calls home (the
# network is closed, and Chromium would retry them all through the test).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
