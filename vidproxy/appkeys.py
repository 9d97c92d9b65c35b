"""Typed keys for the long-lived resources hung on the application."""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .storage.base import Store

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
