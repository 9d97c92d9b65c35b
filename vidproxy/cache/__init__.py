"""The local disk cache in front of S3 downloads."""

from .store import CacheFigures, CachingStore, open_caching_store

__all__ = ["CacheFigures", "CachingStore", "open_caching_store"]
