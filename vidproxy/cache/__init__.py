"""The local disk cache in front of S3 downloads."""

from .store import CachingStore, open_caching_store

__all__ = ["CachingStore", "open_caching_store"]
