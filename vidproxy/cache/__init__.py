"""The local disk cache in front of S3 downloads."""

from .clock import Clock, SystemClock
from .store import CacheFigures, CachingStore, open_caching_store

__all__ = ["CacheFigures", "CachingStore", "Clock", "SystemClock", "open_caching_store"]
