"""Typed keys for the long-lived resources hung on the application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..auth import Authorizer
from ..config import Config
from ..storage.base import Store
from .limits import InFlight, UploadSlots

if TYPE_CHECKING:
    from .metrics import Metrics  # metrics reads the other keys: import only for typing

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
AUTH = web.AppKey("auth", Authorizer)
UPLOADS = web.AppKey("uploads", UploadSlots)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
