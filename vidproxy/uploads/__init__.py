"""Resumable uploads (tus 1.0.0), the framework-free core: header parsing and
validation (``headers``), the upload record and its JSON (``record``), the
resumable SHA-256 (``sha256state``) and the per-process upload locks (``locks``).
Storage backends keep records and bytes (``vidproxy.storage.*_resumable``); the
HTTP handler is ``vidproxy.web.handlers.uploads``."""
