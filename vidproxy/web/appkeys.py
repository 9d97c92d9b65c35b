"""Typed keys for the long-lived resources hung on the application."""

from __future__ import annotations

from aiohttp import web

from ..auth import Authorizer
from ..config import Config
from ..storage.base import ResumableStore, Store
from ..uploads.locks import UploadLocks
from .limits import InFlight, UploadSlots
from .metrics import Metrics

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
AUTH = web.AppKey("auth", Authorizer)
UPLOADS = web.AppKey("uploads", UploadSlots)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
RESUMABLE = web.AppKey("resumable", ResumableStore)
TUS_LOCKS = web.AppKey("tus_locks", UploadLocks)
